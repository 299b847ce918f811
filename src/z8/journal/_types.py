"""Event types: msgspec Structs registered by name, with upcasters per (type, schema)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import msgspec

from z8.errors import (
    InvalidEvent,
    TypeRegistrationError,
    UnknownEventType,
    UnregisteredEvent,
    UpcastError,
    VaultError,
)

from ._personal import PersonalCodec, check_type

__all__ = ["TypeRegistry", "RawEvent", "Event", "Upcaster"]

S = TypeVar("S", bound=type[msgspec.Struct])
Upcaster = Callable[[Any], Any]
"""Turns a payload of schema N (plain msgpack data: dicts, lists, str…) into schema N+1."""

_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE_ANY = msgspec.msgpack.Decoder().decode


class RawEvent(msgspec.Struct, frozen=True):
    """An event given as its type name and already-encoded msgpack payload.

    For tools that copy or re-emit events; the journal does not check ``type`` against
    the registry when appending raw events.
    """

    type: str
    data: bytes
    schema: int = 1


class Event(msgspec.Struct, frozen=True):
    """An event with metadata of its own, for appends that need it.

    ``event_id``: an id chosen by the caller (unique; ``z8.uuid7()`` is a good choice).
    Appending an id the journal already holds raises ``DuplicateEvent`` and writes
    nothing, so an append retried with the same ids is idempotent. ``causation_id``
    overrides the append's causation for this event alone.
    """

    payload: Any
    event_id: str | None = None
    causation_id: str | None = None


class _Entry(msgspec.Struct, frozen=True):
    name: str
    cls: type
    schema: int
    decode: Callable[[bytes], Any]
    personal: bool = False
    """Whether the class holds ``z8.Personal`` fields (encoded through a journal's codec)."""


class TypeRegistry:
    """The event classes a journal can write and read, by name and schema.

    Registration is explicit (no import-time globals): build one registry for an
    application and hand it to ``open_journal(types=...)``.
    """

    def __init__(self, types: Iterable[type[msgspec.Struct]] = ()) -> None:
        self._by_name: dict[str, _Entry] = {}
        self._by_class: dict[type, _Entry] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        for cls in types:
            self.register(cls)

    @overload
    def register(self, cls: S, *, name: str | None = None, schema: int = 1) -> S: ...
    @overload
    def register(self, cls: None = None, *, name: str | None = None, schema: int = 1) -> Callable[[S], S]: ...

    def register(self, cls=None, *, name=None, schema=1):  # type: ignore[no-untyped-def]
        """Register a Struct class as an event type; usable as a decorator.

        ``name`` defaults to the class name and is what the journal stores, so keep it
        stable across refactors. ``schema`` is the payload's current schema number;
        raise it (and add an upcaster) whenever old payloads no longer decode.
        A class with ``z8.Personal`` fields must name its subject (``z8.Subject``):
        ``VaultError`` otherwise.
        """
        if cls is None:
            return lambda c: self.register(c, name=name, schema=schema)
        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise TypeRegistrationError(f"{cls!r} is not a msgspec.Struct subclass; events must be Structs")
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise TypeRegistrationError(f"schema for {cls.__name__} must be an int >= 1, got {schema!r}")
        type_name = cls.__name__ if name is None else name
        if not isinstance(type_name, str) or not type_name:
            raise TypeRegistrationError(f"type name for {cls.__name__} must be a non-empty str")
        taken = self._by_name.get(type_name)
        if taken is not None and taken.cls is not cls:
            raise TypeRegistrationError(
                f"type name {type_name!r} is already registered to {taken.cls.__qualname__}; "
                "pass name= to register under another name"
            )
        personal = check_type(cls)
        entry = _Entry(type_name, cls, schema, msgspec.msgpack.Decoder(cls).decode, personal)
        self._by_name[type_name] = entry
        self._by_class[cls] = entry
        return cls

    def upcaster(self, type_name: str, from_schema: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate a function that lifts ``type_name`` payloads from ``from_schema`` to the next.

        The function receives plain msgpack data (dicts, lists, str, int…) and returns
        the payload as the next schema would encode it. Chains run one step at a time.
        """
        if isinstance(from_schema, bool) or not isinstance(from_schema, int) or from_schema < 1:
            raise TypeRegistrationError(f"from_schema must be an int >= 1, got {from_schema!r}")

        def decorator(fn: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_schema)] = fn
            return fn

        return decorator

    def name_of(self, cls: type) -> str:
        """The name ``cls`` is registered under (raises ``UnregisteredEvent``)."""
        entry = self._by_class.get(cls)
        if entry is None:
            raise UnregisteredEvent(f"{getattr(cls, '__qualname__', cls)} is not a registered event type")
        return entry.name

    def names(self) -> list[str]:
        """The registered type names."""
        return sorted(self._by_name)

    def __contains__(self, item: object) -> bool:
        return item in self._by_name or item in self._by_class

    def encode(self, event: object, personal: PersonalCodec | None = None) -> tuple[str, int, bytes]:
        """Return (type name, schema, msgpack bytes) for an event about to be appended.

        ``personal`` (a journal's ``journal.personal``) seals ``z8.Personal`` fields; a
        type with such fields raises ``VaultError`` without it.
        """
        entry = self._by_class.get(type(event))
        if entry is not None:
            if entry.personal:
                return entry.name, entry.schema, _personal(entry, personal).dumps(event)
            return entry.name, entry.schema, _ENCODE(event)
        if isinstance(event, RawEvent):
            if not isinstance(event.type, str) or not event.type or not isinstance(event.data, bytes):
                raise InvalidEvent(f"RawEvent needs a non-empty str type and bytes data, got {event!r}")
            return event.type, event.schema, event.data
        if isinstance(event, msgspec.Struct):
            raise UnregisteredEvent(
                f"{type(event).__qualname__} is not a registered event type; "
                f"register it with types.register({type(event).__name__})"
            )
        raise InvalidEvent(
            f"events must be registered msgspec Structs (or RawEvent), got {type(event).__name__}: {event!r:.80}"
        )

    def decode(self, type_name: str, schema: int, data: bytes, personal: PersonalCodec | None = None) -> Any:
        """Decode a stored payload into its registered class, upcasting old schemas.

        ``personal`` (a journal's ``journal.personal``) opens ``z8.Personal`` fields
        (``z8.ERASED`` once their subject is erased). Upcasters of such a type receive
        those fields sealed (msgpack extension values): pass them on unchanged.
        """
        entry = self._by_name.get(type_name)
        if entry is None:
            raise UnknownEventType(
                f"event type {type_name!r} is not registered; register its class "
                "(with the name it was written under) or read the envelope raw"
            )
        if schema == entry.schema:
            if entry.personal:
                return _personal(entry, personal).loads(data, entry.cls)
            return entry.decode(data)
        if schema > entry.schema:
            raise UpcastError(
                f"{type_name} payload has schema {schema} but this code knows up to "
                f"{entry.schema}: it was written by newer code; deploy that code to read it"
            )
        payload = _DECODE_ANY(data)
        for step in range(schema, entry.schema):
            upcast = self._upcasters.get((type_name, step))
            if upcast is None:
                raise UpcastError(
                    f"no upcaster for {type_name} from schema {step} to {step + 1}; "
                    f"register one with types.upcaster({type_name!r}, from_schema={step})"
                )
            payload = upcast(payload)
        try:
            if entry.personal:
                return _personal(entry, personal).convert(payload, entry.cls)
            return msgspec.convert(payload, entry.cls)
        except msgspec.ValidationError as exc:
            raise UpcastError(
                f"{type_name} upcast from schema {schema} to {entry.schema} does not fit "
                f"{entry.cls.__qualname__}: {exc}"
            ) from exc


def _personal(entry: _Entry, personal: PersonalCodec | None) -> PersonalCodec:
    if personal is None:
        raise VaultError(
            f"{entry.name} has z8.Personal fields: encode and decode it through a journal "
            "(journal.append / journal.decode, or types.encode(event, personal=journal.personal))"
        )
    return personal
