"""z8.ai.PooledTransport against a real HTTP/1.1 server on 127.0.0.1 that answers with scripted bytes."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from z8.ai import Message, ModelRequest, OpenAIProvider, PooledTransport
from z8.ai._http import _serialize
from z8.ai._providers import _default_transport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Answer = Callable[[int, int, bytes], "bytes | None | float"]
"""(request number, connection number, request bytes) -> the bytes to send (None: close
without answering; a float: wait that long, then answer 200)."""


def ok(body: bytes = b"{}", *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawServer:
    """Counts connections and requests; answers each request as ``answer`` says."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.open = 0
        self.most_open = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                out = self.answer(len(self.requests), number, request)
                if isinstance(out, float):
                    await asyncio.sleep(out)
                    out = ok()
                if out is None:
                    return
                writer.write(out)
                await writer.drain()
                lower = out.lower()
                if b"connection: close" in lower or (b"content-length" not in lower and b"chunked" not in lower
                                                     and b" 204 " not in lower):
                    return  # what delimits the body: the end of the connection
        finally:
            self.open -= 1
            writer.close()


def client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=PooledTransport(**options), timeout=5.0)


async def test_connections_are_kept_alive_and_reused() -> None:
    async with RawServer(lambda n, c, r: ok(b'{"n": %d}' % n)) as server, client() as http:
        answers = [(await http.post(server.url + "/v1/x", content=b"hello")).json()["n"] for _ in range(10)]
    assert answers == list(range(1, 11))
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\n") and first.endswith(b"\r\n\r\nhello")
    assert b"host: 127.0.0.1:" in first.lower()


async def test_at_most_max_connections_carry_many_concurrent_requests() -> None:
    async with RawServer(lambda n, c, r: 0.02) as server, client(max_connections=4) as http:
        responses = await asyncio.gather(*(http.get(server.url + f"/{i}") for i in range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    assert server.most_open <= 4 and server.connections == 4


async def test_chunked_bodies_trailers_and_informational_answers() -> None:
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n")
    async with RawServer(lambda n, c, r: chunked if n == 1 else ok(b"next")) as server, client() as http:
        first = await http.get(server.url)
        second = await http.get(server.url)
    assert first.content == b"hello, world" and second.content == b"next"
    assert server.connections == 1  # the chunked answer left the connection clean


async def test_a_streamed_request_body_is_sent_chunked() -> None:
    async def body() -> Any:
        yield b"abc"
        yield b"def"

    request = httpx.Request("POST", "http://127.0.0.1:9/up", content=body())
    wire = _serialize(request, await request.aread())
    assert wire.startswith(b"POST /up HTTP/1.1\r\n") and b"transfer-encoding: chunked" in wire.lower()
    assert wire.endswith(b"\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n")


async def test_connection_close_and_bodies_delimited_by_the_end_of_the_connection() -> None:
    answers = {1: ok(b"one", "connection: close"),
               2: b"HTTP/1.0 200 OK\r\n\r\nto the end",
               3: ok(b"three")}
    async with RawServer(lambda n, c, r: answers[n]) as server, client() as http:
        bodies = [(await http.get(server.url)).content for _ in range(3)]
    assert bodies == [b"one", b"to the end", b"three"]
    assert server.connections == 3


async def test_no_body_for_head_204_and_304() -> None:
    answers = {1: b"HTTP/1.1 204 No Content\r\n\r\n", 2: b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
               3: ok(b"after")}
    async with RawServer(lambda n, c, r: answers[n]) as server, client() as http:
        assert (await http.get(server.url)).status_code == 204
        assert (await http.get(server.url)).status_code == 304
        assert (await http.get(server.url)).content == b"after"
    assert server.connections == 1


async def test_gzip_bodies_are_decoded_by_httpx() -> None:
    packed = gzip.compress(b'{"ok": true}')
    async with RawServer(lambda n, c, r: ok(packed, "content-encoding: gzip")) as server, client() as http:
        assert (await http.get(server.url)).json() == {"ok": True}


async def test_a_keep_alive_connection_the_server_dropped_is_retried_only_when_safe() -> None:
    # the server answers the first request on each connection, then drops the connection
    # when the next request arrives on it, without answering
    served: set[int] = set()

    def answer(n: int, c: int, request: bytes) -> bytes | None:
        first = c not in served
        served.add(c)
        return ok(b"fresh") if first else None

    async with RawServer(answer) as server, client() as http:
        assert (await http.post(server.url, content=b"1")).content == b"fresh"
        keyed = await http.post(server.url, content=b"2", headers={"idempotency-key": "k-2"})
        assert keyed.content == b"fresh"  # sent again on a new connection
        assert server.connections == 2
        with pytest.raises(httpx.RemoteProtocolError, match="keep-alive connection"):
            await http.post(server.url, content=b"3")  # a plain POST is never sent twice
        assert server.connections == 2


async def test_timeouts_and_refused_connections_are_httpx_errors() -> None:
    async with RawServer(lambda n, c, r: 1.0) as server:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=httpx.Timeout(5.0, read=0.1)) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url)
        url = server.url
    async with client() as http:
        with pytest.raises(httpx.ConnectError, match="cannot connect"):
            await http.get(url)  # the server is gone
    async with RawServer(lambda n, c, r: 0.5) as server:
        async with httpx.AsyncClient(transport=PooledTransport(max_connections=1),
                                     timeout=httpx.Timeout(5.0, pool=0.05)) as http:
            slow = asyncio.ensure_future(http.get(server.url))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(server.url)
            assert (await slow).status_code == 200


@pytest.mark.parametrize("bad, error", [
    (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\n bad: folded\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "malformed chunked body"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\nconnection: close\r\n\r\nshort", "in the middle of the answer's body"),
])
async def test_malformed_answers_are_remote_protocol_errors(bad: bytes, error: str) -> None:
    def answer(n: int, c: int, request: bytes) -> bytes | None:
        return bad if n == 1 else ok(b"fine")

    async with RawServer(answer) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match=error):
            await http.get(server.url)
        assert (await http.get(server.url)).content == b"fine"  # on a new connection
    assert server.connections == 2


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with RawServer(lambda n, c, r: ok()) as server, client() as http:
        request = http.build_request("GET", server.url)
        request.headers._list.append((b"x-evil", b"x-evil", b"a\r\nx-injected: 1"))  # httpx itself lets it through
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await http.send(request)
    assert server.requests == []


async def test_a_cancelled_exchange_does_not_leave_its_connection_for_the_next_request() -> None:
    async with RawServer(lambda n, c, r: 0.5 if n == 1 else ok(b"second")) as server, client() as http:
        task = asyncio.ensure_future(http.get(server.url))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await http.get(server.url)).content == b"second"
    assert server.connections == 2


async def test_the_provider_uses_the_pooled_transport_unless_the_environment_names_a_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(_default_transport("https://api.openai.com/v1", 8), PooledTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert isinstance(_default_transport("https://api.openai.com/v1", 8), httpx.AsyncHTTPTransport)
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert isinstance(_default_transport("https://api.openai.com/v1", 8), PooledTransport)

    async with RawServer(lambda n, c, r: ok(b'{"choices": [{"message": {"content": "hi"}}]}')) as server:
        provider = OpenAIProvider(server.url + "/v1", "sk-test", max_connections=2)
        answer = await provider.complete(ModelRequest("m", (Message("user", "hello"),)), model_id="m", key="k-1")
        await provider.aclose()
    assert answer.text == "hi"
    sent = server.requests[0].lower()
    assert b"idempotency-key: k-1" in sent and b"authorization: bearer sk-test" in sent
    assert b"user-agent: z8 python-httpx/" in sent and sent.startswith(b"post /v1/chat/completions http/1.1")


async def test_a_closed_transport_refuses_requests() -> None:
    transport = PooledTransport()
    await transport.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/"))
    with pytest.raises(ValueError, match="max_connections"):
        PooledTransport(max_connections=0)
