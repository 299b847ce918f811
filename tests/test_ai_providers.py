"""Model providers and the model effect, against a real HTTP server on 127.0.0.1.

``tests/_llm_server.py`` speaks the OpenAI and Anthropic formats over real sockets; the
providers talk to it through httpx as they would to a vendor. The model effect runs in a
real ``z8.Application`` on an LMDB journal in ``tmp_path``, and the tests assert what the
journal holds and what the server saw.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from _llm_server import LLMServer, Reply, ServerProcess, error, raw, text, tool_call
from _polling import until

import z8
from z8.ai import (
    AnthropicProvider,
    Message,
    ModelRequest,
    ModelResponse,
    Models,
    ModelSpec,
    OpenAIProvider,
    Provider,
    ScriptedProvider,
    ToolCall,
    ToolSpec,
    Usage,
    digest_messages,
)
from z8.ai._providers import retry_after
from z8.effects import EffectFailed, EffectIntended, EffectRetrying, EffectSucceeded, Retry
from z8.errors import AIError, InvalidArgument, InvalidModelResponse, ProviderError, UnknownModel

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


LOOKUP = ToolSpec("lookup_customer", "Find a customer by email.",
                  {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]})

CONVERSATION = (
    Message("system", "You are a support triage assistant."),
    Message("user", "I was double charged"),
    Message("assistant", "Let me look.", tool_calls=(ToolCall("c1", "lookup_customer", '{"email": "a@b.c"}'),)),
    Message("tool", '{"plan": "pro"}', tool_call_id="c1", name="lookup_customer"),
    Message("user", "Any news?"),
)


def request(**changes: Any) -> ModelRequest:
    fields: dict[str, Any] = dict(model="fast", messages=CONVERSATION, tools=(LOOKUP,), temperature=0.0,
                                  max_tokens=256)
    fields.update(changes)
    return ModelRequest(**fields)


def openai(server: LLMServer, **options: Any) -> OpenAIProvider:
    return OpenAIProvider(server.openai_url, "sk-test", backoff=0.01, **options)


def anthropic(server: LLMServer, **options: Any) -> AnthropicProvider:
    return AnthropicProvider(server.url, "ak-test", backoff=0.01, **options)


# --- OpenAI-compatible -------------------------------------------------------------------------


async def test_openai_translates_the_conversation_and_reads_tool_calls_usage_and_request_id(server: LLMServer) -> None:
    server.script(tool_call("lookup_customer", {"email": "a@b.c"}, text="Checking.", usage=(40, 12)))
    provider = openai(server)
    answer = await provider.complete(request(), model_id="gpt-test", key="app/1/0")
    await provider.aclose()

    assert answer.text == "Checking."
    assert answer.tool_calls == (ToolCall("call_1_0", "lookup_customer", '{"email": "a@b.c"}'),)
    assert answer.finish_reason == "tool_calls"
    assert answer.usage == Usage(40, 12, 52)
    assert (answer.model, answer.provider, answer.request_id) == ("gpt-test", "openai", "req-1")
    assert answer.latency_ms > 0

    [seen] = server.requests
    assert seen.path == "/v1/chat/completions" and seen.key == "app/1/0"
    assert seen.headers["authorization"] == "Bearer sk-test"
    body = seen.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-test", 0.0, 256)
    assert body["tools"] == [{"type": "function", "function": {"name": "lookup_customer",
                                                               "description": "Find a customer by email.",
                                                               "parameters": LOOKUP.parameters}}]
    assert body["messages"] == [
        {"role": "system", "content": "You are a support triage assistant."},
        {"role": "user", "content": "I was double charged"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup_customer",
                                                          "arguments": '{"email": "a@b.c"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"plan": "pro"}', "name": "lookup_customer"},
        {"role": "user", "content": "Any news?"},
    ]


async def test_openai_request_id_falls_back_to_the_body_id_and_object_arguments_become_json_text() -> None:
    body = {"id": "chatcmpl-xyz", "model": "m-2024", "choices": [{"message": {"content": None, "tool_calls": [
        {"id": "t1", "function": {"name": "lookup_customer", "arguments": {"email": "x@y.z"}}}]}}]}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    provider = OpenAIProvider("http://vendor.test/v1", transport=transport)
    answer = await provider.complete(request(), model_id="m", key="")
    assert answer.request_id == "chatcmpl-xyz" and answer.model == "m-2024"
    assert answer.tool_calls == (ToolCall("t1", "lookup_customer", '{"email":"x@y.z"}'),)
    assert answer.finish_reason == "tool_calls" and answer.usage == Usage()


# --- Anthropic ----------------------------------------------------------------------------------


async def test_anthropic_sends_system_on_top_and_tool_results_in_a_user_turn(server: LLMServer) -> None:
    server.script(tool_call("lookup_customer", {"email": "a@b.c"}, text="Checking.", usage=(30, 9)))
    provider = anthropic(server)
    answer = await provider.complete(request(), model_id="claude-test", key="app/2/0")
    await provider.aclose()

    assert answer.text == "Checking."
    assert answer.tool_calls == (ToolCall("toolu_1_0", "lookup_customer", '{"email":"a@b.c"}'),)
    assert answer.finish_reason == "tool_calls"
    assert answer.usage == Usage(30, 9, 39)
    assert (answer.model, answer.provider, answer.request_id) == ("claude-test", "anthropic", "req_1")

    [seen] = server.requests
    assert seen.path == "/v1/messages" and seen.key == "app/2/0"
    assert seen.headers["x-api-key"] == "ak-test" and seen.headers["anthropic-version"] == "2023-06-01"
    body = seen.body
    assert body["system"] == "You are a support triage assistant."
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("claude-test", 256, 0.0)
    assert body["tools"] == [{"name": "lookup_customer", "description": "Find a customer by email.",
                              "input_schema": LOOKUP.parameters}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "I was double charged"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "c1", "name": "lookup_customer", "input": {"email": "a@b.c"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": '{"plan": "pro"}'},
            {"type": "text", "text": "Any news?"}]},
    ]


async def test_anthropic_plain_answer_and_default_max_tokens(server: LLMServer) -> None:
    server.script(text("Refund issued."))
    provider = anthropic(server)
    answer = await provider.complete(request(max_tokens=None), model_id="claude-test", key="k")
    await provider.aclose()
    assert (answer.text, answer.tool_calls, answer.finish_reason) == ("Refund issued.", (), "stop")
    assert server.requests[0].body["max_tokens"] == 1024


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [openai, anthropic])
async def test_a_429_is_retried_after_the_wait_it_asks_for(server: LLMServer, make: Any) -> None:
    server.script(error(429, retry_after=0.2), text("ok"))
    provider = make(server)
    started = time.perf_counter()
    answer = await provider.complete(request(), model_id="m", key="k-429")
    waited = time.perf_counter() - started
    await provider.aclose()
    assert answer.text == "ok"
    assert waited >= 0.2
    assert server.by_key["k-429"] == 2  # the same key both times


async def test_a_500_is_retried_then_succeeds(server: LLMServer) -> None:
    server.script(error(500), text("ok"))
    provider = openai(server)
    assert (await provider.complete(request(), model_id="m", key="k-500")).text == "ok"
    await provider.aclose()
    assert server.by_key["k-500"] == 2


async def test_a_persistent_503_ends_in_provider_error_after_the_retries(server: LLMServer) -> None:
    server.script(*[error(503, message="overloaded")] * 4)
    provider = openai(server, max_retries=2)
    with pytest.raises(ProviderError, match="503: overloaded") as caught:
        await provider.complete(request(), model_id="m", key="k-503")
    await provider.aclose()
    assert caught.value.status == 503
    assert server.count == 3


async def test_other_4xx_fail_at_once_without_retry(server: LLMServer) -> None:
    server.script(error(400, message="bad model"), text("never"))
    provider = anthropic(server)
    with pytest.raises(ProviderError, match="400: bad model") as caught:
        await provider.complete(request(), model_id="m", key="k-400")
    await provider.aclose()
    assert caught.value.status == 400 and server.count == 1


async def test_a_wait_longer_than_max_wait_is_not_waited(server: LLMServer) -> None:
    server.script(error(429, retry_after=120), text("never"))
    provider = openai(server, max_wait=5)
    started = time.perf_counter()
    with pytest.raises(ProviderError, match="asked to wait 120.0s") as caught:
        await provider.complete(request(), model_id="m", key="k")
    await provider.aclose()
    assert time.perf_counter() - started < 2
    assert (caught.value.status, caught.value.retry_after) == (429, 120.0)


def test_retry_after_reads_seconds_dates_and_milliseconds() -> None:
    now = 1_700_000_000.0
    assert retry_after({"Retry-After": "0.2"}) == 0.2
    assert retry_after({"Retry-After": email.utils.formatdate(now + 7, usegmt=True)}, now=now) == 7.0
    assert retry_after({"Retry-After": email.utils.formatdate(now - 7, usegmt=True)}, now=now) == 0.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


# --- malformed answers --------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "match"), [
    (raw("this is not json"), "not a completion"),
    (raw('{"choices": []}'), "no choices"),
    (raw('{"choices": [{"message": {"tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]}}]}'),
     "no function name"),
    (raw('{"object": "list"}'), "not a completion"),
])
async def test_a_malformed_openai_answer_is_an_invalid_model_response(server: LLMServer, reply: Reply,
                                                                      match: str) -> None:
    server.script(reply)
    provider = openai(server)
    with pytest.raises(InvalidModelResponse, match=match):
        await provider.complete(request(), model_id="m", key="k")
    await provider.aclose()


@pytest.mark.parametrize(("reply", "match"), [
    (raw("<html>"), "not a completion"),
    (raw('{"content": [{"type": "tool_use", "id": "t", "input": {}}]}'), "has no name"),
    (raw('{"content": []}'), "neither content nor a stop reason"),
])
async def test_a_malformed_anthropic_answer_is_an_invalid_model_response(server: LLMServer, reply: Reply,
                                                                         match: str) -> None:
    server.script(reply)
    provider = anthropic(server)
    with pytest.raises(InvalidModelResponse, match=match):
        await provider.complete(request(), model_id="m", key="k")
    await provider.aclose()


async def test_unknown_tool_names_and_invalid_arguments_pass_through_for_the_agent_to_judge(
        server: LLMServer) -> None:
    server.script(tool_call("no_such_tool", '{"email": '), tool_call("lookup_customer", "not json"))
    provider, other = openai(server), anthropic(server)
    first = await provider.complete(request(), model_id="m", key="k1")
    second = await other.complete(request(), model_id="m", key="k2")
    await provider.aclose()
    await other.aclose()
    assert first.tool_calls == (ToolCall("call_1_0", "no_such_tool", '{"email": '),)
    assert second.tool_calls == (ToolCall("toolu_2_0", "lookup_customer", '"not json"'),)


# --- the scripted double ------------------------------------------------------------------------


async def test_the_scripted_provider_answers_in_order_records_calls_and_estimates_usage() -> None:
    provider = ScriptedProvider([
        ModelResponse(tool_calls=(ToolCall("", "lookup_customer", '{"email": "a@b.c"}'),)),
        "Refund issued.",
        lambda req: f"You asked {len(req.messages)} messages",
    ])
    assert isinstance(provider, Provider)
    first = await provider.complete(request(), model_id="scripted-1", key="k1")
    second = await provider.complete(request(), model_id="scripted-1", key="k2")
    third = await provider.complete(request(messages=(Message("user", "hi"),)), model_id="scripted-1", key="k3")
    assert first.tool_calls == (ToolCall("call_0_0", "lookup_customer", '{"email": "a@b.c"}'),)
    assert first.finish_reason == "tool_calls" and second.finish_reason == "stop"
    assert (second.text, second.provider, second.model, second.request_id) == (
        "Refund issued.", "scripted", "scripted-1", "scripted-2")
    prompt_words = sum(len(m.content.split()) for m in CONVERSATION) + 2
    assert first.usage == Usage(prompt_words, 2, prompt_words + 2)
    assert second.usage == Usage(prompt_words, 2, prompt_words + 2)
    assert third.text == "You asked 1 messages"
    assert [c.key for c in provider.calls] == ["k1", "k2", "k3"]
    assert provider.requests[2].messages == (Message("user", "hi"),)
    with pytest.raises(ProviderError, match="ran out after 3 answers"):
        await provider.complete(request(), model_id="scripted-1", key="k4")


async def test_a_scripted_function_answers_every_call_and_keeps_given_usage() -> None:
    provider = ScriptedProvider(lambda req: ModelResponse(text=req.purpose, usage=Usage(1, 2, 3)))
    for purpose in ("act", "critique", "act"):
        assert (await provider.complete(request(purpose=purpose), model_id="s", key="")).text == purpose
    assert (await provider.complete(request(), model_id="s", key="")).usage == Usage(1, 2, 3)
    assert provider.remaining == 0 and len(provider.calls) == 4


# --- aliases ------------------------------------------------------------------------------------


def test_aliases_from_code_resolve_to_a_provider_and_a_model_id() -> None:
    scripted = ScriptedProvider(["x"])
    url = "http://127.0.0.1:8000/v1"
    models = Models({"fast": "openai:gpt-4o-mini", "Deep-Think": ModelSpec("scripted", "s-1", {"temperature": 0.3})},
                    providers={"scripted": scripted}, environ={"OPENAI_BASE_URL": url})
    provider, spec = models.resolve("fast")
    assert isinstance(provider, OpenAIProvider) and provider.base_url == url
    assert spec == ModelSpec("openai", "gpt-4o-mini")
    assert models.resolve("deep_think") == (scripted, ModelSpec("scripted", "s-1", {"temperature": 0.3}))
    assert models.resolve("openai:gpt-4.1")[1] == ModelSpec("openai", "gpt-4.1")  # a direct target
    assert models.resolve("FAST")[0] is provider  # one provider (one client) per name, reused


def test_an_unknown_alias_is_unknown_model() -> None:
    models = Models({"fast": "openai:gpt-4o-mini"}, environ={})
    with pytest.raises(UnknownModel, match=r"'smart'.*aliases: fast.*Z8_MODEL_SMART"):
        models.resolve("smart")
    with pytest.raises(UnknownModel, match="no provider is configured for 'mystery'"):
        Models({"x": "mystery:m"}, environ={}).resolve("x")
    with pytest.raises(InvalidArgument, match="'provider:model-id'"):
        Models({"fast": "gpt-4o-mini"})


def test_aliases_from_the_environment_override_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Z8_MODEL_FAST", "anthropic:claude-haiku")
    monkeypatch.setenv("Z8_MODEL_DEEP", "openai:o3")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-env")
    models = Models({"fast": "openai:gpt-4o-mini", "local": "openai:llama"}, env=True)
    assert models.aliases == {"fast": ModelSpec("anthropic", "claude-haiku"), "deep": ModelSpec("openai", "o3"),
                              "local": ModelSpec("openai", "llama")}
    provider, _ = models.resolve("fast")
    assert isinstance(provider, AnthropicProvider)
    assert (provider.base_url, provider.api_key) == ("http://127.0.0.1:9", "ak-env")
    assert Models({"fast": "openai:gpt-4o-mini"}).aliases["fast"].provider == "openai"  # env only when asked


TOML = '''
[providers.local]
kind = "openai"
base_url = "{url}"
api_key_env = "LOCAL_KEY"
timeout = 5
max_retries = 1

[models]
fast = "local:llama3.2"
deep = {{ target = "anthropic:claude-sonnet", params = {{ temperature = 0.2, top_k = 5 }} }}
'''


def test_aliases_and_providers_from_a_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.toml"
    path.write_text(TOML.format(url="http://127.0.0.1:1234/v1"))
    models = Models({"fast": "openai:gpt-4o-mini"}, toml=path, environ={"LOCAL_KEY": "lk"})
    provider, spec = models.resolve("fast")
    assert spec == ModelSpec("local", "llama3.2")
    assert isinstance(provider, OpenAIProvider)
    assert (provider.base_url, provider.api_key, provider.timeout, provider.max_retries) == (
        "http://127.0.0.1:1234/v1", "lk", 5, 1)
    assert models.resolve("deep")[1] == ModelSpec("anthropic", "claude-sonnet", {"temperature": 0.2, "top_k": 5})
    monkeypatch.setenv("Z8_MODELS_FILE", str(path))
    monkeypatch.setenv("Z8_MODEL_DEEP", "openai:o3")
    from_env = Models(env=True)
    assert from_env.aliases["fast"] == ModelSpec("local", "llama3.2")
    assert from_env.aliases["deep"] == ModelSpec("openai", "o3")  # the variable beats the file


@pytest.mark.parametrize(("toml", "match"), [
    ("[models]\nfast = 3", "models.fast is 'provider:model-id'"),
    ("[providers.x]\nkind = 'gemini'", "kind must be 'openai' or 'anthropic'"),
    ("[providers.openai]\nbase = 'x'", "unknown key"),
    ("[aliases]\nfast = 'openai:x'", "unknown section"),
    ("[models\n", "model configuration"),
])
def test_a_bad_toml_configuration_says_what_is_wrong(toml: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        Models(toml=toml + "\n")


async def test_alias_params_are_defaults_under_the_request(server: LLMServer) -> None:
    server.script(text("a"), text("b"))
    models = Models({"deep": "openai:gpt-test"}, environ={"OPENAI_BASE_URL": server.openai_url})
    models.alias("deep", "openai:gpt-test", temperature=0.7, top_p=0.9, max_tokens=64)
    await models.complete(request(model="deep", temperature=None, max_tokens=None))
    await models.complete(request(model="deep", temperature=0.1, params={"top_p": 0.5}))
    await models.aclose()
    first, second = (seen.body for seen in server.requests)
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.7, 0.9, 64)
    assert (second["temperature"], second["top_p"], second["max_tokens"]) == (0.1, 0.5, 256)


# --- the model effect in an application -----------------------------------------------------------


class Ask(msgspec.Struct, frozen=True, tag=True):
    asker_id: str
    model: str = "fast"
    question: str = "I was double charged"
    subject: str | None = None


class Asked(msgspec.Struct, frozen=True, tag=True):
    question: str


class Answered(msgspec.Struct, frozen=True, tag=True):
    effect_id: str
    ok: bool
    text: str = ""
    error: str = ""
    message: str = ""


class AskerState(msgspec.Struct):
    answers: list[Answered] = []


MODELS: dict[str, Models] = {}


class Asker(z8.Agent):
    State = AskerState

    def decide(self, state: AskerState, command: Any, ctx: Any) -> Any:
        if isinstance(command, Ask):
            messages = (Message("system", "Be brief."), Message("user", command.question))
            call = ModelRequest(command.model, messages, tools=(LOOKUP,), max_tokens=100, subject=command.subject,
                                messages_digest=digest_messages(messages) if command.subject else None)
            return z8.Decision(events=[Asked(command.question)], effects=[z8.Call("z8.model", call)])
        if isinstance(command, EffectSucceeded):
            assert isinstance(command.result, ModelResponse)  # decoded to the effect's result type
            return z8.Decision(events=[Answered(command.effect_id, True, text=command.result.text)])
        if isinstance(command, EffectFailed):
            return z8.Decision(events=[Answered(command.effect_id, False, error=command.error,
                                                message=command.message)])
        return z8.reject(f"unknown command {type(command).__name__}")

    def evolve(self, state: AskerState, event: Any) -> AskerState:
        if isinstance(event, Answered):
            return AskerState([*state.answers, event])
        return state


def asker_app(tmp_path: Path, models: Models, **options: Any) -> z8.Application:
    MODELS["current"] = models
    router = z8.Router()
    router.identify(Asker, by="asker_id", prefix="asker-")
    router.dispatch(Ask, to=Asker)
    return z8.Application(router, tmp_path / "journal", types=z8.TypeRegistry([Ask, Asked, Answered]),
                          effects=[models.effect], **options)


async def answer_of(app: z8.Application, stream: str) -> Answered:
    def read() -> Any:
        found = [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == "Answered"]
        return found[0] if found else None
    return await until(read, timeout=15)


def records(app: z8.Application, stream: str, kind: type) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == f"z8.{kind.__name__}"]


QUICK = Retry(attempts=3, backoff=z8.Backoff(min=0.01, max=0.01, jitter=0))


def test_the_model_effect_is_declared_as_the_note_says() -> None:
    effect = Models().effect
    assert (effect.name, effect.capability, effect.kind, effect.idempotent) == ("z8.model", "model.call", "read",
                                                                                True)
    assert (effect.request_type, effect.result_type) == (ModelRequest, ModelResponse)


async def test_the_model_effect_journals_the_request_and_the_response_and_sends_its_id_as_key(
        tmp_path: Path, server: LLMServer) -> None:
    server.script(tool_call("lookup_customer", {"email": "a@b.c"}, text="Looking it up.", usage=(21, 7)))
    models = Models({"fast": "openai:gpt-test"}, environ={"OPENAI_BASE_URL": server.openai_url})
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("one"))
        answered = await answer_of(app, "asker-one")
        [intent] = records(app, "asker-one", EffectIntended)
        [done] = records(app, "asker-one", EffectSucceeded)
    await models.aclose()

    assert answered == Answered("asker-one/1/0", True, text="Looking it up.")
    assert (intent.effect, intent.kind, intent.capability, intent.idempotent) == ("z8.model", "read", "model.call",
                                                                                  True)
    journaled = msgspec.convert(intent.request, ModelRequest)
    assert journaled.model == "fast" and journaled.messages[1] == Message("user", "I was double charged")
    assert journaled.tools == (LOOKUP,) and journaled.max_tokens == 100
    response = msgspec.convert(done.result, ModelResponse)
    assert response.tool_calls == (ToolCall("call_1_0", "lookup_customer", '{"email": "a@b.c"}'),)
    assert response.usage == Usage(21, 7, 28)
    assert (response.model, response.provider, response.request_id) == ("gpt-test", "openai", "req-1")
    assert response.latency_ms > 0
    assert server.by_key == {"asker-one/1/0": 1}
    assert server.requests[0].body["model"] == "gpt-test"


async def test_a_429_inside_the_effect_is_waited_out_by_the_provider(tmp_path: Path, server: LLMServer) -> None:
    server.script(error(429, retry_after=0.2), text("fine"))
    models = Models({"fast": "anthropic:claude-test"}, environ={"ANTHROPIC_BASE_URL": server.url})
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("busy"))
        assert (await answer_of(app, "asker-busy")).text == "fine"
        [done] = records(app, "asker-busy", EffectSucceeded)
    await models.aclose()
    assert done.attempts == 1  # the provider's own retry: one attempt of the effect
    assert msgspec.convert(done.result, ModelResponse).latency_ms >= 200
    assert server.by_key == {"asker-busy/1/0": 2}


async def test_provider_errors_and_malformed_answers_fail_the_effect_with_the_reason(
        tmp_path: Path, server: LLMServer) -> None:
    server.script(raw("{not json"), *[error(503)] * 2)
    provider = OpenAIProvider(server.openai_url, max_retries=1, backoff=0.01)
    models = Models({"fast": "openai:gpt-test"}, providers={"openai": provider}, retry=QUICK)
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("bad"))
        await app.dispatch(Ask("down"))
        await app.dispatch(Ask("odd", model="smart"))
        bad, down, odd = [await answer_of(app, f"asker-{n}") for n in ("bad", "down", "odd")]
        failed = records(app, "asker-bad", EffectFailed)
    await provider.aclose()
    assert (bad.ok, bad.error) == (False, "InvalidModelResponse") and "not a completion" in bad.message
    assert [f.attempts for f in failed] == [1]  # not retried: a malformed answer is not transient
    assert (down.ok, down.error) == (False, "ProviderError") and "503" in down.message
    assert (odd.ok, odd.error) == (False, "UnknownModel")
    assert server.count == 3  # one bad answer, two 503s, nothing for the unknown alias


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_request_that_never_left_is_retried_then_fails(tmp_path: Path) -> None:
    models = Models({"fast": "openai:gpt-test"}, environ={"OPENAI_BASE_URL": f"http://127.0.0.1:{_closed_port()}/v1"},
                    retry=QUICK)
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("offline"))
        answered = await answer_of(app, "asker-offline")
        retrying = records(app, "asker-offline", EffectRetrying)
        [failed] = records(app, "asker-offline", EffectFailed)
    await models.aclose()
    assert (answered.ok, answered.error) == (False, "Retryable") and "did not reach openai" in answered.message
    assert len(retrying) == 2 and failed.exhausted and failed.attempts == 3


async def test_a_lost_or_late_answer_is_reissued_with_the_same_key(tmp_path: Path, server: LLMServer) -> None:
    server.script(Reply(drop=True), text("too late", delay=2.0), text("here"))
    provider = OpenAIProvider(server.openai_url, timeout=0.6)
    models = Models({"fast": "openai:gpt-test"}, providers={"openai": provider}, retry=QUICK)
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("flaky"))
        answered = await answer_of(app, "asker-flaky")
        retrying = records(app, "asker-flaky", EffectRetrying)
    await provider.aclose()
    assert answered.text == "here"
    assert [r.error for r in retrying] == ["OutcomeUnknown", "OutcomeUnknown"]
    assert "no answer from openai" in retrying[0].message
    assert server.by_key == {"asker-flaky/1/0": 3}


def effect_bytes(app: z8.Application, stream: str) -> bytes:
    """The stored bytes of the stream's effect records (the asker's own events are its business)."""
    return b"".join(e.data for e in app.journal.read_stream(stream) if e.type.startswith("z8.Effect"))


async def test_a_request_naming_a_subject_is_sealed_with_its_response(tmp_path: Path, server: LLMServer) -> None:
    server.script(text("noted: refund for card ending 1111"))
    models = Models({"fast": "openai:gpt-test"}, environ={"OPENAI_BASE_URL": server.openai_url})
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("private", question="my card is 4111 1111 1111 1111", subject="customer-7"))
        assert (await answer_of(app, "asker-private")).text == "noted: refund for card ending 1111"
        [intent] = records(app, "asker-private", EffectIntended)
        [done] = records(app, "asker-private", EffectSucceeded)
        opened = app.journal.personal.convert(intent.request, ModelRequest)
        answer = app.journal.personal.convert(done.result, ModelResponse)
        stored = effect_bytes(app, "asker-private")
    await models.aclose()
    expected = (Message("system", "Be brief."), Message("user", "my card is 4111 1111 1111 1111"))
    assert opened.messages == expected and opened.subject == "customer-7"
    assert intent.request["messages_digest"] == digest_messages(expected)  # in clear beside the sealed messages
    assert answer.text == "noted: refund for card ending 1111" and answer.subject == "customer-7"
    assert b"4111 1111" not in stored and b"ending 1111" not in stored
    assert server.requests[0].body["messages"][1]["content"] == "my card is 4111 1111 1111 1111"


async def test_a_request_without_a_subject_is_journaled_in_clear(tmp_path: Path) -> None:
    models = Models.scripted(["plain answer"])
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("public", question="what are your opening hours"))
        assert (await answer_of(app, "asker-public")).text == "plain answer"
        [intent] = records(app, "asker-public", EffectIntended)
    assert intent.request["messages"][1]["content"] == "what are your opening hours"
    assert "subject" not in intent.request and "messages_digest" not in intent.request


async def test_an_erased_request_fails_for_good_without_being_sent(tmp_path: Path) -> None:
    scripted = ScriptedProvider(lambda req: "never")
    models = Models({"fast": "s:m"}, providers={"s": scripted})
    with pytest.raises(z8.errors.SubjectErased, match="its messages were erased"):
        await models.complete(ModelRequest("fast", z8.ERASED, subject="customer-9"))
    assert scripted.calls == []

    entered = asyncio.Event()

    class Stalled:
        name = "stalled"

        async def complete(self, request: ModelRequest, *, model_id: str, key: str) -> ModelResponse:
            entered.set()
            await asyncio.Event().wait()  # never answers: the call is pending when the app closes
            raise AssertionError("unreachable")
    blocked = Models({"fast": "s:m"}, providers={"s": Stalled()})
    async with asker_app(tmp_path, blocked) as app:
        await app.dispatch(Ask("erased", question="my card is 4111 1111 1111 1111", subject="customer-9"))
        await asyncio.wait_for(entered.wait(), 15)
        await app.erase("customer-9", by="dpo", reason="request 12")
    async with asker_app(tmp_path, models) as app:  # recovery runs the pending call: its messages are gone
        answered = await answer_of(app, "asker-erased")
        [failed] = records(app, "asker-erased", EffectFailed)
        assert app.journal.verify().ok
    assert (answered.ok, answered.error) == (False, "SubjectErased")
    assert failed.attempts == 1 and not failed.exhausted and "cannot be sent" in failed.message
    assert scripted.calls == []


async def test_the_scripted_provider_serves_the_effect_offline(tmp_path: Path) -> None:
    models = Models.scripted(["Refund issued."])
    async with asker_app(tmp_path, models) as app:
        await app.dispatch(Ask("offline"))
        assert (await answer_of(app, "asker-offline")).text == "Refund issued."
        [done] = records(app, "asker-offline", EffectSucceeded)
    response = msgspec.convert(done.result, ModelResponse)
    assert (response.provider, response.model, response.request_id) == ("scripted", "scripted-model", "scripted-1")
    assert response.usage.total_tokens > 0
    scripted = models.resolve("fast")[0]
    assert isinstance(scripted, ScriptedProvider) and scripted.calls[0].key == "asker-offline/1/0"


def test_a_provider_serves_one_event_loop_after_another() -> None:
    with LLMServer.in_thread() as running:
        running.script(text("first"), text("second"))
        provider = OpenAIProvider(running.openai_url)

        async def ask() -> str:
            try:
                return (await provider.complete(request(), model_id="m", key="k")).text
            finally:
                await provider.aclose()  # before its loop ends: its connections belong to it
        # an example or a script may call asyncio.run more than once with the same provider
        assert asyncio.run(ask()) == "first"
        assert asyncio.run(ask()) == "second"
        assert running.count == 2


# --- the server as a process -----------------------------------------------------------------


async def test_the_server_runs_as_a_process_with_a_react_responder() -> None:
    with ServerProcess(latency=0.01, steps=2) as process:
        provider = OpenAIProvider(process.openai_url)
        first = await provider.complete(request(messages=(Message("user", "hi"),)), model_id="m", key="k1")
        assert first.tool_calls[0].name == "lookup_customer"
        assert first.tool_calls[0].arguments == '{"email": "x"}'
        follow = (Message("user", "hi"), Message("assistant", "", tool_calls=first.tool_calls),
                  Message("tool", "found", tool_call_id=first.tool_calls[0].id))
        second = await provider.complete(request(messages=follow), model_id="m", key="k2")
        assert second.text == "Answer: done" and not second.tool_calls
        process.script(text("scripted"))
        assert (await provider.complete(request(), model_id="m", key="k1")).text == "scripted"
        await provider.aclose()
        stats = process.stats()
    assert stats["requests"] == 3 and stats["by_key"] == {"k1": 2, "k2": 1}
