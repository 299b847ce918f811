"""Personal data off the record: ``z8.Personal`` fields, sealed under their subject's key.

A field typed ``z8.Personal[T]`` holds personal data about the subject named by its
struct's ``z8.Subject`` field (a nested struct without one belongs to its enclosing
struct's subject). A subject field typed ``z8.Subject | None`` that holds ``None`` says the
struct holds no one's personal data: its personal fields, and those of nested structs
without a subject of their own, are stored as they are (a nested struct that names its
own subject is still sealed under it). An empty subject in a field typed plain
``z8.Subject`` is an error. Wherever the runtime stores such a struct — event payloads, agent
snapshots, effect requests and results, timer messages — the field is stored as an
AES-256-GCM ciphertext under a key of that subject's, held in the vault (``_vault``); the
hash chain covers the ciphertext. ``journal.erase(subject)`` destroys the subject's keys:
from then on the field reads as :data:`ERASED`, and ``verify()`` still passes because no
stored byte changed.

Stored form of a personal field: a msgpack extension value of type 90 holding
``key id (4 bytes) ‖ nonce (12) ‖ ciphertext ‖ GCM tag (16)``; the plaintext is the
msgpack of the value; the associated data binds it to the subject and the field's stored
name, so a ciphertext copied into another subject's record does not open (it reads as an
error, :class:`~z8.errors.VaultError`; or as ERASED when that subject is erased). An
``ERASED`` value is stored as extension type 91, empty: it needs no key. The other fields
are stored as they would be without ``Personal``; the subject itself is not encrypted
(it is how the key is found): use a pseudonymous id, not a name or an e-mail address.

Decoding builds the struct with its constructor (``__post_init__`` runs; msgspec does not
type-check constructor arguments), so an erased field simply holds ``ERASED``. Code that
folds such structs (an agent's ``evolve``) must tolerate ``ERASED`` in personal fields.

What is not covered: personal structs reached only through a field typed ``Any``/``object``
(the declared types are what is analysed), values written before a field became
``Personal`` (they stay plaintext in the journal, and still decode), and the memory of a
running process. The ciphertext's length reveals the plaintext's length.
"""

from __future__ import annotations

import collections.abc
import os
import threading
import types as _pytypes
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar, Union

import msgspec
from cryptography.exceptions import InvalidTag

from z8.errors import SubjectErased as SubjectErasedError
from z8.errors import VaultError

if TYPE_CHECKING:
    from ._vault import Vault

__all__ = [
    "Personal", "Subject", "ERASED", "PersonalCodec", "SEALED_EXT", "ERASED_EXT", "check_type", "has_personal", "subject_of",
    "subject_field",
]

SEALED_EXT: Final = 90
"""msgpack extension type of a sealed personal value."""
ERASED_EXT: Final = 91
"""msgpack extension type of an ``ERASED`` value written back (empty payload)."""

_KID = 4
_NONCE = 12
_AAD_PREFIX = b"z8.personal.v1\x00"


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_PERSONAL = _Marker("z8.Personal")
_SUBJECT = _Marker("z8.Subject")

T = TypeVar("T")

Personal = Annotated[T, _PERSONAL]
"""``name: z8.Personal[str]``: the field is personal data of the struct's subject.

Stored encrypted under the subject's key; reads as :data:`ERASED` once the subject is
erased. Annotate the whole field (``Personal[list[str]]``, ``Personal[str] | None``), not
a part of its type."""

Subject = Annotated[str, _SUBJECT]
"""``applicant: z8.Subject``: the str naming whose personal data the struct holds.

One per struct; a nested struct without one belongs to its enclosing struct's subject.
Typed ``z8.Subject | None``, ``None`` means the struct holds no one's personal data: its
``Personal`` fields (and those of nested structs without a subject of their own) are
stored in clear. A plain ``z8.Subject`` must name someone."""


class _Erased:
    """The value of a personal field whose subject was erased (a singleton, falsy)."""

    __slots__ = ()
    _instance: _Erased | None = None

    def __new__(cls) -> _Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "z8.ERASED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ERASED"

    def __copy__(self) -> _Erased:
        return self

    def __deepcopy__(self, memo: object) -> _Erased:
        return self


ERASED: Final[Any] = _Erased()
"""What a personal field reads as after its subject was erased (``repr``: ``z8.ERASED``)."""

_ERASED_VALUE = msgspec.msgpack.Ext(ERASED_EXT, b"")
_NO_ONE: Any = _Marker("no one")
"""The subject passed down while sealing a struct whose optional subject is None: its
personal fields (and its nested structs' without a subject of their own) stay as they are."""
_Ext = msgspec.msgpack.Ext
_ENCODE = msgspec.msgpack.Encoder().encode
_NODEFAULT: Any = msgspec.NODEFAULT
_MISSING: Any = object()

# --- analysis: which fields of a type are personal, and its stored ("shadow") form ------

_PERSONAL_FIELD, _NESTED_FIELD, _PLAIN_FIELD = 0, 1, 2
_STRUCT = "struct"  # shape: a struct value (or a union of structs), dispatched on its runtime type


class _Seq:
    __slots__ = ("item", "ctor")

    def __init__(self, item: Any, ctor: Callable[[Any], Any]) -> None:
        self.item, self.ctor = item, ctor


class _Fixed:
    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class _Map:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Field:
    __slots__ = ("attr", "kind", "shape", "decode", "plain", "empty", "aad", "label")

    def __init__(self, attr: str, kind: int, *, shape: Any = None, decode: Any = None, plain: Any = None,
                 empty: Any = _NODEFAULT, stored_name: str = "", label: str = "") -> None:
        self.attr, self.kind, self.shape, self.decode, self.plain = attr, kind, shape, decode, plain
        self.empty = empty
        self.aad = b"\x00" + stored_name.encode()
        self.label = label


class _Plan:
    """How to seal and open one Struct class that holds personal data. ``optional``: its
    subject field is typed ``z8.Subject | None`` (None there: no one's data)."""

    __slots__ = ("cls", "subject", "fields", "shadow", "orphan", "optional")

    def __init__(self, cls: type, subject: str | None, fields: list[_Field], shadow: type, orphan: bool,
                 optional: bool = False) -> None:
        self.cls, self.subject, self.fields, self.shadow, self.orphan = cls, subject, fields, shadow, orphan
        self.optional = optional


class _Unresolved(VaultError):
    """A type whose annotations do not resolve (yet): not analysed, not cached."""


_plans: dict[type, _Plan | None] = {}
_by_shadow: dict[type, _Plan] = {}
_analysis = threading.RLock()
_in_progress: set[type] = set()
_recursed: set[type] = set()

_SEQUENCES: dict[Any, Callable[[Any], Any]] = {
    list: list, tuple: tuple, collections.abc.Sequence: list, collections.abc.MutableSequence: list,
}
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SETS = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)


def plan_of(cls: type) -> _Plan | None:
    """The plan of a Struct class (None: it holds no personal data). VaultError for a bad
    declaration (two subject fields, ``Personal`` inside a type, recursion with personal data)."""
    try:
        return _plans[cls]
    except KeyError:
        pass
    with _analysis:
        if cls in _plans:
            return _plans[cls]
        if cls in _in_progress:  # a recursive type: assume no personal data, check at the root
            _recursed.add(cls)
            return None
        root = not _in_progress
        before = set(_plans)
        _in_progress.add(cls)
        try:
            plan = _build_plan(cls)
            if plan is not None and cls in _recursed:
                raise VaultError(f"{cls.__qualname__} is recursive and holds personal data; z8.Personal "
                                 "is not supported in recursive types")
        except BaseException:
            for added in set(_plans) - before:  # analysed under a wrong assumption: forget them
                _plans.pop(added, None)
            raise
        finally:
            _in_progress.discard(cls)
            if root:
                _recursed.clear()
        _plans[cls] = plan
        if plan is not None:
            _by_shadow[plan.shadow] = plan
        return plan


def _field_marker(tp: Any) -> tuple[_Marker | None, Any]:
    """(marker, the type without it) for a field annotated Personal/Subject (maybe | None)."""
    if typing.get_origin(tp) is Annotated:
        inner, *meta = typing.get_args(tp)
        for marker in (_PERSONAL, _SUBJECT):
            if any(m is marker for m in meta):
                rest = [m for m in meta if m is not _PERSONAL and m is not _SUBJECT]
                return marker, (Annotated[(inner, *rest)] if rest else inner)  # type: ignore[misc]
        return None, tp
    if typing.get_origin(tp) in (Union, _pytypes.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            others = [a for a in args if a is not type(None)]
            if len(others) == 1:
                marker, inner = _field_marker(others[0])
                if marker is not None:
                    return marker, Union[inner, None]  # noqa: UP007
    return None, tp


def _build_plan(cls: type) -> _Plan | None:
    name = cls.__qualname__
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve annotations
        raise _Unresolved(f"cannot read the field types of {name}: {exc!r}") from exc
    if getattr(cls, "__parameters__", ()):  # a generic Struct: its fields' types are not known here
        if any(_mentions_marker(hints.get(f.name)) for f in msgspec.structs.fields(cls)):
            raise VaultError(f"{name} is a generic Struct with z8.Personal fields; that is not supported")
        return None
    subject: str | None = None
    optional = False
    fields: list[_Field] = []
    shadow_fields: list[tuple[str, Any, Any]] = []
    personal = orphan_inside = False
    for info in msgspec.structs.fields(cls):
        tp = hints.get(info.name, info.type)
        where = f"{name}.{info.name}"
        marker, inner = _field_marker(tp)
        shadow_tp = tp
        if marker is _SUBJECT:
            if subject is not None:
                raise VaultError(f"{name} has two z8.Subject fields ({subject}, {info.name}); a struct names one subject")
            if inner is not str and inner != Union[str, None]:  # noqa: UP007
                raise VaultError(f"{where}: a z8.Subject field is a str (or str | None), not {inner!r}")
            subject = info.name
            optional = inner is not str
            fields.append(_Field(info.name, _PLAIN_FIELD))
        elif marker is _PERSONAL:
            if _mentions_marker(inner):
                raise VaultError(f"{where}: z8.Personal or z8.Subject inside z8.Personal[...]")
            try:
                decode = msgspec.msgpack.Decoder(inner).decode
            except TypeError as exc:
                raise VaultError(f"{where}: z8.Personal[{inner!r}] is not a type msgspec can encode: {exc}") from exc
            empty = info.default
            if empty is _NODEFAULT and info.default_factory is not _NODEFAULT:
                empty = info.default_factory()
            fields.append(_Field(info.name, _PERSONAL_FIELD, decode=decode, plain=inner, empty=empty,
                                 stored_name=info.encode_name, label=where))
            shadow_tp = Any
            personal = True
        else:
            shadow_tp, shape, orphan = _analyze(tp, where)
            if shape is None:
                fields.append(_Field(info.name, _PLAIN_FIELD))
            else:
                fields.append(_Field(info.name, _NESTED_FIELD, shape=shape))
                personal = True
                orphan_inside = orphan_inside or orphan
        shadow_fields.append((info.name, shadow_tp, info))
    if not personal:
        return None
    orphan = subject is None and (orphan_inside or any(f.kind == _PERSONAL_FIELD for f in fields))
    return _Plan(cls, subject, fields, _make_shadow(cls, shadow_fields), orphan, optional)


def _mentions_marker(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        _, *meta = typing.get_args(tp)
        if any(m is _PERSONAL or m is _SUBJECT for m in meta):
            return True
    return any(_mentions_marker(arg) for arg in typing.get_args(tp) if arg is not Ellipsis)


def _analyze(tp: Any, where: str) -> tuple[Any, Any, bool]:
    """(stored type, shape, orphan) of a field's type; shape None: no personal data in it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        inner, *meta = args
        if any(m is _PERSONAL or m is _SUBJECT for m in meta):
            raise VaultError(f"{where}: z8.Personal and z8.Subject annotate a whole field, not a part of its "
                             "type (write Personal[list[str]], not list[Personal[str]])")
        shadow, shape, orphan = _analyze(inner, where)
        return (tp, None, False) if shape is None else (Annotated[(shadow, *meta)], shape, orphan)  # type: ignore[misc]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        plan = plan_of(tp)
        return (tp, None, False) if plan is None else (plan.shadow, _STRUCT, plan.orphan)
    if origin in (Union, _pytypes.UnionType):
        results = [_analyze(arg, where) for arg in args]
        if all(shape is None for _, shape, _ in results):
            return tp, None, False
        if any(shape is not None and shape is not _STRUCT for _, shape, _ in results):
            raise VaultError(f"{where}: a union may hold personal data only in its Struct members")
        return Union[tuple(r[0] for r in results)], _STRUCT, any(r[2] for r in results)  # noqa: UP007
    if origin in _SEQUENCES:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            results = [_analyze(arg, where) for arg in args]
            if all(shape is None for _, shape, _ in results):
                return tp, None, False
            return tuple[tuple(r[0] for r in results)], _Fixed([r[1] for r in results]), any(r[2] for r in results)
        shadow, shape, orphan = _analyze(args[0], where) if args else (Any, None, False)
        if shape is None:
            return tp, None, False
        stored = tuple[shadow, ...] if origin is tuple else origin[shadow]
        return stored, _Seq(shape, _SEQUENCES[origin]), orphan
    if origin in _MAPPINGS and len(args) == 2:
        if _analyze(args[0], where)[1] is not None:
            raise VaultError(f"{where}: personal data in a mapping's keys is not supported")
        shadow, shape, orphan = _analyze(args[1], where)
        if shape is None:
            return tp, None, False
        return origin[args[0], shadow], _Map(shape), orphan
    if origin in _SETS or origin is not None:
        if any(_analyze(arg, where)[1] is not None for arg in args if arg is not Ellipsis):
            raise VaultError(f"{where}: personal data inside {origin!r} is not supported (use a list or tuple)")
    return tp, None, False


def _make_shadow(cls: type, specs: list[tuple[str, Any, Any]]) -> type:
    """A Struct with ``cls``'s stored form (names, order, tag, options) whose personal
    fields accept any value: what is actually written, ciphertext included."""
    config = cls.__struct_config__  # type: ignore[attr-defined]
    fields = []
    for name, tp, info in specs:
        if info.default is not _NODEFAULT:
            spec = msgspec.field(default=info.default, name=info.encode_name)
        elif info.default_factory is not _NODEFAULT:
            spec = msgspec.field(default_factory=info.default_factory, name=info.encode_name)
        else:
            spec = msgspec.field(name=info.encode_name)
        fields.append((name, tp, spec))
    shadow = msgspec.defstruct(
        f"{cls.__name__}Stored", fields, kw_only=True, module=__name__, tag=config.tag, tag_field=config.tag_field,
        omit_defaults=config.omit_defaults, forbid_unknown_fields=config.forbid_unknown_fields,
        array_like=config.array_like,
    )
    if shadow.__struct_encode_fields__ != cls.__struct_encode_fields__:  # type: ignore[attr-defined]
        raise VaultError(f"cannot mirror the stored form of {cls.__qualname__} (its fields are in an unusual order)")
    return shadow


class _TypeInfo:
    """A type expression's personal shape, and (made on first use) its decoders.

    ``clear``: for a Struct whose subject is optional (``z8.Subject | None``) and that has
    no nested personal structs, the subject field's name. Such a record is usually no
    one's (an AI run without a subject): it is decoded as the type itself first, and
    kept when its subject reads None (then every field was stored as it is); otherwise
    it goes through the stored form."""

    __slots__ = ("tp", "shape", "orphan", "stored", "label", "clear", "_decode", "_decode_clear")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.label = getattr(tp, "__qualname__", repr(tp))
        self.stored, self.shape, self.orphan = _analyze(tp, self.label)
        plan = _plans.get(tp) if self.shape is _STRUCT else None
        self.clear = plan.subject if plan is not None and plan.optional and \
            all(f.kind != _NESTED_FIELD for f in plan.fields) else None
        self._decode: Callable[[bytes], Any] | None = None
        self._decode_clear: Callable[[bytes], Any] | None = None

    def decode_clear(self, data: bytes) -> Any:
        """The record decoded as ``tp`` when it is no one's (see ``clear``), else None."""
        if self._decode_clear is None:
            self._decode_clear = msgspec.msgpack.Decoder(self.tp).decode
        try:
            value = self._decode_clear(data)
        except msgspec.ValidationError:  # a sealed field where the type wants a str, a list…
            return None
        return value if getattr(value, self.clear) is None else None  # type: ignore[arg-type]

    def convert_clear(self, raw: Any) -> Any:
        """The builtins converted to ``tp`` when they are no one's (see ``clear``), else None."""
        try:
            value = msgspec.convert(raw, self.tp)
        except msgspec.ValidationError:
            return None
        return value if getattr(value, self.clear) is None else None  # type: ignore[arg-type]

    @property
    def decode(self) -> Callable[[bytes], Any]:
        """Decodes ``tp`` (no personal data) or its stored form."""
        if self._decode is None:
            self._decode = msgspec.msgpack.Decoder(self.tp if self.shape is None else self.stored).decode
        return self._decode


_infos: dict[Any, _TypeInfo] = {}


def _info(tp: Any) -> _TypeInfo:
    try:
        return _infos[tp]
    except KeyError:
        info = _infos[tp] = _TypeInfo(tp)
        return info
    except TypeError:  # an unhashable type expression
        return _TypeInfo(tp)


def check_type(tp: Any, what: str | None = None) -> bool:
    """Whether ``tp`` holds personal data; VaultError (naming the type) when it cannot be
    stored: a bad declaration, or personal fields with no ``z8.Subject`` field to name
    whose they are."""
    if tp is Any or tp is None:
        return False
    try:
        info = _info(tp)
    except _Unresolved:  # msgspec will say what is wrong when the type is used; sealing rechecks then
        return False
    if info.orphan:
        raise VaultError(
            f"{what or info.label} has z8.Personal fields but no z8.Subject field naming whose data they are; "
            "add one (e.g. `applicant: z8.Subject`) to it or to the struct that encloses it"
        )
    return info.shape is not None


def has_personal(value: Any) -> bool:
    """Whether ``value`` is a Struct whose type holds personal data."""
    return isinstance(value, msgspec.Struct) and plan_of(type(value)) is not None


def subject_of(value: Any) -> Any:
    """The subject a Struct with personal data names in its own ``z8.Subject`` field (None
    for anything else)."""
    if not isinstance(value, msgspec.Struct):
        return None
    plan = plan_of(type(value))
    return None if plan is None or plan.subject is None else getattr(value, plan.subject)


def subject_field(cls: type) -> msgspec.structs.FieldInfo | None:
    """The ``z8.Subject`` field of Struct class ``cls`` (None: it has none)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for info in msgspec.structs.fields(cls):
        if _field_marker(hints.get(info.name, info.type))[0] is _SUBJECT:
            return info
    return None


# --- the codec --------------------------------------------------------------------------


class PersonalCodec:
    """Encodes and decodes values with their personal fields sealed, under one vault.

    Every method is the plain msgspec operation when the type holds no personal data
    (same bytes, same builtins), so it is safe to route everything through it.
    """

    __slots__ = ("_vault",)

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    @property
    def vault(self) -> Vault:
        return self._vault

    @staticmethod
    def check(tp: Any, what: str | None = None) -> bool:
        """Whether ``tp`` holds personal data; VaultError when it cannot be stored (see
        :func:`check_type`)."""
        return check_type(tp, what)

    def dumps(self, value: Any) -> bytes:
        """msgpack bytes of ``value`` (a Struct), its personal fields sealed."""
        cls = type(value)
        plan = _plans.get(cls, _MISSING)
        if plan is _MISSING:
            plan = plan_of(cls) if isinstance(value, msgspec.Struct) else None
        if plan is None:
            return _ENCODE(value)
        return _ENCODE(self._seal_top(plan, value))

    def loads(self, data: bytes, tp: Any) -> Any:
        """Decode what :meth:`dumps` wrote into ``tp``; erased fields read as ERASED."""
        info = _info(tp)
        if info.shape is None:
            return info.decode(data)
        if info.clear is not None:
            value = info.decode_clear(data)
            if value is not None:
                return value
        return self._open_shape(info.shape, info.decode(data), None)

    def to_builtins(self, value: Any) -> Any:
        """``msgspec.to_builtins(value)`` with personal fields sealed (left as msgpack
        extension values, which the journal's msgpack stores as they are)."""
        return msgspec.to_builtins(self._seal_any(value), builtin_types=(_Ext,))

    def convert(self, raw: Any, tp: Any) -> Any:
        """``msgspec.convert(raw, tp)`` for what :meth:`to_builtins` produced."""
        if tp is Any:
            return raw
        info = _info(tp)
        if info.shape is None:
            return msgspec.convert(raw, tp)
        if info.clear is not None:
            value = info.convert_clear(raw)
            if value is not None:
                return value
        return self._open_shape(info.shape, msgspec.convert(raw, info.stored), None)

    # --- sealing ----------------------------------------------------------------------

    def _seal_top(self, plan: _Plan, value: Any) -> Any:
        if plan.orphan:
            check_type(plan.cls)  # raises, naming the type
        return self._seal(plan, value, None)

    def _seal_any(self, value: Any) -> Any:
        if isinstance(value, msgspec.Struct):
            plan = plan_of(type(value))
            return value if plan is None else self._seal_top(plan, value)
        if isinstance(value, (list, tuple)):
            return [self._seal_any(item) for item in value]
        if isinstance(value, dict):
            return {key: self._seal_any(item) for key, item in value.items()}
        return value

    def _seal(self, plan: _Plan, value: Any, subject: Any) -> Any:
        if plan.subject is not None:
            subject = getattr(value, plan.subject)
            if subject is None and plan.optional:
                subject = _NO_ONE
        stored = {}
        for field in plan.fields:
            item = getattr(value, field.attr)
            if field.kind == _PERSONAL_FIELD:
                item = self._seal_value(field, item, subject)
            elif field.kind == _NESTED_FIELD:
                item = self._seal_shape(field.shape, item, subject)
            stored[field.attr] = item
        return plan.shadow(**stored)

    def _seal_shape(self, shape: Any, value: Any, subject: Any) -> Any:
        if value is None:
            return None
        if shape is _STRUCT:
            if not isinstance(value, msgspec.Struct):
                return value
            plan = plan_of(type(value))
            return value if plan is None else self._seal(plan, value, subject)
        if type(shape) is _Seq:
            return [self._seal_shape(shape.item, item, subject) for item in value]
        if type(shape) is _Fixed:
            return tuple(self._seal_shape(s, item, subject) for s, item in zip(shape.items, value))
        return {key: self._seal_shape(shape.value, item, subject) for key, item in value.items()}

    def _seal_value(self, field: _Field, value: Any, subject: Any) -> Any:
        if value is ERASED:
            return _ERASED_VALUE
        if subject is _NO_ONE:
            return value
        if not subject:
            if value is None or (field.empty is not _NODEFAULT and value == field.empty):
                return value  # a default is in the code, not personal data
            raise VaultError(f"{field.label} holds personal data but no subject names whose it is "
                             "(its z8.Subject field is empty)")
        if type(subject) is not str:
            raise VaultError(f"{field.label}: the subject must be a str, got {type(subject).__name__}")
        try:
            kid, aead = self._vault.encryptor(subject)
        except SubjectErasedError:
            if value is None or (field.empty is not _NODEFAULT and value == field.empty):
                return value  # an erased subject's record may still carry defaults
            raise
        nonce = os.urandom(_NONCE)
        sealed = aead.encrypt(nonce, _ENCODE(value), _AAD_PREFIX + subject.encode() + field.aad)
        return _Ext(SEALED_EXT, kid + nonce + sealed)

    # --- opening ----------------------------------------------------------------------

    def _open(self, plan: _Plan, stored: Any, subject: Any) -> Any:
        if plan.subject is not None:
            subject = getattr(stored, plan.subject)
        values = {}
        for field in plan.fields:
            item = getattr(stored, field.attr)
            if field.kind == _PERSONAL_FIELD:
                item = self._open_value(field, item, subject)
            elif field.kind == _NESTED_FIELD:
                item = self._open_shape(field.shape, item, subject)
            values[field.attr] = item
        return plan.cls(**values)

    def _open_shape(self, shape: Any, value: Any, subject: Any) -> Any:
        if value is None:
            return None
        if shape is _STRUCT:
            plan = _by_shadow.get(type(value))
            return value if plan is None else self._open(plan, value, subject)
        if type(shape) is _Seq:
            return shape.ctor(self._open_shape(shape.item, item, subject) for item in value)
        if type(shape) is _Fixed:
            return tuple(self._open_shape(s, item, subject) for s, item in zip(shape.items, value))
        return {key: self._open_shape(shape.value, item, subject) for key, item in value.items()}

    def _open_value(self, field: _Field, value: Any, subject: Any) -> Any:
        if type(value) is not _Ext:
            if value is field.empty or value is None:
                return value
            return msgspec.convert(value, field.plain)  # written before the field was personal
        if value.code == ERASED_EXT:
            return ERASED
        data = value.data
        if value.code != SEALED_EXT or len(data) < _KID + _NONCE + 16:
            raise VaultError(f"{field.label}: the stored value is not a z8 personal ciphertext")
        if not subject or type(subject) is not str:
            raise VaultError(f"{field.label}: a ciphertext in a record that names no subject")
        aead = self._vault.decryptor(subject, bytes(data[:_KID]))
        if aead is None:
            return ERASED
        try:
            plain = aead.decrypt(data[_KID:_KID + _NONCE], data[_KID + _NONCE:],
                                 _AAD_PREFIX + subject.encode() + field.aad)
        except InvalidTag:
            raise VaultError(
                f"{field.label}: the ciphertext does not open under subject {subject!r}'s key: it was altered, "
                "or moved from another subject's record or field"
            ) from None
        return field.decode(plain)
