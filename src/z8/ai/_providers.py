"""Model providers: OpenAI-compatible chat completions, Anthropic Messages, and a scripted double.

A provider turns one :class:`~z8.ai.ModelRequest` into one :class:`~z8.ai.ModelResponse`.
The HTTP providers speak httpx: each call is an ``httpx.Request`` handed to a transport
(by default :class:`~z8.ai.PooledTransport`, kept per event loop; pass ``transport=``, or a
whole ``client=``, to replace it). They send the call's idempotency key as the
``Idempotency-Key`` header, retry 429 and 5xx answers themselves (honouring
``Retry-After``, bounded by ``max_wait``) and raise :class:`~z8.errors.ProviderError`
when the provider keeps refusing or refuses outright (other 4xx). An answer that is not a
usable completion raises :class:`~z8.errors.InvalidModelResponse`. Network failures are
left as ``httpx`` errors: the model effect (:class:`z8.ai.Models`) tells a request that
never left (retried) from an answer that was lost (re-issued under the same key).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import httpx
import msgspec

from z8.errors import InvalidModelResponse, ProviderError

from ._http import PooledTransport
from ._messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from ._scripted import ScriptedCall, ScriptedProvider

__all__ = ["Provider", "HTTPProvider", "OpenAIProvider", "AnthropicProvider", "ScriptedProvider", "ScriptedCall",
           "retry_after"]


@runtime_checkable
class Provider(Protocol):
    """What the model effect calls: one completion for one request.

    ``model_id`` is the resolved provider model id (the request's ``model`` may be an
    alias); ``key`` is the call's idempotency key (the effect id), the same on every retry.
    """

    name: str

    async def complete(self, request: ModelRequest, *, model_id: str, key: str) -> ModelResponse: ...


# --- HTTP plumbing ---------------------------------------------------------------------------


def retry_after(headers: httpx.Headers | dict[str, str], *, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` header (delta-seconds or an HTTP date) or a
    ``retry-after-ms`` header asks to wait; None when absent or unreadable."""
    headers = httpx.Headers(headers)
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_DEFAULT_HEADERS = {"accept": "application/json", "accept-encoding": "gzip, deflate",
                    "user-agent": f"z8 python-httpx/{httpx.__version__}"}


def _default_transport(base_url: str, max_connections: int) -> httpx.AsyncBaseTransport:
    """PooledTransport, or httpx's transport through the environment's proxy for ``base_url``."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.host):
        return httpx.AsyncHTTPTransport(proxy=proxy, limits=httpx.Limits(max_connections=max_connections))
    return PooledTransport(max_connections=max_connections)


def _error_text(response: httpx.Response) -> str:
    """The provider's own error message, when its body carries one."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:200]
    return str(error or body)[:200]


class HTTPProvider:
    """Shared by the HTTP providers: one reused client, the retry loop, request ids.

    ``timeout`` bounds each HTTP attempt (seconds). ``max_retries`` counts the retries
    after a 429 or 5xx answer (so at most ``max_retries + 1`` requests); each waits what
    ``Retry-After`` asks, or ``backoff * 2**n`` seconds without it. A wait longer than
    ``max_wait`` is not waited: the call fails with ``ProviderError`` at once.
    ``max_connections`` bounds the connections (kept alive and reused) and so the requests
    in flight; the others wait their turn in the transport.
    """

    name = "http"
    path = ""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_wait: float = 30.0,
        backoff: float = 0.5,
        max_connections: int = 100,
        headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if client is not None and transport is not None:
            raise ValueError("give client= or transport=, not both")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.backoff = backoff
        self.max_connections = max_connections
        self.headers = dict(headers or {})
        self._transport = transport
        self._client = client
        self._carrier: httpx.AsyncBaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._url: tuple[str, httpx.URL] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    def _transport_now(self) -> httpx.AsyncBaseTransport:
        """What carries this event loop's requests: the ``transport`` given, else one built
        on first use in each event loop (its connections belong to that loop):
        :class:`~z8.ai.PooledTransport`, or httpx's own transport through the proxy the
        environment names for the base URL (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``)."""
        loop = asyncio.get_running_loop()
        if self._carrier is None or self._loop is not loop:
            self._carrier = self._transport or _default_transport(self.base_url, self.max_connections)
            self._loop = loop
        return self._carrier

    def _endpoint(self) -> httpx.URL:
        """The URL requests go to, parsed once (per ``base_url``)."""
        if self._url is None or self._url[0] != self.base_url:
            self._url = (self.base_url, httpx.URL(f"{self.base_url}{self.path}"))
        return self._url[1]

    async def _send(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """One HTTP attempt, read whole. Through the ``client`` given, or straight to the
        transport as an ``httpx.Request`` (an ``AsyncClient``'s cookies, redirects and auth
        flow cost more CPU than the transport itself, and a model API needs none of them);
        waiting for a free connection has no time limit of its own."""
        if self._client is not None:
            return await self._client.post(url, content=body, headers=headers)
        request = httpx.Request("POST", url, headers={**_DEFAULT_HEADERS, **headers}, content=body,
                                extensions={"timeout": httpx.Timeout(self.timeout, pool=None).as_dict()})
        response = await self._transport_now().handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        """Close the connections this provider opened (a ``client`` or ``transport`` passed
        in is the caller's), before its event loop ends. The provider stays usable: the next
        call opens new ones."""
        carrier, self._carrier = self._carrier, None
        if carrier is not None and carrier is not self._transport and self._loop is asyncio.get_running_loop():
            await carrier.aclose()
        # else it was opened on an event loop that has ended, and its connections with it

    def _auth_headers(self) -> dict[str, str]:
        return {}

    async def _post(self, body: bytes, key: str) -> httpx.Response:
        """POST the body, retrying 429/5xx as the provider asks; the 2xx response."""
        headers = {"content-type": "application/json", **self._auth_headers(), **self.headers}
        if key:
            headers["idempotency-key"] = key
        url = self._endpoint()
        for attempt in range(self.max_retries + 1):
            response = await self._send(url, body, headers)
            status = response.status_code
            if status < 300:
                return response
            asked = retry_after(response.headers)
            text = f"{self.name} {url} answered {status}: {_error_text(response)}"
            if status != 429 and status < 500:
                raise ProviderError(text, status=status, retry_after=asked)
            wait = asked if asked is not None else self.backoff * 2 ** attempt
            if attempt == self.max_retries:
                raise ProviderError(f"{text} (after {attempt + 1} attempts)", status=status, retry_after=asked)
            if wait > self.max_wait:
                raise ProviderError(f"{text} (asked to wait {wait:.1f}s, more than max_wait {self.max_wait}s)",
                                    status=status, retry_after=asked)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request_id(self, response: httpx.Response, body_id: str) -> str:
        return response.headers.get("x-request-id") or response.headers.get("request-id") or body_id

    async def complete(self, request: ModelRequest, *, model_id: str, key: str) -> ModelResponse:
        """One completion: the request translated, posted (with retries), the answer read back.
        ``latency_ms`` is the wall time of the whole call, retries and waits included."""
        started = time.perf_counter()
        response = await self._post(msgspec.json.encode(self.encode(request, model_id)), key)
        answer = self.decode(response, model_id)
        return msgspec.structs.replace(answer, latency_ms=round((time.perf_counter() - started) * 1000, 3))

    def encode(self, request: ModelRequest, model_id: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, response: httpx.Response, model_id: str) -> ModelResponse:  # pragma: no cover - abstract
        raise NotImplementedError


def _decode_body(response: httpx.Response, wire: type[Any], provider: str) -> Any:
    try:
        return msgspec.json.decode(response.content, type=wire)
    except msgspec.DecodeError as error:
        raise InvalidModelResponse(f"{provider}: the answer is not a completion ({error}): "
                                   f"{response.text[:120]!r}") from None


def _arguments_text(arguments: Any) -> str:
    """Tool-call arguments as JSON text (some servers send an object, not a string)."""
    return arguments if isinstance(arguments, str) else msgspec.json.encode(arguments).decode()


# --- OpenAI-compatible chat completions -------------------------------------------------------


class _OAFunction(msgspec.Struct):
    name: str = ""
    arguments: Any = "{}"


class _OAToolCall(msgspec.Struct):
    id: str = ""
    function: _OAFunction = msgspec.field(default_factory=_OAFunction)


class _OAMessage(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_OAToolCall] | None = None


class _OAChoice(msgspec.Struct):
    message: _OAMessage
    finish_reason: str | None = None


class _OAUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _OAResponse(msgspec.Struct):
    choices: list[_OAChoice]
    id: str = ""
    model: str = ""
    usage: _OAUsage | None = None


class OpenAIProvider(HTTPProvider):
    """An OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama, LM Studio…).

    ``base_url`` includes the version prefix, e.g. ``https://api.openai.com/v1`` or
    ``http://localhost:11434/v1``. Tools are sent as ``function`` tools; tool calls come
    back with their arguments as JSON text; ``usage`` is read from the answer.
    """

    name = "openai"
    path = "/chat/completions"

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def encode(self, request: ModelRequest, model_id: str) -> dict[str, Any]:
        """The chat-completions body for ``request`` (``params`` merged in, explicit fields win)."""
        body: dict[str, Any] = {**request.params, "model": model_id,
                                "messages": [_openai_message(m) for m in request.messages]}
        if request.tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                               "parameters": t.parameters}} for t in request.tools]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        return body

    def decode(self, response: httpx.Response, model_id: str) -> ModelResponse:
        """The ``ModelResponse`` of a chat-completions answer; InvalidModelResponse if unusable."""
        wire: _OAResponse = _decode_body(response, _OAResponse, self.name)
        if not wire.choices:
            raise InvalidModelResponse(f"{self.name}: the answer has no choices")
        choice = wire.choices[0]
        calls = []
        for i, call in enumerate(choice.message.tool_calls or ()):
            if not call.function.name:
                raise InvalidModelResponse(f"{self.name}: tool call {i} has no function name")
            calls.append(ToolCall(call.id or f"call_{i}", call.function.name, _arguments_text(call.function.arguments)))
        usage = wire.usage or _OAUsage()
        total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
        return ModelResponse(
            text=choice.message.content or "", tool_calls=tuple(calls),
            finish_reason=choice.finish_reason or ("tool_calls" if calls else "stop"),
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, total),
            model=wire.model or model_id, provider=self.name, request_id=self._request_id(response, wire.id),
        )


def _openai_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        out: dict[str, Any] = {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
        if message.name:
            out["name"] = message.name
        return out
    out = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in message.tool_calls]
    return out


# --- Anthropic Messages ----------------------------------------------------------------------


class _ABlock(msgspec.Struct):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None


class _AUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _AResponse(msgspec.Struct):
    content: list[_ABlock]
    id: str = ""
    model: str = ""
    stop_reason: str | None = None
    usage: _AUsage | None = None


_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


class AnthropicProvider(HTTPProvider):
    """The Anthropic Messages API (``POST {base_url}/v1/messages``).

    System messages become the top-level ``system`` prompt; tool results travel as
    ``tool_result`` blocks in a user message; ``tool_use`` blocks come back as tool calls
    with their ``input`` re-encoded as JSON text. ``stop_reason`` is reported in the
    OpenAI vocabulary (``stop``, ``tool_calls``, ``length``). ``max_tokens`` is required by
    the API: requests without one send ``default_max_tokens``.
    """

    name = "anthropic"
    path = "/v1/messages"

    def __init__(self, base_url: str = "https://api.anthropic.com", api_key: str | None = None, *,
                 version: str = "2023-06-01", default_max_tokens: int = 1024, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self.version = version
        self.default_max_tokens = default_max_tokens

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.version}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def encode(self, request: ModelRequest, model_id: str) -> dict[str, Any]:
        """The Messages body for ``request`` (``params`` merged in, explicit fields win)."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
        body: dict[str, Any] = {**request.params, "model": model_id,
                                "max_tokens": request.max_tokens or request.params.get("max_tokens")
                                or self.default_max_tokens,
                                "messages": _anthropic_turns(request.messages)}
        if system:
            body["system"] = system
        if request.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                             for t in request.tools]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def decode(self, response: httpx.Response, model_id: str) -> ModelResponse:
        """The ``ModelResponse`` of a Messages answer; InvalidModelResponse if unusable."""
        wire: _AResponse = _decode_body(response, _AResponse, self.name)
        texts, calls = [], []
        for i, block in enumerate(wire.content):
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                if not block.name:
                    raise InvalidModelResponse(f"{self.name}: tool_use block {i} has no name")
                arguments = msgspec.json.encode({} if block.input is None else block.input).decode()
                calls.append(ToolCall(block.id or f"toolu_{i}", block.name, arguments))
        if not texts and not calls and wire.stop_reason is None:
            raise InvalidModelResponse(f"{self.name}: the answer has neither content nor a stop reason")
        usage = wire.usage or _AUsage()
        reason = wire.stop_reason or ("tool_use" if calls else "end_turn")
        return ModelResponse(
            text="".join(texts), tool_calls=tuple(calls), finish_reason=_STOP_REASONS.get(reason, reason),
            usage=Usage(usage.input_tokens, usage.output_tokens, usage.input_tokens + usage.output_tokens),
            model=wire.model or model_id, provider=self.name, request_id=self._request_id(response, wire.id),
        )


def _tool_input(arguments: str) -> Any:
    """A recorded call's arguments as the object Anthropic wants back in the history."""
    try:
        value = msgspec.json.decode(arguments or "{}")
    except msgspec.DecodeError:
        return {"_invalid_arguments": arguments}
    return value if isinstance(value, dict) else {"_invalid_arguments": arguments}


def _anthropic_blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
               for c in message.tool_calls]
    return message.role, blocks


def _anthropic_turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """User/assistant turns, consecutive same-role messages merged (the API alternates them)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role, blocks = _anthropic_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns
