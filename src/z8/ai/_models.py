"""Model aliases and the model-call effect.

``Models`` maps aliases (``"fast"``, ``"deep"``) to ``"provider:model-id"`` targets with
optional default parameters, and owns the providers that serve them. Aliases come from
code, a TOML file and environment variables; later sources win (code < TOML < env), so
a deployment can point ``fast`` at a local server without touching code::

    models = z8.ai.Models({"fast": "openai:gpt-4o-mini"}, toml="models.toml", env=True)
    app = z8.Application(router, path, effects=[models.effect])

Environment (read when ``env=True``): ``Z8_MODEL_<ALIAS>="provider:model-id"`` (the alias
is the rest of the name, lower-cased: ``Z8_MODEL_FAST`` names ``fast``);
``Z8_MODELS_FILE`` a TOML file to load; ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` and
``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` configure the built-in providers.

TOML::

    [providers.local]            # any name; kind says which API it speaks
    kind = "openai"              # "openai" | "anthropic"
    base_url = "http://127.0.0.1:11434/v1"
    api_key_env = "LOCAL_KEY"    # the variable holding the key (keys stay out of files)
    timeout = 60
    max_retries = 3

    [models]
    fast = "local:llama3.2"
    deep = { target = "anthropic:claude-sonnet-4-5", params = { temperature = 0.2 } }

:attr:`Models.effect` is THE model call (effect ``"z8.model"``, capability ``"model.call"``,
kind ``read``, idempotent): its request is the ``ModelRequest`` (journaled as the intent),
its result the ``ModelResponse`` (journaled with the resolved model id, provider, usage,
latency and the provider's request id). The effect id is sent as the ``Idempotency-Key``.
A request naming a ``subject`` has its messages sealed in the journal under that subject's
key, and the response is sealed under it too; once the subject is erased, a call still
pending fails for good with ``SubjectErased`` (its messages are gone).
"""

from __future__ import annotations

import hashlib
import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec

from z8.effects import Effect, EffectContext, Retry
from z8.errors import InvalidArgument, OutcomeUnknown, Retryable, SubjectErased, UnknownModel
from z8.journal._personal import ERASED
from z8.supervision import Backoff

from ._messages import Message, ModelRequest, ModelResponse
from ._providers import AnthropicProvider, OpenAIProvider, Provider, ScriptedProvider

__all__ = ["Models", "ModelSpec", "MODEL_EFFECT", "MODEL_CAPABILITY", "digest_messages"]

MODEL_EFFECT = "z8.model"
"""The name of the model-call effect (``z8.Call("z8.model", request)`` works too)."""
MODEL_CAPABILITY = "model.call"
"""The capability policies grant to let an agent call models."""

_KINDS = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}
_DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
_ENV_ALIAS = "Z8_MODEL_"


class ModelSpec(msgspec.Struct, frozen=True):
    """What an alias resolves to: a provider name, its model id, default parameters
    (request fields and ``params`` given on the request win over these)."""

    provider: str
    model: str
    params: dict[str, Any] = {}

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"


def digest_messages(messages: Sequence[Message]) -> str:
    """The BLAKE2b digest of ``messages`` (what ``ModelRequest.messages_digest`` holds)."""
    encoded = msgspec.json.encode([msgspec.to_builtins(m) for m in messages])
    return "blake2b:" + hashlib.blake2b(encoded, digest_size=32).hexdigest()


def _key(alias: str) -> str:
    return alias.strip().lower().replace("-", "_")


def _spec(target: str | ModelSpec, where: str, params: Mapping[str, Any] | None = None) -> ModelSpec:
    if isinstance(target, ModelSpec):
        return target
    provider, sep, model = str(target).partition(":")
    if not sep or not provider or not model:
        raise InvalidArgument(f"{where}: a model target is 'provider:model-id', got {target!r}")
    return ModelSpec(provider, model, dict(params or {}))


class Models:
    """Model aliases, the providers serving them, and the model-call effect.

    ``aliases`` (from code) maps alias → ``"provider:model-id"`` or a :class:`ModelSpec`.
    ``providers`` names provider instances (``{"openai": OpenAIProvider(...)}``, or a
    :class:`ScriptedProvider` under any name); ``openai`` and ``anthropic`` are built on
    first use from the environment when not given. ``toml`` loads a file (or TOML text);
    ``env=True`` reads the variables listed in the module docs (``environ`` replaces
    ``os.environ``). A request's ``model`` is an alias or a direct ``"provider:model-id"``.

    ``retry`` and ``timeout`` are the model effect's contract (the providers retry 429/5xx
    themselves first; the effect retries a request that never left, and re-issues one
    whose answer was lost under the same key).
    """

    def __init__(
        self,
        aliases: Mapping[str, str | ModelSpec] | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        toml: str | os.PathLike[str] | None = None,
        env: bool = False,
        environ: Mapping[str, str] | None = None,
        retry: Retry = Retry(attempts=3, backoff=Backoff(min=0.2, max=5.0, jitter=0.2)),
        timeout: float | None = 300.0,
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._aliases: dict[str, ModelSpec] = {}
        self._providers: dict[str, Provider] = dict(providers or {})
        self._provider_config: dict[str, dict[str, Any]] = {}
        self._owned: list[Provider] = []
        for alias, target in (aliases or {}).items():
            self.alias(alias, target)
        if env and self._environ.get("Z8_MODELS_FILE"):
            self.load_toml(self._environ["Z8_MODELS_FILE"])
        if toml is not None:
            self.load_toml(toml)
        if env:
            self.load_env()
        self.retry = retry
        self.timeout = timeout
        self.effect: Effect = self._build_effect()
        """The model-call effect: register it with ``Application(effects=[models.effect])``."""

    def __repr__(self) -> str:
        return f"<Models {', '.join(f'{a}={s.target}' for a, s in self._aliases.items())}>"

    # --- configuration ---------------------------------------------------------------------

    def alias(self, name: str, target: str | ModelSpec, **params: Any) -> Models:
        """Name ``target`` (``"provider:model-id"``) ``name``, with default ``params``; returns self."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"a model alias is a non-empty str, got {name!r}")
        spec = _spec(target, f"model alias {name!r}", params)
        if params and isinstance(target, ModelSpec):
            spec = msgspec.structs.replace(spec, params={**spec.params, **params})
        self._aliases[_key(name)] = spec
        return self

    def provider(self, name: str, provider: Provider) -> Models:
        """Serve ``"name:…"`` targets with ``provider``; returns self."""
        self._providers[name] = provider
        return self

    @property
    def aliases(self) -> dict[str, ModelSpec]:
        """The aliases in force (normalised names: lower case, ``-`` as ``_``)."""
        return dict(self._aliases)

    def load_env(self, environ: Mapping[str, str] | None = None) -> Models:
        """Read ``Z8_MODEL_<ALIAS>`` variables (and the providers' URLs and keys later, on use)."""
        source = self._environ if environ is None else environ
        for variable, value in source.items():
            if variable.startswith(_ENV_ALIAS) and len(variable) > len(_ENV_ALIAS) and value.strip():
                self._aliases[_key(variable[len(_ENV_ALIAS):])] = _spec(value.strip(), f"${variable}")
        return self

    def load_toml(self, source: str | os.PathLike[str]) -> Models:
        """Load ``[providers.*]`` and ``[models]`` from a TOML file (or TOML text)."""
        where, data = _read_toml(source)
        providers = data.get("providers", {})
        models = data.get("models", {})
        if not isinstance(providers, dict) or not isinstance(models, dict):
            raise InvalidArgument(f"{where}: [providers] and [models] are tables")
        unknown = set(data) - {"providers", "models"}
        if unknown:
            raise InvalidArgument(f"{where}: unknown section(s) {sorted(unknown)}; expected [providers], [models]")
        for name, config in providers.items():
            self._provider_config[name] = _provider_entry(where, name, config)
        for alias, entry in models.items():
            self._aliases[_key(alias)] = _model_entry(where, alias, entry)
        return self

    # --- resolving -------------------------------------------------------------------------

    def resolve(self, model: str) -> tuple[Provider, ModelSpec]:
        """The provider and spec for an alias or a ``"provider:model-id"``; UnknownModel otherwise."""
        spec = self._aliases.get(_key(model))
        if spec is None:
            provider, sep, model_id = model.partition(":")
            if sep and model_id and (provider in self._providers or provider in self._provider_config
                                     or provider in _KINDS):
                spec = ModelSpec(provider, model_id)
        if spec is None:
            known = ", ".join(sorted(self._aliases)) or "none"
            raise UnknownModel(f"no model is configured for {model!r} (aliases: {known}); name it in code "
                               f"(Models({{{model!r}: 'openai:<model-id>'}})), with ${_ENV_ALIAS}{_key(model).upper()}"
                               " or in a TOML [models] table")
        return self._provider_for(spec), spec

    def _provider_for(self, spec: ModelSpec) -> Provider:
        provider = self._providers.get(spec.provider)
        if provider is None:
            provider = self._build_provider(spec.provider)
            self._providers[spec.provider] = provider
            self._owned.append(provider)
        return provider

    def _build_provider(self, name: str) -> Provider:
        config = dict(self._provider_config.get(name, {}))
        kind = config.pop("kind", name)
        if kind not in _KINDS:
            raise UnknownModel(f"no provider is configured for {name!r}: pass providers={{{name!r}: ...}} or "
                               f"declare [providers.{name}] with kind = 'openai' | 'anthropic'")
        prefix = kind.upper()
        base_url = config.pop("base_url", None) or self._environ.get(f"{prefix}_BASE_URL") or _DEFAULT_URLS[kind]
        key_env = config.pop("api_key_env", f"{prefix}_API_KEY")
        api_key = config.pop("api_key", None) or self._environ.get(key_env)
        return _KINDS[kind](base_url, api_key, **config)

    async def aclose(self) -> None:
        """Close the providers this object built (providers passed in are the caller's)."""
        owned, self._owned = self._owned, []
        for provider in owned:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        self._providers = {n: p for n, p in self._providers.items() if all(p is not o for o in owned)}

    # --- calling ---------------------------------------------------------------------------

    async def complete(self, request: ModelRequest, *, key: str = "") -> ModelResponse:
        """One model call, resolved and measured: what the model effect runs. Called
        directly it is not journaled (use ``z8.Call(models.effect, request)`` in a decision).
        ``SubjectErased`` when the request's messages were erased (its subject's personal
        data was erased while the call was pending): it cannot be sent, now or later."""
        if request.messages is ERASED:
            raise SubjectErased(f"model call ({request.purpose}) for subject {request.subject!r}: its messages "
                                "were erased with the subject's personal data, so it cannot be sent; it fails "
                                "for good")
        provider, spec = self.resolve(request.model)
        if spec.params:
            request = _with_defaults(request, spec.params)
        started = time.perf_counter()
        try:
            response = await provider.complete(request, model_id=spec.model, key=key)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise Retryable(f"model {request.model!r}: the request did not reach {spec.provider} "
                            f"({type(error).__name__}: {error})") from error
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise OutcomeUnknown(f"model {request.model!r}: no answer from {spec.provider} "
                                 f"({type(error).__name__}: {error})") from error
        measured = round((time.perf_counter() - started) * 1000, 3)
        return msgspec.structs.replace(response, model=response.model or spec.model,
                                       provider=response.provider or spec.provider,
                                       latency_ms=response.latency_ms or measured, subject=request.subject)

    def _build_effect(self) -> Effect:
        models = self

        async def model_call(request: ModelRequest, ctx: EffectContext) -> ModelResponse:
            """Call the model ``request.model`` names, with the effect id as idempotency key;
            the response carries the request's subject, so it is sealed like the request."""
            return await models.complete(request, key=ctx.key)

        return Effect(model_call, name=MODEL_EFFECT, kind="read", idempotent=True, capability=MODEL_CAPABILITY,
                      retry=self.retry, timeout=self.timeout)

    @classmethod
    def scripted(cls, script: Any, *, aliases: Sequence[str] = ("fast", "deep"), model: str = "scripted-model",
                 **options: Any) -> Models:
        """Models served by one :class:`ScriptedProvider` (a test and demo double) under
        ``aliases``; the provider is ``models.resolve(alias)[0]``."""
        return cls({alias: f"scripted:{model}" for alias in aliases},
                   providers={"scripted": ScriptedProvider(script)}, **options)


def _with_defaults(request: ModelRequest, params: Mapping[str, Any]) -> ModelRequest:
    """Alias parameters under the request's own (its explicit fields and params win)."""
    extra = dict(params)
    temperature = extra.pop("temperature", None)
    max_tokens = extra.pop("max_tokens", None)
    return msgspec.structs.replace(
        request, params={**extra, **request.params},
        temperature=request.temperature if request.temperature is not None else temperature,
        max_tokens=request.max_tokens if request.max_tokens is not None else max_tokens)


def _read_toml(source: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    text, where = None, "model configuration"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and "=" not in source):
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise InvalidArgument(f"cannot read the model configuration {path}: {error}") from None
    else:
        text = str(source)
    try:
        return where, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidArgument(f"{where}: {error}") from None


_PROVIDER_KEYS = {"kind", "base_url", "api_key_env", "api_key", "timeout", "max_retries", "max_wait", "backoff",
                  "max_connections", "headers"}


def _provider_entry(where: str, name: str, config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InvalidArgument(f"{where}: [providers.{name}] is a table")
    unknown = set(config) - _PROVIDER_KEYS
    if unknown:
        raise InvalidArgument(f"{where}: [providers.{name}] has unknown key(s) {sorted(unknown)}")
    kind = config.get("kind", name)
    if kind not in _KINDS:
        raise InvalidArgument(f"{where}: [providers.{name}] kind must be 'openai' or 'anthropic', got {kind!r}")
    return dict(config)


def _model_entry(where: str, alias: str, entry: Any) -> ModelSpec:
    if isinstance(entry, str):
        return _spec(entry, f"{where}: models.{alias}")
    if isinstance(entry, dict) and set(entry) <= {"target", "params"} and "target" in entry:
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise InvalidArgument(f"{where}: models.{alias}.params is a table")
        return _spec(entry["target"], f"{where}: models.{alias}", params)
    raise InvalidArgument(f"{where}: models.{alias} is 'provider:model-id' or {{ target = ..., params = {{...}} }}")
