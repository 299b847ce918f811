"""An httpx transport for many concurrent calls to few origins: HTTP/1.1 keep-alive over asyncio.

The providers speak httpx (``httpx.AsyncClient``, ``Request``, ``Response``, its errors and
timeouts); what carries their requests is this transport, not httpcore's pool. At
thousands of concurrent model calls httpcore's pool costs more CPU than the rest of the
runtime per call: each time a request enters or leaves it, it walks every pooled
connection and probes its socket (``poll`` and ``getpeername``) under an anyio lock. Here
a connection is checked out of an origin's idle stack (O(1)), one ``write`` sends the
whole request, and the response is read with ``asyncio.StreamReader`` (``readuntil`` the
head, ``readexactly`` the body or its chunks).

What it speaks: HTTP/1.1 (and HTTP/1.0 answers), ``http`` and ``https`` (TLS by
``httpx.create_ssl_context()`` unless ``ssl_context`` is given), keep-alive with an idle
expiry, ``Content-Length`` and ``chunked`` bodies both ways, ``Connection: close``, bodies
read to EOF, 1xx answers skipped, and responses to ``HEAD`` / 204 / 304 without a body.
Each response is read whole before it is returned (the providers make non-streaming
calls); content decoding (gzip…) is httpx's, as with any transport. No HTTP/2, no proxies
(httpx mounts its own transports for proxies it finds in the environment).

Errors are httpx's: ``ConnectError``/``ConnectTimeout`` (nothing was sent),
``PoolTimeout`` (no connection free in time; nothing was sent), ``WriteError``/
``WriteTimeout``, ``ReadError``/``ReadTimeout``/``RemoteProtocolError`` (the request may
have reached the server). A request sent on a reused keep-alive connection that the
server had already closed (the connection fails before the first byte of an answer) is
sent once more on a new connection when it is safe to: an idempotent method, or a request
carrying an ``Idempotency-Key`` (as model calls do).

Timeouts come from the request (``httpx.Timeout``): ``pool`` bounds the wait for a
connection, ``connect`` the TCP (and TLS) set-up, ``write`` the send, ``read`` the wait for
the whole answer (head and body together, not each chunk).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any

import httpx

__all__ = ["PooledTransport"]

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_HEAD_LIMIT = 1 << 20
"""The largest response head (status line and headers) read, in bytes."""


class _Connection:
    __slots__ = ("reader", "writer", "idle_since", "fresh")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0
        self.fresh = True

    def usable(self, now: float, expiry: float) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof() and now - self.idle_since < expiry

    def close(self) -> None:
        self.writer.close()


class _Origin:
    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(max_connections)


class _Stale(Exception):
    """A reused connection failed before any byte of the answer: the server had closed it."""


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections pooled per origin, at most ``max_connections``
    each (callers beyond wait, bounded by the request's ``pool`` timeout), idle ones kept
    up to ``keepalive_expiry`` seconds. Use it as ``httpx.AsyncClient(transport=...)``, on
    one event loop; ``aclose()`` closes the idle connections (busy ones close when done)."""

    def __init__(self, *, max_connections: int = 100, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._origins: dict[tuple[bytes, bytes, int], _Origin] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<PooledTransport max_connections={self.max_connections}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"PooledTransport speaks http and https, not {url.scheme!r}",
                                            request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(self.max_connections)
        timeouts = request.extensions.get("timeout", {})
        payload = _serialize(request, await request.aread())
        if origin.slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await origin.slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection became free in time", request=request) from None
        else:
            await origin.slots.acquire()  # free: does not wait
        try:
            connection = self._checkout(origin)
            try:
                if connection is None:
                    connection = await self._connect(request, timeouts.get("connect"))
                return await self._exchange(origin, connection, request, payload, timeouts)
            except _Stale:
                if not _retry_safe(request):
                    raise httpx.RemoteProtocolError("the server closed the keep-alive connection the request "
                                                    "was sent on, without answering", request=request) from None
                connection = await self._connect(request, timeouts.get("connect"))
                return await self._exchange(origin, connection, request, payload, timeouts)
        finally:
            origin.slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()

    # --- connections ----------------------------------------------------------------------------

    def _checkout(self, origin: _Origin) -> _Connection | None:
        now = time.monotonic()
        idle = origin.idle
        while idle:
            connection = idle.pop()
            if connection.usable(now, self.keepalive_expiry):
                return connection
            connection.close()
        return None

    async def _connect(self, request: httpx.Request, timeout: float | None) -> _Connection:
        url = request.url
        tls = url.raw_scheme == b"https"
        if tls and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        host = url.host
        port = url.port or (443 if tls else 80)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._ssl if tls else None, server_hostname=host if tls else None,
                    limit=_HEAD_LIMIT)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took more than {timeout} s",
                                       request=request) from None
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}", request=request) from error
        return _Connection(reader, writer)

    async def _exchange(self, origin: _Origin, connection: _Connection, request: httpx.Request, payload: bytes,
                        timeouts: dict[str, float | None]) -> httpx.Response:
        """Send ``payload`` and read the answer; the connection goes back to the idle
        stack when the exchange ended cleanly and both sides keep it alive."""
        reused, connection.fresh = not connection.fresh, False
        clean = False
        try:
            writer = connection.writer
            try:
                writer.write(payload)
                if writer.transport.get_write_buffer_size() > 65536:
                    async with asyncio.timeout(timeouts.get("write")):
                        await writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("sending the request took too long", request=request) from None
            except OSError as error:
                if reused:
                    raise _Stale from error
                raise httpx.WriteError(f"sending the request failed: {error}", request=request) from error
            read = timeouts.get("read")
            try:
                async with asyncio.timeout(read):
                    status, reason, version, headers = await _read_head(connection.reader, request, reused)
                    body, reusable = await _read_body(connection.reader, request, status, version, headers)
            except TimeoutError:
                raise httpx.ReadTimeout(f"no complete answer within {read} s", request=request) from None
            clean = True
        finally:
            if clean and reusable and not self._closed:
                connection.idle_since = time.monotonic()
                origin.idle.append(connection)
            else:
                connection.close()
        return httpx.Response(status, headers=headers, content=body, request=request,  # read (and decoded) here
                              extensions={"http_version": version, "reason_phrase": reason})


# --- the wire -----------------------------------------------------------------------------------


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request as bytes: request line, headers (httpx set Host and the length), body."""
    url = request.url
    lines = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value or b":" in name:
            raise httpx.LocalProtocolError(f"header {name!r} has a line break or colon where it may not",
                                           request=request)
        if name.lower() == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    if chunked:
        lines += (f"{len(body):x}\r\n".encode(), body, b"\r\n0\r\n\r\n") if body else (b"0\r\n\r\n",)
    else:
        lines.append(body)
    return b"".join(lines)


def _retry_safe(request: httpx.Request) -> bool:
    return request.method.encode() in _IDEMPOTENT or "idempotency-key" in request.headers


async def _read_head(reader: asyncio.StreamReader, request: httpx.Request,
                     reused: bool) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """(status, reason, version, headers) of the final answer (1xx answers skipped)."""
    first = True
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if first and reused and not error.partial:
                raise _Stale from error
            raise httpx.RemoteProtocolError("the server closed the connection without a complete answer",
                                            request=request) from error
        except asyncio.LimitOverrunError as error:
            raise httpx.RemoteProtocolError(f"the answer's head is longer than {_HEAD_LIMIT} bytes",
                                            request=request) from error
        except OSError as error:
            if first and reused:
                raise _Stale from error
            raise httpx.ReadError(f"reading the answer failed: {error}", request=request) from error
        first = False
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}", request=request)
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}", request=request)
            headers.append((name, value.strip()))
        status = int(code)
        if status >= 200 or status == 101:
            return status, reason, version, headers


async def _read_body(reader: asyncio.StreamReader, request: httpx.Request, status: int, version: bytes,
                     headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """(body, whether the connection may be reused)."""
    lengths, chunked, keep_alive = set(), False, version == b"HTTP/1.1"
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.add(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lower == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            keep_alive = b"keep-alive" in tokens if version == b"HTTP/1.0" else b"close" not in tokens
    if request.method == "HEAD" or status in (204, 304) or status < 200:
        return b"", keep_alive
    try:
        if chunked:
            return await _read_chunked(reader, request), keep_alive and not lengths
        if lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                raise httpx.RemoteProtocolError(f"invalid Content-Length {sorted(lengths)!r}", request=request)
            return await reader.readexactly(int(next(iter(lengths)))), keep_alive
        return await reader.read(), False  # delimited by the end of the connection
    except asyncio.IncompleteReadError as error:
        raise httpx.RemoteProtocolError("the server closed the connection in the middle of the answer's body",
                                        request=request) from error
    except (asyncio.LimitOverrunError, ValueError) as error:
        raise httpx.RemoteProtocolError(f"malformed chunked body: {error}", request=request) from error
    except OSError as error:
        raise httpx.ReadError(f"reading the answer failed: {error}", request=request) from error


async def _read_chunked(reader: asyncio.StreamReader, request: httpx.Request) -> bytes:
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line[:-2].split(b";", 1)[0].strip(), 16)  # ValueError: not a chunk size
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk of the answer's body does not end with CRLF", request=request)
        parts.append(chunk[:-2])
