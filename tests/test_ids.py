"""UUIDv7 ids: RFC 9562 layout, time-ordered, monotonic within a millisecond and across threads."""

import threading
import time
import uuid

from z8.ids import UuidV7, uuid7, uuid7_time_ms


def test_layout_and_time() -> None:
    value = uuid.UUID(uuid7())
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert abs(uuid7_time_ms(str(value)) - time.time() * 1000) < 5_000


def test_monotonic_even_past_4096_ids_in_one_millisecond() -> None:
    generator = UuidV7()
    ids = generator.many(20_000) + generator.many(3) + [generator() for _ in range(2_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[::997])


def test_monotonic_if_the_clock_steps_back(monkeypatch) -> None:
    generator = UuidV7()
    first = generator()
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)  # 1970: far in the past
    assert generator() > first and generator.many(5)[0] > first


def test_unique_and_ordered_per_thread_under_contention() -> None:
    generator = UuidV7()
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        for _ in range(500):
            out.extend(generator.many(4))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in results for i in out]
    assert len(set(every)) == len(every) == 8_000
    assert all(out == sorted(out) for out in results)
