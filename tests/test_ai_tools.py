"""Tools: schemas from type hints, arguments checked before any call, effects gated by policy.

The end-to-end tests run a real ``z8.Application`` on an LMDB journal in ``tmp_path`` with
a ``z8.policies.Policy`` and assert what the journal holds and what the tool saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from _polling import until

import z8
from z8.ai import Tool, ToolSpec, tool
from z8.effects import EffectContext, EffectFailed, EffectIntended, EffectSucceeded
from z8.errors import InvalidTool, PolicyDenied
from z8.policies import Grant, Policy, Rule

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- tools ---------------------------------------------------------------------------------------


class Lookup(msgspec.Struct, frozen=True):
    email: Annotated[str, msgspec.Meta(description="The customer's email address.")]
    include_orders: bool = False


class Customer(msgspec.Struct, frozen=True):
    email: str
    plan: str


SEEN: list[tuple[str, Any]] = []


@tool(capability="crm.read", kind="read")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> Customer:
    """Find a customer by email.

    The second paragraph is for people, not for the model.
    """
    SEEN.append((ctx.key, args))
    return Customer(args.email, "pro")


@tool(name="search-orders", capability="crm.search", kind="read", description="Search a customer's orders.")
def search_orders(email: str, ctx: EffectContext, limit: int = 5) -> list[str]:
    SEEN.append((ctx.key, (email, limit)))
    return [f"order-{i}" for i in range(limit)]


@tool(capability="billing.refund", kind="irreversible", idempotent=True)
async def refund(order: str, amount: float) -> str:
    """Refund an order."""
    SEEN.append(("refund", (order, amount)))
    return f"refunded {amount} on {order}"


class Address(msgspec.Struct, frozen=True):
    city: str


class Move(msgspec.Struct, frozen=True):
    to: Address


@tool
def move(args: Move) -> str:
    """Move somewhere."""
    return args.to.city


# --- schemas -------------------------------------------------------------------------------------


def test_a_struct_tool_has_its_schema_description_and_contract() -> None:
    assert isinstance(lookup_customer, Tool)
    assert lookup_customer.spec == ToolSpec("lookup_customer", "Find a customer by email.", {
        "type": "object",
        "properties": {"email": {"type": "string", "description": "The customer's email address."},
                       "include_orders": {"type": "boolean", "default": False}},
        "required": ["email"],
    })
    effect = lookup_customer.effect
    assert (effect.name, effect.capability, effect.kind, effect.request_type, effect.result_type) == (
        "lookup_customer", "crm.read", "read", Lookup, Customer)
    assert lookup_customer.args_type is Lookup and lookup_customer.result_type is Customer


def test_a_plain_signature_gets_a_derived_struct_and_the_context_stays_out_of_the_schema() -> None:
    spec = search_orders.spec
    assert spec.name == "search-orders" and spec.description == "Search a customer's orders."
    assert spec.parameters == {
        "type": "object",
        "properties": {"email": {"type": "string"}, "limit": {"type": "integer", "default": 5}},
        "required": ["email"],
        "additionalProperties": False,
    }
    assert search_orders.args_type.__name__ == "SearchOrdersArgs"
    assert search_orders.effect.request_type is search_orders.args_type
    assert refund.spec.parameters["required"] == ["order", "amount"]
    assert (refund.capability, refund.effect.kind, refund.effect.idempotent) == ("billing.refund", "irreversible",
                                                                                 True)


def test_nested_structs_keep_their_definitions() -> None:
    parameters = move.spec.parameters
    assert parameters["properties"]["to"] == {"$ref": "#/$defs/Address"}
    assert parameters["$defs"]["Address"]["properties"] == {"city": {"type": "string"}}
    assert move.parse('{"to": {"city": "Lyon"}}') == (Move(Address("Lyon")), None)
    assert move.capability == "move" and move.effect.kind == "irreversible"  # the effect defaults


# --- parsing the model's arguments ----------------------------------------------------------------


def test_valid_arguments_parse_to_the_struct() -> None:
    assert lookup_customer.parse('{"email": "a@b.c"}') == (Lookup("a@b.c"), None)
    args, problem = search_orders.parse('{"email": "a@b.c", "limit": 2}')
    assert problem is None and (args.email, args.limit) == ("a@b.c", 2)
    assert move.parse("") == (None, "invalid arguments for tool 'move': Object missing required field `to`")


@pytest.mark.parametrize(("arguments", "problem"), [
    ('{"email": ', "the arguments for tool 'search-orders' are not valid JSON"),
    ("not json at all", "are not valid JSON"),
    ('{"email": 42}', "Expected `str`, got `int` - at `$.email`"),
    ('{"email": "a@b.c", "limit": "5"}', "Expected `int`, got `str` - at `$.limit`"),
    ('{"limit": 5}', "Object missing required field `email`"),
    ('{"email": "a@b.c", "drop_table": true}', "Object contains unknown field `drop_table`"),
    ('["a@b.c"]', "Expected `object`, got `array`"),
])
def test_invalid_arguments_come_back_as_error_text_for_the_model(arguments: str, problem: str) -> None:
    args, error = search_orders.parse(arguments)
    assert args is None and error is not None and problem in error


# --- declarations that cannot work -----------------------------------------------------------------


def test_bad_declarations_are_refused_with_the_reason() -> None:
    def untyped(email, limit: int = 5) -> str:  # type: ignore[no-untyped-def]
        return ""

    with pytest.raises(InvalidTool, match="parameter 'email' has no type hint"):
        tool(untyped)

    def star(*emails: str) -> str:
        return ""

    with pytest.raises(InvalidTool, match="parameter 'emails' must be a plain or keyword parameter"):
        tool(star)
    with pytest.raises(InvalidTool, match="tool name 'look up'"):
        tool(name="look up")(refund.fn)
    with pytest.raises(InvalidTool, match="a reversible effect declares its compensation"):
        tool(kind="reversible")(refund.fn)

    def unresolved(args: NoSuchType) -> str:  # type: ignore[name-defined]  # noqa: F821
        return ""

    with pytest.raises(InvalidTool, match="type hints cannot be resolved"):
        tool(unresolved)


def test_a_tool_called_directly_is_refused_and_results_render_as_text() -> None:
    with pytest.raises(PolicyDenied, match="called directly"):
        lookup_customer(Lookup("a@b.c"), None)
    assert lookup_customer.result_text(Customer("a@b.c", "pro")) == '{"email":"a@b.c","plan":"pro"}'
    assert lookup_customer.result_text("plain") == "plain"


# --- through an application, gated by a policy -------------------------------------------------------


TOOLS = {t.name: t for t in (lookup_customer, search_orders, refund, move)}


class Use(msgspec.Struct, frozen=True, tag=True):
    helper_id: str
    tool: str
    arguments: str


class ToolResult(msgspec.Struct, frozen=True, tag=True):
    tool: str
    ok: bool
    text: str = ""
    error: str = ""


class HelperState(msgspec.Struct):
    results: list[ToolResult] = []


class Helper(z8.Agent):
    State = HelperState
    agent_effects = [t.effect for t in TOOLS.values()]

    def decide(self, state: HelperState, command: Any, ctx: Any) -> Any:
        if isinstance(command, Use):
            chosen = TOOLS[command.tool]
            args, problem = chosen.parse(command.arguments)
            if problem is not None:  # back to the model as a tool error; nothing runs
                return z8.Decision(events=[ToolResult(command.tool, False, error=problem)])
            return z8.Decision(events=[], effects=[z8.Call(chosen.effect, args)])
        if isinstance(command, EffectSucceeded):
            text = TOOLS[command.effect].result_text(command.result)
            return z8.Decision(events=[ToolResult(command.effect, True, text=text)])
        if isinstance(command, EffectFailed):
            return z8.Decision(events=[ToolResult(command.effect, False, error=command.error)])
        return z8.reject(f"unknown command {type(command).__name__}")

    def evolve(self, state: HelperState, event: Any) -> HelperState:
        if isinstance(event, ToolResult):
            return HelperState([*state.results, event])
        return state


def helper_app(tmp_path: Path, policy: Policy) -> z8.Application:
    router = z8.Router()
    router.identify(Helper, by="helper_id", prefix="helper-")
    router.dispatch(Use, to=Helper)
    return z8.Application(router, tmp_path / "journal", types=z8.TypeRegistry([Use, ToolResult]), policy=policy)


async def results_of(app: z8.Application, stream: str, count: int = 1) -> list[ToolResult]:
    def read() -> Any:
        found = [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == "ToolResult"]
        return found if len(found) >= count else None
    return await until(read, timeout=10)


def intents(app: z8.Application, stream: str) -> list[EffectIntended]:
    return [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == "z8.EffectIntended"]


@pytest.fixture(autouse=True)
def _reset() -> None:
    SEEN.clear()


async def test_a_tool_needs_a_grant_for_its_capability(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Helper", ("crm.read",)),))
    async with helper_app(tmp_path, policy) as app:
        await app.dispatch(Use("a", "lookup_customer", '{"email": "a@b.c"}'))
        await app.dispatch(Use("b", "search-orders", '{"email": "a@b.c", "limit": 2}'))
        [granted] = await results_of(app, "helper-a")
        [denied] = await results_of(app, "helper-b")
        [intent] = intents(app, "helper-b")
        journaled = intents(app, "helper-a")[0].request
    assert granted == ToolResult("lookup_customer", True, text='{"email":"a@b.c","plan":"pro"}')
    assert journaled == {"email": "a@b.c", "include_orders": False}  # the parsed arguments are the intent
    assert denied == ToolResult("search-orders", False, error="PolicyDenied")
    assert (intent.verdict, intent.capability) == ("deny", "crm.search")
    assert SEEN == [("helper-a/1/0", Lookup("a@b.c"))]  # the denied tool never ran


async def test_a_granted_plain_tool_runs_with_its_arguments_and_context(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Helper", ("crm.*",)),))
    async with helper_app(tmp_path, policy) as app:
        await app.dispatch(Use("a", "search-orders", '{"email": "a@b.c", "limit": 2}'))
        [result] = await results_of(app, "helper-a")
    assert result == ToolResult("search-orders", True, text='["order-0","order-1"]')
    assert SEEN == [("helper-a/1/0", ("a@b.c", 2))]


async def test_invalid_arguments_never_reach_the_tool_or_the_journal_as_an_intent(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Helper", ("crm.*",)),))
    async with helper_app(tmp_path, policy) as app:
        await app.dispatch(Use("a", "search-orders", '{"email": 42}'))
        [result] = await results_of(app, "helper-a")
        assert intents(app, "helper-a") == []
    assert not result.ok and "Expected `str`, got `int`" in result.error
    assert SEEN == []


async def test_a_tool_that_needs_approval_waits_for_it(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Helper", ("billing.*",)),),
                    rules=(Rule("refunds", "approval", capability="billing.refund", approvers=("lead",)),))
    async with helper_app(tmp_path, policy) as app:
        await app.dispatch(Use("a", "refund", '{"order": "o-1", "amount": 12.5}'))
        parked = [("helper-a/1/0", "parked")]
        await until(lambda: [(v.effect_id, v.status) for v in app.pending_effects()] == parked, what="the park")
        [intent] = intents(app, "helper-a")
        assert intent.verdict == "approval" and SEEN == []
        await app.approve("helper-a/1/0", by="lead")
        [result] = await results_of(app, "helper-a")
    assert result == ToolResult("refund", True, text="refunded 12.5 on o-1")
    assert SEEN == [("refund", ("o-1", 12.5))]
