"""A small bank on 127.0.0.1 for examples/treasury.py and its tests: real HTTP, honest books.

    GET  /balances?day=D   the day's closing balances (404 for a day it has no books for)
    POST /wires            a wire, applied once per ``Idempotency-Key``: the same key again
                           gets the same wire back (200, not 201) and moves nothing; the same
                           key with a different order is refused (422)
    GET  /wires/{key}      the wire instructed under that key, or 404: the status query
    POST /ledger           a general-ledger entry, once per ``Idempotency-Key`` (the firm's
    GET  /ledger/{key}     GL, served here too so that the example needs one server)

It keeps every request it saw (``requests``). It can delay its answers to orders and
balance reads (``reply_delay``), so that a crash lands between the bank applying an order
and the caller hearing of it, and lose answers on purpose (``lose_acks``, ``lose_share``):
the order is applied, then the connection is closed with no reply, and the caller cannot
know whether money moved.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Bank", "Seen"]

Books = Callable[[str], "list[dict[str, Any]] | None"]
"""day -> [{"account", "currency", "balance_minor"}, ...], or None when the bank has no books."""


@dataclasses.dataclass
class Seen:
    """One request, as the bank saw it."""

    seq: int
    method: str
    path: str
    key: str
    """The idempotency key: the header on a POST, the path's last part on a status query."""
    caller: str
    """The ``X-Caller`` header (the crash test names each worker run)."""
    outcome: str = ""
    """applied, replayed, refused, found, absent, read, unknown-day, cut short."""
    lost: bool = False
    """The reply was dropped on purpose."""
    replied: bool = False
    """The reply was written to the socket."""
    done: float = 0.0
    """When the bank was done with it (``time.monotonic()``)."""


class Bank:
    """The bank and its HTTP server. ``with Bank(books) as bank: ... bank.url``."""

    def __init__(self, books: Books, *, reply_delay: tuple[float, float] = (0.0, 0.0),
                 lose_share: float = 0.0, seed: int | None = None) -> None:
        self.books = books
        self.reply_delay = reply_delay
        self.lose_share = lose_share
        self.wires: dict[str, dict[str, Any]] = {}
        """key -> the wire as ordered, with the bank's ``id``: applied once per key."""
        self.ledger: dict[str, dict[str, Any]] = {}
        self.requests: list[Seen] = []
        self.changed = threading.Condition()
        """Notified when a request comes, when an order is applied and when a request is done."""
        self.in_flight = 0
        self._last_activity = time.monotonic()
        self._lose: dict[str, int] = {}  # source account -> replies still to lose
        self._rng = random.Random(seed)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Bank:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def lose_acks(self, source: str, times: int = 1) -> None:
        """Apply the next ``times`` wires from ``source``, but send back no reply."""
        with self.changed:
            self._lose[source] = self._lose.get(source, 0) + times

    def count(self, method: str, prefix: str, **fields: Any) -> int:
        """How many requests match, e.g. ``count("POST", "/wires", key=k, outcome="applied")``."""
        with self.changed:
            return sum(1 for s in self.requests if s.method == method and s.path.startswith(prefix)
                       and all(getattr(s, name) == value for name, value in fields.items()))

    def wait_idle(self, quiet: float = 0.05, timeout: float = 10.0) -> None:
        """Until no request is being handled and none came for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.in_flight or time.monotonic() - self._last_activity < quiet:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the bank is still busy ({self.in_flight} requests in flight)")
                self.changed.wait(quiet)

    # --- what the handler calls (under the lock) -------------------------------------------

    def _receive(self, method: str, path: str, key: str, caller: str) -> Seen:
        with self.changed:
            seen = Seen(len(self.requests) + 1, method, path, key, caller)
            self.requests.append(seen)
            self.in_flight += 1
            self._last_activity = time.monotonic()
            self.changed.notify_all()
            return seen

    def _done(self, seen: Seen, replied: bool) -> None:
        with self.changed:
            seen.replied, seen.done = replied, time.monotonic()
            self.in_flight -= 1
            self._last_activity = seen.done
            self.changed.notify_all()

    def _delay(self) -> None:
        low, high = self.reply_delay
        if high > 0:
            time.sleep(random.uniform(low, high))

    def _apply(self, book: dict[str, dict[str, Any]], prefix: str, key: str, order: dict[str, Any],
               seen: Seen) -> tuple[int, dict[str, Any]]:
        with self.changed:
            known = book.get(key)
            if known is not None and {k: v for k, v in known.items() if k != "id"} != order:
                seen.outcome = "refused"
                return 422, {"error": "this key names another order"}
            seen.outcome = "replayed" if known is not None else "applied"
            if known is None:
                known = book[key] = {**order, "id": f"{prefix}{len(book) + 1:05d}"}
            source = order.get("source", "")
            if self._lose.get(source, 0) > 0:
                self._lose[source] -= 1
                seen.lost = True
            elif self.lose_share and self._rng.random() < self.lose_share:
                seen.lost = True
            self.changed.notify_all()
            return (201 if seen.outcome == "applied" else 200), known


def _handler(bank: Bank) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            key = urllib.parse.unquote(url.path.partition("/")[2].partition("/")[2])
            self._serve(bank._receive("GET", url.path, key, self.headers.get("X-Caller", "")), self._get, url)

        def do_POST(self) -> None:
            key = self.headers.get("Idempotency-Key", "")
            self._serve(bank._receive("POST", self.path, key, self.headers.get("X-Caller", "")), self._post, key)

        def _get(self, seen: Seen, url: urllib.parse.SplitResult) -> tuple[int, dict[str, Any]]:
            if url.path == "/balances":
                day = urllib.parse.parse_qs(url.query).get("day", [""])[0]
                accounts = bank.books(day)
                seen.outcome = "read" if accounts is not None else "unknown-day"
                bank._delay()
                return (200, {"day": day, "accounts": accounts}) if accounts is not None else (404, {})
            book = bank.wires if url.path.startswith("/wires/") else bank.ledger
            with bank.changed:
                found = book.get(seen.key) if url.path.startswith(("/wires/", "/ledger/")) else None
                seen.outcome = "found" if found else "absent"
            return (200, found) if found else (404, {"error": f"no record of {seen.key!r}"})

        def _post(self, seen: Seen, key: str) -> tuple[int, dict[str, Any]] | None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            if len(body) < length:  # the caller died mid-request: a bank acts on no half an order
                seen.outcome = "cut short"
                raise ConnectionResetError(seen.outcome)
            if not key or not body or self.path not in ("/wires", "/ledger"):
                return 400, {"error": "POST /wires or /ledger, a JSON order and an Idempotency-Key"}
            order = json.loads(body)
            book, prefix = (bank.wires, "W") if self.path == "/wires" else (bank.ledger, "GL")
            answer = bank._apply(book, prefix, key, order, seen)
            bank._delay()  # applied; the answer is not out yet
            return None if seen.lost else answer  # None: the caller sees the connection drop

        def _serve(self, seen: Seen, handle: Callable[..., tuple[int, dict[str, Any]] | None], arg: Any) -> None:
            replied = False
            try:
                answer = handle(seen, arg)
                if answer is not None:
                    data = json.dumps(answer[1]).encode()
                    self.send_response(answer[0])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    replied = True
            except OSError:  # the caller is gone (killed): the bank's books stand regardless
                pass
            finally:
                bank._done(seen, replied)

    return Handler
