"""examples/travel.py: a saga books outbound, hotel and return; the return fails; it undoes the rest, LIFO."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from z8.effects import EffectFailed, EffectIntended, EffectRetrying, EffectSucceeded, SagaCompensating, SagaEnded

spec = importlib.util.spec_from_file_location("travel", Path(__file__).parents[1] / "examples" / "travel.py")
travel = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["travel"] = travel
spec.loader.exec_module(travel)  # type: ignore[union-attr]



@pytest.fixture(scope="module")
def trips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return travel.main(tmp_path_factory.mktemp("travel"))


def records(trip: dict[str, Any], kind: type) -> list[Any]:
    return [record for record in trip["records"] if type(record) is kind]


def acts(trip: dict[str, Any], which: str) -> list[tuple[str, Any]]:
    """(idempotency key, what) of the supplier's acts of one kind, in order."""
    return [(key, what) for act, key, what in trip["acts"] if act == which]


def test_each_booking_is_keyed_by_its_effect_id(trips: dict[str, Any]) -> None:
    trip = trips["singapore"]
    booked = {booking.item: key for key, booking in acts(trip, "booked")}
    intended = {r.request["item"]: r.effect_id for r in records(trip, EffectIntended) if r.compensates is None}
    assert booked == {"SQ321": intended["SQ321"], "Raffles": intended["Raffles"]}
    assert [key for key, _ in acts(trip, "refused")] == [intended["SQ322"]]


def test_the_failed_return_flight_is_attempted_once(trips: dict[str, Any]) -> None:
    trip = trips["singapore"]
    assert trips["supplier"].attempts["SQ322"] == 1
    [failed] = records(trip, EffectFailed)
    assert (failed.effect, failed.error, failed.message) == ("book_flight", "NoSeats", "no seats on SQ322")
    assert (failed.attempts, failed.exhausted) == (1, False)  # final on the first try: not dead-lettered
    assert records(trip, EffectRetrying) == []


def test_the_compensation_plan_is_most_recent_first(trips: dict[str, Any]) -> None:
    trip = trips["singapore"]
    outbound, hotel = (key for key, _ in acts(trip, "booked"))
    [plan] = records(trip, SagaCompensating)
    assert plan == SagaCompensating("return: no seats on SQ322", [hotel, outbound])


def test_each_compensation_gets_the_booking_it_undoes(trips: dict[str, Any]) -> None:
    trip = trips["singapore"]
    results = {r.effect_id: r.result for r in records(trip, EffectSucceeded)}
    undoing = {r.effect_id: r for r in records(trip, EffectIntended) if r.compensates is not None}
    assert undoing
    for intent in undoing.values():  # journaled: the compensation's request is the booking's result
        assert intent.request == results[intent.compensates]
    for key, booking in acts(trip, "cancelled"):  # and that is what the supplier was handed
        assert booking == trips["supplier"].booked[booking.key]
        assert undoing[key].compensates == booking.key


def test_a_cancelled_booking_is_not_cancelled_again(trips: dict[str, Any]) -> None:
    assert len(acts(trips["singapore"], "cancelled")) == 2


def test_the_hotel_is_cancelled_before_the_outbound_flight(trips: dict[str, Any]) -> None:
    trip = trips["singapore"]
    outbound, hotel = (booking for _, booking in acts(trip, "booked"))
    assert [booking for _, booking in acts(trip, "cancelled")] == [hotel, outbound]
    assert [booking.item for booking in (hotel, outbound)] == ["Raffles", "SQ321"]


def test_the_failed_trip_ends_compensated(trips: dict[str, Any]) -> None:
    trip = trips["singapore"]
    assert trip["status"] == "compensated"
    assert records(trip, SagaEnded) == [SagaEnded("compensated")]
    assert trip["types"][-1] == "z8.SagaEnded"


def test_the_good_trip_ends_completed(trips: dict[str, Any]) -> None:
    trip = trips["lisbon"]
    assert trip["status"] == "completed"
    assert [booking.item for _, booking in acts(trip, "booked")] == ["TP201", "Bairro Alto", "TP202"]
    assert acts(trip, "cancelled") == [] and records(trip, SagaCompensating) == []
    assert records(trip, SagaEnded) == [SagaEnded("completed")]
    assert trip["types"][-1] == "z8.SagaEnded"


def test_the_journal_verifies(trips: dict[str, Any]) -> None:
    assert trips["verify_ok"]
