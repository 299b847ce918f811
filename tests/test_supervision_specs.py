"""Supervision as data: specs are validated when built, with messages naming the problem.

Bad specs are refused by ``child()``, ``supervisor()``, ``Backoff`` and ``Runtime(...)``
before anything runs; names are checked again when a child is started at run time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import z8
from z8.errors import DuplicateName, InvalidSpec
from z8.supervision import Backoff, ChildSpec, Runtime, SupervisorSpec, child, supervisor


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Worker(z8.Actor):
    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        return message


class OtherWorker(z8.Actor):
    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        return message


# --- child specs ------------------------------------------------------------------------


def test_child_ids_default_to_the_class_name_in_kebab_case() -> None:
    assert child(OtherWorker).id == "other-worker"
    assert child(supervisor(child(Worker)), id="pool").id == "pool"
    spec = child(Worker, 1, 2, id="w", restart="transient", shutdown=0.5, mailbox_size=8, key="v")
    assert (spec.args, spec.kwargs) == ((1, 2), {"key": "v"})
    assert (spec.restart, spec.shutdown, spec.mailbox_size) == ("transient", 0.5, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"restart": "sometimes"}, r"restart must be one of .*'sometimes'"),
        ({"restart": None}, r"restart must be one of"),
        ({"shutdown": -1}, r"shutdown must be a number >= 0.*-1"),
        ({"shutdown": "5"}, r"shutdown must be a number"),
        ({"shutdown": True}, r"shutdown must be a number"),
        ({"mailbox_size": 0}, r"mailbox_size must be an int >= 1.*0"),
        ({"mailbox_size": 2.5}, r"mailbox_size must be an int"),
        ({"mailbox_size": True}, r"mailbox_size must be an int"),
        ({"id": ""}, r"ChildSpec.id must be a non-empty str"),
        ({"id": "a/b"}, r"without '/'.*'a/b'"),
        ({"id": "x" * 201}, r"at most 200 chars"),
        ({"id": 7}, r"ChildSpec.id must be a non-empty str"),
    ],
)
def test_a_bad_child_spec_is_refused_naming_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidSpec, match=match):
        child(Worker, **kwargs)


def test_a_child_must_start_something_runnable() -> None:
    with pytest.raises(InvalidSpec, match=r"child 'x': start must be an Actor class, a factory or a SupervisorSpec"):
        child(42, id="x")
    with pytest.raises(InvalidSpec, match="start must be"):
        ChildSpec("x", "Worker")


def test_invalid_spec_is_a_value_error_and_a_z8_error() -> None:
    with pytest.raises(ValueError):
        child(Worker, restart="never")
    assert issubclass(InvalidSpec, z8.Z8Error)


# --- supervisor specs -------------------------------------------------------------------


def test_duplicate_ids_among_siblings_are_refused_naming_the_id() -> None:
    with pytest.raises(InvalidSpec, match=r"two children share the id 'worker'"):
        supervisor(child(Worker), child(Worker))
    with pytest.raises(InvalidSpec, match=r"share the id 'w'"):
        supervisor(child(Worker, id="w"), child(OtherWorker, id="w"))
    # the same id at different levels of the tree is fine
    supervisor(child(Worker, id="w"), child(supervisor(child(Worker, id="w")), id="sub"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "one_for_some"}, r"strategy must be one of .*'one_for_some'"),
        ({"strategy": "ONE_FOR_ONE"}, r"strategy must be one of"),
        ({"max_restarts": -1}, r"max_restarts must be an int >= 0.*-1"),
        ({"max_restarts": 1.5}, r"max_restarts must be an int"),
        ({"max_restarts": True}, r"max_restarts must be an int"),
        ({"max_restarts": "3"}, r"max_restarts must be an int"),
        ({"within": 0}, r"within must be > 0"),
        ({"within": -2.0}, r"within must be a number >= 0"),
        ({"within": "5s"}, r"within must be a number"),
    ],
)
def test_bad_supervisor_flags_are_refused_naming_the_flag(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidSpec, match=match):
        supervisor(child(Worker), **kwargs)


def test_zero_restarts_is_a_valid_intensity() -> None:
    assert supervisor(child(Worker), max_restarts=0, within=0.001).max_restarts == 0


@pytest.mark.parametrize("count", [0, 2])
def test_simple_one_for_one_takes_exactly_one_template(count: int) -> None:
    children = [child(Worker, id=f"w{i}") for i in range(count)]
    with pytest.raises(InvalidSpec, match="simple_one_for_one takes exactly one child spec"):
        supervisor(*children, strategy="simple_one_for_one")
    assert supervisor(child(Worker), strategy="simple_one_for_one").strategy == "simple_one_for_one"


def test_children_must_be_child_specs() -> None:
    with pytest.raises(InvalidSpec, match=r"supervisor children must be ChildSpec \(use child"):
        supervisor(child(Worker), Worker)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match="must be ChildSpec"):
        SupervisorSpec(("worker",))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min": -0.1}, r"Backoff: min must be a number >= 0"),
        ({"max": -1}, r"Backoff: max must be a number >= 0"),
        ({"min": 2.0, "max": 1.0}, r"max \(1.0\) is below min \(2.0\)"),
        ({"jitter": 1.5}, r"jitter is a fraction between 0 and 1, got 1.5"),
        ({"jitter": -0.1}, r"jitter must be a number >= 0"),
        ({"reset_after": -1}, r"reset_after must be a number >= 0"),
        ({"min": "1"}, r"min must be a number"),
    ],
)
def test_bad_backoff_is_refused_naming_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidSpec, match=match):
        Backoff(**kwargs)


def test_backoff_delays_double_up_to_max_without_jitter() -> None:
    import random

    backoff = Backoff(min=0.5, max=3.0, jitter=0)
    assert [backoff.delay(k, random.Random(1)) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert Backoff().delay(7, random.Random(1)) == 0.0  # min=0: restart at once, every time
    jittered = [Backoff(min=1.0, max=1.0, jitter=0.5).delay(1, random.Random(seed)) for seed in range(50)]
    assert all(0.5 <= d <= 1.5 for d in jittered) and len(set(jittered)) > 1


# Regression: _spec._number lets NaN through (NaN < minimum is False).
@pytest.mark.parametrize(
    "build",
    [
        lambda: child(Worker, shutdown=math.nan),
        lambda: supervisor(child(Worker), within=math.nan),
        lambda: Backoff(min=math.nan),
        lambda: Backoff(max=math.nan),
        lambda: Backoff(jitter=math.nan),
    ],
    ids=["shutdown", "within", "backoff-min", "backoff-max", "backoff-jitter"],
)
def test_nan_is_refused_like_any_other_bad_number(build: Any) -> None:
    with pytest.raises(InvalidSpec, match="nan"):
        build()


# Regression: SupervisorSpec.__post_init__ never checks that backoff is a Backoff.
@pytest.mark.parametrize("backoff", [0.5, {"min": 1}, "exponential"])
def test_a_backoff_that_is_not_a_backoff_is_refused(backoff: Any) -> None:
    with pytest.raises(InvalidSpec, match="backoff"):
        supervisor(child(Worker), backoff=backoff)


# --- specs through the Runtime ------------------------------------------------------------


def test_the_runtime_validates_its_root_spec_when_built(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    with pytest.raises(InvalidSpec, match="two children share the id 'worker'"):
        Runtime(journal, durability="fast", children=[child(Worker), child(Worker)])
    with pytest.raises(InvalidSpec, match="strategy must be one of"):
        Runtime(journal, durability="fast", strategy="all_for_one")  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match="simple_one_for_one takes exactly one child spec"):
        Runtime(journal, durability="fast", strategy="simple_one_for_one")
    with pytest.raises(InvalidSpec, match="max_restarts must be an int"):
        Runtime(journal, durability="fast", max_restarts=-1)
    with pytest.raises(InvalidSpec, match="runtime name must be a non-empty str without '/'"):
        Runtime(journal, durability="fast", name="a/b")
    assert not journal.exists(), "nothing is opened for a runtime whose spec is refused"


@pytest.mark.anyio
async def test_names_given_at_run_time_are_checked_too(tmp_path: Path) -> None:
    async with Runtime(tmp_path / "j", durability="fast") as rt:
        with pytest.raises(InvalidSpec, match="without '/'"):
            rt.spawn(Worker, name="a/b")
        with pytest.raises(InvalidSpec, match="restart must be one of"):
            rt.spawn(Worker, name="w", restart="forever")  # type: ignore[arg-type]
        rt.spawn(Worker, name="w")
        with pytest.raises(DuplicateName, match="already has a child named 'w'"):
            rt.spawn(OtherWorker, name="w")
        assert await rt.lookup("/app/w").ask("still the first") == "still the first"


@pytest.mark.anyio
async def test_a_simple_one_for_one_template_fills_in_each_dynamic_child(tmp_path: Path) -> None:
    class Tagged(z8.Actor):
        def __init__(self, tag: str, *, suffix: str = "") -> None:
            self.tag = tag + suffix

        async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
            return self.tag

    pool = supervisor(child(Tagged, "base", suffix="!"), strategy="simple_one_for_one")
    async with Runtime(tmp_path / "j", durability="fast", children=[child(pool, id="pool")]) as rt:
        plain = rt.spawn(Tagged, name="plain", under="/app/pool")
        custom = rt.spawn(Tagged, "own", name="custom", under="/app/pool", suffix="?")
        assert await plain.ask(None) == "base!" and await custom.ask(None) == "own?"
        with pytest.raises(InvalidSpec, match="without '/'"):
            rt.spawn(Tagged, name="x/y", under="/app/pool")
