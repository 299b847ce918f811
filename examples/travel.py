"""A travel saga: book the outbound flight, the hotel, the return; undo in reverse if one fails.

    python examples/travel.py [--dir DIR]

``TripBooking`` is a ``z8.Saga`` named ``trip-<id>``. Each booking is a ``reversible``
effect with its compensation (``cancel_flight``, ``cancel_hotel``), run by the runtime
against a supplier with the effect id as its idempotency key. On Singapore the return
flight has no seats: ``decide`` gives up with ``self.compensate(...)`` and the runtime
cancels the hotel, then the outbound flight, each cancellation handed the booking it
undoes. Lisbon books all three legs and ends ``completed``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

import z8
from z8.effects import EffectContext, EffectFailed, EffectStuck, EffectSucceeded, EffectUnknown

LEGS = ("outbound", "hotel", "return")


class BookTrip(msgspec.Struct, frozen=True):
    trip_id: str
    outbound: str
    hotel: str
    return_flight: str


class Reserve(msgspec.Struct, frozen=True):
    """A booking request: a flight number or a hotel's name."""

    item: str


class Booking(msgspec.Struct, frozen=True):
    """What the supplier returns, and what the compensation is handed to undo."""

    confirmation: str
    item: str
    key: str


class TripRequested(msgspec.Struct, frozen=True):
    trip: BookTrip


class LegBooked(msgspec.Struct, frozen=True):
    leg: str
    confirmation: str


class LegFailed(msgspec.Struct, frozen=True):
    leg: str
    error: str


# --- the supplier: in memory, because this is a demo -----------------------------------------


class NoSeats(Exception):
    """A plain exception: the runtime records it as a final failure and does not retry."""


class Supplier:
    """Airline and hotel in one; keeps every act so the demo (and its tests) can look."""

    def __init__(self, sold_out: set[str]) -> None:
        self.sold_out = sold_out
        self.booked: dict[str, Booking] = {}  # idempotency key -> booking
        self.acts: list[tuple[str, str, Any]] = []  # (booked | refused | cancelled, key, what)
        self.attempts: dict[str, int] = {}  # item -> bookings tried

    def _book(self, item: str, prefix: str, key: str) -> Booking:
        self.attempts[item] = self.attempts.get(item, 0) + 1
        if item in self.sold_out:
            self.acts.append(("refused", key, f"{item}: no seats"))
            raise NoSeats(f"no seats on {item}")
        if key not in self.booked:  # a retry with the same key books nothing twice
            self.booked[key] = Booking(f"{prefix}{len(self.booked) + 1}", item, key)
            self.acts.append(("booked", key, self.booked[key]))
        return self.booked[key]

    async def book_flight(self, request: Reserve, ctx: EffectContext) -> Booking:
        return self._book(request.item, "F", ctx.key)

    async def book_hotel(self, request: Reserve, ctx: EffectContext) -> Booking:
        return self._book(request.item, "H", ctx.key)

    async def cancel(self, booking: Booking, ctx: EffectContext) -> str:
        self.acts.append(("cancelled", ctx.key, booking))
        return booking.confirmation


def travel_effects(supplier: Supplier) -> list[z8.effects.Effect]:
    """The bookings, bound to ``supplier`` (the counterparty passed in, not patched)."""
    cancel_flight = z8.effect(supplier.cancel, name="cancel_flight", idempotent=True)
    cancel_hotel = z8.effect(supplier.cancel, name="cancel_hotel", idempotent=True)
    return [
        z8.effect(supplier.book_flight, kind="reversible", idempotent=True, compensate=cancel_flight),
        z8.effect(supplier.book_hotel, kind="reversible", idempotent=True, compensate=cancel_hotel),
    ]


# --- the saga --------------------------------------------------------------------------------


class TripState(msgspec.Struct, frozen=True):
    trip: BookTrip | None = None
    booked: int = 0
    """How many of LEGS are booked; the next one is LEGS[booked]."""


def _book(trip: BookTrip, leg: str) -> z8.Call:
    item = {"outbound": trip.outbound, "hotel": trip.hotel, "return": trip.return_flight}[leg]
    return z8.Call("book_hotel" if leg == "hotel" else "book_flight", Reserve(item))


class TripBooking(z8.Saga):
    """Books LEGS one after the other; the first leg that fails undoes the ones before it."""

    State = TripState

    def decide(self, state: TripState, message: object, ctx: z8.actors.CommandContext) -> Any:
        match message:
            case BookTrip() if state.trip is None:
                return z8.Decision([TripRequested(message)], reply="booking", effects=[_book(message, LEGS[0])])
            case BookTrip():
                return z8.reject("already_booked")
            case EffectSucceeded(result=booking) if state.trip is not None:
                booked = [LegBooked(LEGS[state.booked], booking.confirmation)]
                if state.booked + 1 == len(LEGS):
                    return self.complete(booked)
                return z8.Decision(booked, effects=[_book(state.trip, LEGS[state.booked + 1])])
            case EffectFailed(error=error, message=why):
                leg = LEGS[state.booked]
                return self.compensate(f"{leg}: {why}", [LegFailed(leg, f"{error}: {why}")])
            case EffectUnknown() | EffectStuck():
                return z8.Decision()  # being resolved, or a human settles it; decide hears the outcome
        return z8.reject("unknown_command")

    def evolve(self, state: TripState, event: object) -> TripState:
        match event:
            case TripRequested(trip=trip):
                return msgspec.structs.replace(state, trip=trip)
            case LegBooked():
                return msgspec.structs.replace(state, booked=state.booked + 1)
        return state


def travel_router() -> z8.Router:
    return z8.Router().identify(TripBooking, by="trip_id", prefix="trip-").dispatch(BookTrip, to=TripBooking)


# --- the demo --------------------------------------------------------------------------------

PATIENCE = 5.0  # seconds a trip may take to end: it takes milliseconds, this only bounds a broken run


async def _book_trip(app: z8.Application, supplier: Supplier, trip: BookTrip) -> dict[str, Any]:
    """Dispatch ``trip``, wait for its ``SagaEnded``, and print what the supplier and the journal saw."""
    stream = f"trip-{trip.trip_id}"
    try:
        async with asyncio.timeout(PATIENCE):
            async with app.journal.subscribe(types={"z8.SagaEnded"}, stream_prefix=stream) as ends:
                await app.dispatch(trip)
                status = app.journal.decode(await anext(aiter(ends))).status
    except TimeoutError:
        status = f"not ended after {PATIENCE} s"
    envelopes = app.journal.read_stream(stream)
    acts = [act for act in supplier.acts if act[1].startswith(stream + "/")]  # keys are effect ids
    result = {"status": status, "acts": acts, "types": [e.type for e in envelopes],
              "records": [app.journal.decode(e) for e in envelopes]}
    _print_trip(trip, result)
    return result


def _print_trip(trip: BookTrip, result: dict[str, Any]) -> None:
    print(f"\ntrip {trip.trip_id}: {trip.outbound} / {trip.hotel} / {trip.return_flight}")
    for act, key, what in result["acts"]:
        if act == "booked":
            print(f"  booked     {what.item:<12} {what.confirmation}  effect id = idempotency key {key}")
        elif act == "refused":
            print(f"  FAILED     {what}  (key {key}; a plain exception: final, not retried)")
        else:
            print(f"  cancelled  {what.item:<12} {what.confirmation}  undoing {what.key}  (key {key})")
    why = [r.reason for r in result["records"] if isinstance(r, z8.effects.SagaCompensating)]
    print(f"  saga {result['status']}" + (f" ({why[0]})" if why else ""))
    print("  journal:", ", ".join(result["types"]))


async def travel(directory: Path) -> dict[str, Any]:
    """Book a trip whose return flight is sold out, then one that goes through."""
    supplier = Supplier(sold_out={"SQ322"})
    journal = z8.open_journal(directory / "travel", types=z8.TypeRegistry([TripRequested, LegBooked, LegFailed]))
    async with z8.Application(travel_router(), journal, effects=travel_effects(supplier)) as app:
        failed = await _book_trip(app, supplier, BookTrip("singapore", "SQ321", "Raffles", "SQ322"))
        completed = await _book_trip(app, supplier, BookTrip("lisbon", "TP201", "Bairro Alto", "TP202"))
    report = journal.verify()
    journal.close()
    print(f"\njournal.verify(): {'ok' if report.ok else report}")
    return {"singapore": failed, "lisbon": completed, "supplier": supplier, "verify_ok": report.ok}


def main(path: Path | None = None) -> dict[str, Any]:
    """Run both trips on a journal under ``path`` (default: a temporary directory, removed after)."""
    directory = path or Path(tempfile.mkdtemp(prefix="z8-travel-"))
    try:
        return asyncio.run(travel(directory))
    finally:
        if path is None:
            shutil.rmtree(directory, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory)")
    result = main(parser.parse_args().dir)
    cancelled = [what.item for act, _, what in result["singapore"]["acts"] if act == "cancelled"]
    ok = (result["singapore"]["status"] == "compensated" and cancelled == ["Raffles", "SQ321"]
          and result["lisbon"]["status"] == "completed" and result["verify_ok"])
    print("travel demo " + ("passed" if ok else "FAILED"))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    cli()
