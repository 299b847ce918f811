"""Tools: Python functions a model may call, each an effect with a JSON schema.

Two ways to declare one::

    class Lookup(msgspec.Struct):
        email: str

    @z8.ai.tool(capability="crm.read", kind="read")
    async def lookup_customer(args: Lookup, ctx: z8.effects.EffectContext) -> Customer: ...

    @z8.ai.tool(kind="read")
    def search_orders(email: str, limit: int = 5) -> list[Order]: ...   # a Struct is derived

A tool is an effect (``tool.effect``): the policy gates it by its capability, the outbox
runs it under its contract (kind, retry, timeout, idempotency) and journals it. The model
sees ``tool.spec`` (name, description, JSON schema from the type hints, via msgspec);
the arguments it produces are checked by ``tool.parse`` before any call, and invalid ones
come back as error text for the model, never as a crash.

Personal data: an arguments Struct may hold ``z8.Personal`` fields and a ``z8.Subject``
field. The model never sees the subject field (it is not in the schema) and cannot set
it: the run fills it with its own subject, so the arguments are sealed under that subject
in the journal and erased with it. A tool's result is sealed when its type declares
personal fields with a subject (the tool copies ``args``' subject into it).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from z8.effects import Effect, EffectContext, Kind, Retry
from z8.errors import InvalidEffect, InvalidTool, PolicyDenied
from z8.journal._personal import subject_field

from ._messages import ToolSpec

__all__ = ["Tool", "tool"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool:
    """A declared tool: ``spec`` for the model, ``parse`` for its arguments, ``effect`` to run it.

    ``args_type`` is the msgspec Struct of the arguments (the effect's request type);
    ``result_type`` the declared return type (``Any`` when not annotated).
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                 capability: str | None = None, kind: Kind = "irreversible", retry: Retry = Retry(),
                 timeout: float | None = 30.0, idempotent: bool = False, compensate: Any = None,
                 resolve: Any = None) -> None:
        if not callable(fn):
            raise InvalidTool(f"a tool wraps a function, got {type(fn).__name__}")
        self.name = name or fn.__name__
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidTool(f"tool name {self.name!r}: 1-64 letters, digits, '_' or '-' (what model APIs accept)")
        self.description = description if description is not None else _summary(fn)
        self.fn = fn
        hints = _hints(fn, self.name)
        self.result_type: Any = hints.get("return", Any)
        self.args_type, runner = _args_and_runner(fn, self.name, hints)
        try:
            self.effect = Effect(runner, name=self.name, kind=kind, capability=capability, retry=retry,
                                 timeout=timeout, idempotent=idempotent, compensate=compensate, resolve=resolve)
        except InvalidEffect as bad:
            raise InvalidTool(f"tool {self.name!r}: {bad}") from None
        subject = subject_field(self.args_type)
        self.subject_field: str | None = subject.name if subject is not None else None
        """The arguments' ``z8.Subject`` field, which the run fills in (None: none)."""
        self._subject_key = subject.encode_name if subject is not None else ""
        self._subject_required = subject is not None and subject.required
        self.spec = ToolSpec(self.name, self.description, _schema(self.args_type, self._subject_key))
        self._decoder = msgspec.json.Decoder(self.args_type)

    def __repr__(self) -> str:
        return f"<Tool {self.name} {self.effect.kind} capability={self.capability}>"

    @property
    def capability(self) -> str:
        """The name policies grant (default: the tool's name)."""
        return self.effect.capability

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: a tool runs only as an effect, where the policy judges it and the journal records it."""
        raise PolicyDenied(f"tool {self.name!r} was called directly; an agent calls it as "
                           f"z8.Call({self.name}.effect, args) so the policy gates it and the journal records it")

    def parse(self, arguments: str, *, subject: str | None = None) -> tuple[Any, str | None]:
        """The model's JSON ``arguments`` as ``(args, None)``, or ``(None, error)`` with the
        reason in words for the model (not JSON, wrong types, missing or unknown fields).
        When the arguments have a ``z8.Subject`` field it is set to ``subject`` (the run's),
        whatever the model sent."""
        text = arguments if isinstance(arguments, str) else ""
        if not text.strip():
            text = "{}"
        try:
            if self._subject_key:
                if subject is None and self._subject_required:
                    return None, (f"tool {self.name!r} handles a person's data and this run names no subject "
                                  "(start the run with StartRun(subject=...) to use it)")
                return self._with_subject(text, subject), None
            return self._decoder.decode(text), None
        except msgspec.ValidationError as error:
            return None, f"invalid arguments for tool {self.name!r}: {error}"
        except msgspec.DecodeError as error:
            return None, f"the arguments for tool {self.name!r} are not valid JSON: {error}"

    def _with_subject(self, text: str, subject: str | None) -> Any:
        fields = msgspec.json.decode(text)
        if not isinstance(fields, dict):
            return self._decoder.decode(text)  # not an object: the decoder says so in its words
        fields.pop(self._subject_key, None)
        if subject is not None:
            fields[self._subject_key] = subject
        return msgspec.json.decode(msgspec.json.encode(fields), type=self.args_type)

    def result_text(self, result: Any) -> str:
        """A tool result as the text of the tool message sent back to the model (a str as is,
        anything else as JSON)."""
        if isinstance(result, str):
            return result
        return msgspec.json.encode(msgspec.to_builtins(result)).decode()


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         capability: str | None = None, kind: Kind = "irreversible", retry: Retry = Retry(),
         timeout: float | None = 30.0, idempotent: bool = False, compensate: Any = None,
         resolve: Any = None) -> Any:
    """Declare a tool: ``@tool(capability="crm.read", kind="read")`` on ``async def f(args:
    SomeStruct, ctx) -> R`` or on a plain signature ``def f(email: str, limit: int = 5) -> R``
    (an arguments Struct is derived; a parameter annotated ``EffectContext`` receives the
    context). Blocking functions run in a worker thread. The description defaults to the
    docstring's first paragraph; the capability to the tool's name; the kind, like every
    effect's, to ``irreversible`` (declare ``read`` for lookups). Returns a :class:`Tool`.
    """
    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, capability=capability, kind=kind, retry=retry,
                    timeout=timeout, idempotent=idempotent, compensate=compensate, resolve=resolve)

    return wrap(fn) if fn is not None else wrap


def _summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _hints(fn: Callable[..., Any], name: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as error:
        raise InvalidTool(f"tool {name!r}: its type hints cannot be resolved ({error})") from None


def _is_struct(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, msgspec.Struct)


def _args_and_runner(fn: Callable[..., Any], name: str, hints: dict[str, Any]) -> tuple[type, Callable[..., Any]]:
    """The arguments Struct and the ``(args, ctx)`` function the effect runs."""
    params = list(inspect.signature(fn).parameters.values())
    first = hints.get(params[0].name) if params else None
    if _is_struct(first) and all(hints.get(p.name) in (None, EffectContext) for p in params[1:2]) \
            and len(params) <= 2:
        return first, fn if len(params) == 2 else _without_context(fn, first, hints.get("return", Any))
    fields: list[tuple[Any, ...]] = []
    context: str | None = None
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise InvalidTool(f"tool {name!r}: parameter {p.name!r} must be a plain or keyword parameter")
        hint = hints.get(p.name)
        if hint is EffectContext:
            context = p.name
            continue
        if hint is None:
            raise InvalidTool(f"tool {name!r}: parameter {p.name!r} has no type hint (the JSON schema comes "
                              "from the hints)")
        fields.append((p.name, hint) if p.default is p.empty else (p.name, hint, p.default))
    try:
        args_type = msgspec.defstruct(_camel(name) + "Args", fields, kw_only=True, frozen=True,
                                      forbid_unknown_fields=True, module=getattr(fn, "__module__", None))
    except (TypeError, ValueError) as error:
        raise InvalidTool(f"tool {name!r}: cannot derive its arguments ({error})") from None
    return args_type, _runner(fn, args_type, context, hints.get("return", Any))


def _runner(fn: Callable[..., Any], args_type: type, context: str | None, result: Any) -> Callable[..., Any]:
    """An ``(args, ctx)`` function calling ``fn`` with the fields as keyword arguments,
    async when ``fn`` is (a blocking one stays blocking: the outbox runs it in a thread)."""
    names = tuple(f for f in args_type.__struct_fields__)

    def kwargs(args: Any, ctx: EffectContext) -> dict[str, Any]:
        out = {n: getattr(args, n) for n in names}
        if context is not None:
            out[context] = ctx
        return out

    if inspect.iscoroutinefunction(fn):
        async def run(args: Any, ctx: EffectContext) -> Any:
            return await fn(**kwargs(args, ctx))
    else:
        def run(args: Any, ctx: EffectContext) -> Any:
            return fn(**kwargs(args, ctx))
    run.__name__ = getattr(fn, "__name__", "tool")
    run.__annotations__ = {"args": args_type, "ctx": EffectContext, "return": result}
    return run


def _without_context(fn: Callable[..., Any], args_type: type, result: Any) -> Callable[..., Any]:
    """``fn(args)`` as the ``(args, ctx)`` function an effect runs."""
    if inspect.iscoroutinefunction(fn):
        async def run(args: Any, ctx: EffectContext) -> Any:
            return await fn(args)
    else:
        def run(args: Any, ctx: EffectContext) -> Any:
            return fn(args)
    run.__name__ = getattr(fn, "__name__", "tool")
    run.__annotations__ = {"args": args_type, "ctx": EffectContext, "return": result}
    return run


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_-]+", name) if part) or "Tool"


def _schema(args_type: type, hidden: str = "") -> dict[str, Any]:
    """The JSON schema of the arguments, the object itself at the top (model APIs want
    ``{"type": "object", ...}``, not a ``$ref``); nested Structs stay in ``$defs``.
    ``hidden`` (the subject field, which the run fills in) is left out."""
    try:
        schema = msgspec.json.schema(args_type)
    except (TypeError, ValueError) as error:
        raise InvalidTool(f"arguments {args_type.__name__}: no JSON schema ({error})") from None
    ref = schema.get("$ref")
    if not ref:
        return schema
    defs = dict(schema.get("$defs", {}))
    top = dict(defs[ref.rsplit("/", 1)[-1]])
    top.pop("title", None)
    if hidden:
        top["properties"] = {k: v for k, v in top.get("properties", {}).items() if k != hidden}
        required = [k for k in top.get("required", []) if k != hidden]
        if required:
            top["required"] = required
        else:
            top.pop("required", None)
    if len(defs) > 1:
        top["$defs"] = {**defs, ref.rsplit("/", 1)[-1]: {k: v for k, v in top.items() if k != "$defs"}}
    return top
