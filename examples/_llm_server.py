"""A real OpenAI- and Anthropic-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It speaks HTTP/1.1 with keep-alive over asyncio (thousands of concurrent connections),
answers ``POST /v1/chat/completions`` (and ``/chat/completions``) in the OpenAI format and
``POST /v1/messages`` in the Anthropic format, from a script of :class:`Reply` values
consumed in order, then from a responder (by default a ReAct-shaped one: ``steps - 1``
calls of the first offered tool, then an answer). It counts every request by its
``Idempotency-Key`` and by the digest of its body, and can answer 429 with
``Retry-After``, 5xx, bad JSON, unknown tool names, invalid arguments, a late answer or
none at all (``Reply.drop``).

In a test (same event loop)::

    async with LLMServer() as server:
        server.script(text("hi"), error(429, retry_after=0.2))
        OpenAIProvider(server.openai_url) ...

In another thread (``with LLMServer.in_thread(latency=0.02) as server:``), or as a process
for crash tests, the demo's AI fleet and benchmarks (``python3 examples/_llm_server.py
--port 0 --latency 0.02`` prints its URL; ``GET /_stats`` returns the counters, ``POST
/_script`` appends replies, ``POST /_reset`` clears both; :class:`ServerProcess` drives
it). It depends on nothing in z8. There is one copy, this one: examples and benchmarks
import it with ``sys.path.insert(0, "examples")``, tests as ``_llm_server`` through
``tests/_llm_server.py``, which loads this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

__all__ = ["LLMServer", "Reply", "Seen", "ServerProcess", "text", "tool_call", "error", "raw", "react"]


class Reply(msgspec.Struct, omit_defaults=True):
    """One scripted answer, rendered in the format of the API that was called.

    ``tool_calls``: ``(name, arguments)`` pairs, arguments as JSON text (sent verbatim, so
    invalid JSON can be scripted) or an object. ``body`` replaces the whole answer (bad
    JSON…). ``delay`` overrides the server's latency. ``drop`` closes the connection
    without answering (a lost reply). ``usage``: (prompt, completion) tokens; estimated
    from word counts when absent.
    """

    text: str = ""
    tool_calls: list[tuple[str, Any]] = []
    status: int = 200
    headers: dict[str, str] = {}
    body: str | None = None
    delay: float | None = None
    drop: bool = False
    usage: tuple[int, int] | None = None


def text(content: str, **options: Any) -> Reply:
    """A plain answer."""
    return Reply(text=content, **options)


def tool_call(name: str, arguments: Any = None, *more: tuple[str, Any], text: str = "", **options: Any) -> Reply:
    """An answer calling ``name`` with ``arguments`` (and the ``(name, arguments)`` pairs in ``more``)."""
    return Reply(text=text, tool_calls=[(name, {} if arguments is None else arguments), *more], **options)


def error(status: int, *, retry_after: float | str | None = None, message: str = "scripted error",
          **options: Any) -> Reply:
    """An error answer (429, 500, 503, 400…), with ``Retry-After`` when given."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    body = json.dumps({"error": {"message": message, "type": "scripted", "code": status}})
    return Reply(status=status, headers=headers, body=body, **options)


def raw(body: str, status: int = 200, **options: Any) -> Reply:
    """An answer whose body is sent verbatim (e.g. not JSON)."""
    return Reply(status=status, body=body, **options)


class Seen(msgspec.Struct):
    """One request the server answered (kept when ``keep_requests``)."""

    api: str
    path: str
    key: str | None
    digest: str
    headers: dict[str, str]
    body: Any


Responder = Callable[[str, dict[str, Any]], Reply]


def _example(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if "default" in schema:
        return schema["default"]
    if kind == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()
                if name in schema.get("required", ())}
    return {"string": "x", "integer": 1, "number": 1.0, "boolean": True, "array": []}.get(kind)


def react(steps: int = 1, answer: str = "done") -> Responder:
    """A stateless ReAct-shaped responder: while the conversation holds fewer than
    ``steps - 1`` tool results and tools are offered, call the first tool (arguments built
    from its schema's required fields); then answer ``"Answer: {answer}"``. The same
    request always gets the same reply, so a re-sent step is answered identically."""
    def respond(api: str, body: dict[str, Any]) -> Reply:
        results = sum(1 for m in body.get("messages", []) if m.get("role") == "tool") if api == "openai" else sum(
            1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
            for b in m["content"] if b.get("type") == "tool_result")
        tools = body.get("tools") or []
        if results < steps - 1 and tools:
            first = tools[0].get("function", tools[0])
            schema = first.get("parameters") or first.get("input_schema") or {}
            return tool_call(first["name"], _example(schema), text=f"Thought: step {results + 1}, "
                                                                    f"calling {first['name']}.")
        return text(f"Answer: {answer}")
    return respond


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k in ("content", "text"))
    return 0


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _render(api: str, reply: Reply, body: dict[str, Any], n: int) -> tuple[dict[str, str], bytes]:
    """The completion ``reply`` stands for, in the called API's format, with its headers."""
    prompt = _words(body.get("messages", [])) + _words(body.get("system", ""))
    completion = _words(reply.text) + sum(_words(_arguments_text(a)) for _, a in reply.tool_calls)
    prompt, completion = reply.usage or (prompt, completion)
    model = body.get("model", "unknown")
    if api == "openai":
        calls = [{"id": f"call_{n}_{i}", "type": "function",
                  "function": {"name": name, "arguments": _arguments_text(args)}}
                 for i, (name, args) in enumerate(reply.tool_calls)]
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if calls:
            message["tool_calls"] = calls
        out: dict[str, Any] = {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        headers = {"x-request-id": f"req-{n}"}
    else:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        for i, (name, args) in enumerate(reply.tool_calls):
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    pass  # Anthropic sends objects; a scripted string stands for a broken one
            blocks.append({"type": "tool_use", "id": f"toolu_{n}_{i}", "name": name, "input": args})
        out = {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": model, "content": blocks,
               "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
               "usage": {"input_tokens": prompt, "output_tokens": completion}}
        headers = {"request-id": f"req_{n}"}
    return headers, json.dumps(out).encode()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 529: "Overloaded"}
_APIS = {"/v1/chat/completions": "openai", "/chat/completions": "openai", "/v1/messages": "anthropic"}


class LLMServer:
    """The server. ``latency`` (seconds) is waited before every answer; ``responder``
    answers when the script is empty (default: ``react(steps)``); ``keep_requests=False``
    keeps only the counters (for benchmarks)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 responder: Responder | None = None, steps: int = 1, keep_requests: bool = True) -> None:
        self.host, self.port = host, port
        self.latency = latency
        self.responder = responder or react(steps)
        self.keep_requests = keep_requests
        self.requests: list[Seen] = []
        self.by_key: Counter[str] = Counter()
        self.by_digest: Counter[str] = Counter()
        self.count = 0
        self._script: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the Anthropic base URL)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible base URL (``{url}/v1``)."""
        return f"{self.url}/v1"

    def script(self, *replies: Reply) -> None:
        """Append replies, answered in order before the responder is asked."""
        self._script.extend(replies)

    def reset(self) -> None:
        """Forget the script, the requests and the counters."""
        self._script.clear()
        self.requests.clear()
        self.by_key.clear()
        self.by_digest.clear()
        self.count = 0

    def stats(self) -> dict[str, Any]:
        return {"requests": self.count, "by_key": dict(self.by_key), "by_digest": dict(self.by_digest),
                "scripted_left": len(self._script)}

    async def start(self) -> LLMServer:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, backlog=4096,
                                                  limit=1 << 22)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            connections = list(self._connections)
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, **options: Any) -> Iterator[LLMServer]:
        """The server on its own event loop in a daemon thread, for the duration of the block."""
        server = cls(**options)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="llm-server", daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # --- HTTP/1.1 ------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping: end this connection quietly (asyncio reports a cancelled handler)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ", 2)
        headers = {}
        for item in lines:
            if item:
                name, _, value = item.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length") or 0))
        answer = await self._handle(method, target.split("?", 1)[0], headers, body)
        if answer is None:  # a dropped reply: close without a word
            return False
        status, extra, payload = answer
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        head_out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "content-type: application/json",
                    f"content-length: {len(payload)}", f"connection: {'keep-alive' if keep else 'close'}",
                    *(f"{k}: {v}" for k, v in extra.items())]
        writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()
        return keep

    async def _handle(self, method: str, path: str, headers: dict[str, str],
                      body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if path == "/_stats" and method == "GET":
            return 200, {}, json.dumps(self.stats()).encode()
        if path == "/_script" and method == "POST":
            self.script(*msgspec.json.decode(body, type=list[Reply]))
            return 200, {}, b'{"ok": true}'
        if path == "/_reset" and method == "POST":
            self.reset()
            return 200, {}, b'{"ok": true}'
        api = _APIS.get(path)
        if api is None or method != "POST":
            return 404, {}, json.dumps({"error": {"message": f"no route {method} {path}"}}).encode()
        try:
            request = json.loads(body)
        except ValueError:
            return 400, {}, b'{"error": {"message": "the request body is not JSON"}}'
        return await self._complete(api, path, headers, request)

    async def _complete(self, api: str, path: str, headers: dict[str, str],
                        request: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        self.count += 1
        n = self.count
        key = headers.get("idempotency-key")
        digest = hashlib.blake2b(json.dumps(request, sort_keys=True).encode(), digest_size=16).hexdigest()
        if key is not None:
            self.by_key[key] += 1
        self.by_digest[digest] += 1
        if self.keep_requests:
            self.requests.append(Seen(api, path, key, digest, headers, request))
        reply = self._script.popleft() if self._script else self.responder(api, request)
        delay = self.latency if reply.delay is None else reply.delay
        if delay:
            await asyncio.sleep(delay)
        if reply.drop:
            return None
        if reply.body is not None:
            return reply.status, dict(reply.headers), reply.body.encode()
        extra, payload = _render(api, reply, request, n)
        return reply.status, {**extra, **reply.headers}, payload


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class ServerProcess:
    """The server as a child process (``python3 examples/_llm_server.py``): ``url``, ``stats()``,
    ``script()``, ``reset()``, ``stop()``; a context manager."""

    def __init__(self, *, latency: float = 0.0, steps: int = 1, keep_requests: bool = False) -> None:
        args = [sys.executable, __file__, "--port", "0", "--latency", str(latency), "--steps", str(steps)]
        if keep_requests:
            args.append("--keep-requests")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.process.kill()
            raise RuntimeError(f"the LLM server did not start (printed {self.url!r})")
        self.openai_url = f"{self.url}/v1"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx  # only the driver needs a client

        response = httpx.request(method, self.url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """``{"requests": n, "by_key": {...}, "by_digest": {...}, "scripted_left": n}``."""
        return self._call("GET", "/_stats")

    def script(self, *replies: Reply) -> None:
        self._call("POST", "/_script", [msgspec.to_builtins(r) for r in replies])

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(args: argparse.Namespace) -> None:
    server = LLMServer(host=args.host, port=args.port, latency=args.latency, steps=args.steps,
                       keep_requests=args.keep_requests)
    await server.start()
    print(server.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local OpenAI/Anthropic-compatible server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--steps", type=int, default=1, help="model calls per ReAct run (steps-1 tool calls)")
    parser.add_argument("--keep-requests", action="store_true", help="keep every request body (memory)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
