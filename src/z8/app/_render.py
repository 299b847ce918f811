"""A run record as Markdown, for the person who has to read it (an auditor, on-call)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ._run_record import EventSummary, RunRecord

__all__ = ["render_markdown"]

_CELL = 90


def render_markdown(record: RunRecord) -> str:
    """The whole record: one section per question an auditor asks, then the seal."""
    parts = [
        _title(record), _trigger(record), _facts(record), _reasoning(record), _verdicts(record),
        _approvals(record), _effects(record), _outcome(record), _personal(record), _seal(record),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _title(record: RunRecord) -> str:
    what = f"stream `{record.stream}`" if record.stream is not None else ""
    if record.correlation is not None:
        what += (" · " if what else "") + f"correlation `{record.correlation}`"
    name = record.stream or record.correlation or "run"
    span = ""
    if record.events:
        span = f" (positions {record.events[0].position}–{record.events[-1].position})"
    journal = f" · journal `{record.journal_id}`" if record.journal_id else ""
    return (f"# Run record: {_text(name)}\n\n"
            f"{what}{journal} · {len(record.events)} events{span} · sealed {record.sealed_at}")


def _trigger(record: RunRecord) -> str:
    first = record.trigger
    if first is None:
        return "## What triggered it\n\nNo events: nothing ran."
    lines = [
        "## What triggered it",
        "",
        f"- **{_text(first.type)}** — {_event_ref(first)}, {first.time}",
        f"- Caused by: `{first.causation_id or '—'}` · actor `{first.actor or '—'}` · "
        f"correlation `{first.correlation_id or '—'}`",
        f"- Data: {_value(first.data, 400)}",
    ]
    return "\n".join(lines)


def _facts(record: RunRecord) -> str:
    if not record.facts:
        return "## Facts weighed\n\nNo effect results were read or decided on."
    rows = [[f"`{f.effect}`", f.kind, _value(f.request), _value(f.result),
             ", ".join(f.decided) or "—", f"#{f.position}"] for f in record.facts]
    return "## Facts weighed\n\n" + _table(["Effect", "Kind", "Request", "Result", "Decided with it", "Event"], rows)


def _reasoning(record: RunRecord) -> str:
    if not record.reasoning:
        return "## Reasoning\n\nNo reasoning was journaled (fields `reasoning`, `rationale`, `explanation`, `reason`)."
    quotes = [f"> {_text(r.text, 2000)}\n>\n> — `{r.type}.{r.field}`, event #{r.position}" for r in record.reasoning]
    return "## Reasoning\n\n" + "\n\n".join(quotes)


def _verdicts(record: RunRecord) -> str:
    if not record.verdicts and not record.policy_changes:
        return "## Policy verdicts\n\nNo effect was asked for, so no policy was consulted."
    rows = []
    for v in record.verdicts:
        gate = f"{', '.join(v.approvers) or 'anyone'} (quorum {v.quorum})" if v.verdict == "approval" else "—"
        rows.append([f"`{v.effect_id}`", f"`{v.effect}`", f"**{v.verdict}**", v.rule or "default",
                     v.policy_version or "—", gate, _text(v.reason) or "—"])
    text = "## Policy verdicts\n\n" + _table(
        ["Effect id", "Effect", "Verdict", "Rule", "Policy version", "Approvers", "Reason"], rows)
    for change in record.policy_changes:
        text += f"\n\n- Policy migrated: {_value(change, 300)}"
    return text


def _approvals(record: RunRecord) -> str:
    if not record.approvals:
        return "## Approvals\n\nNo human approval was given or needed."
    rows = [[f"`{a.effect_id}`", _text(a.by), "approved" if a.approve else "**denied**",
             "yes" if a.final else "no (quorum not yet met)", _text(a.reason) or "—", a.time, f"#{a.position}"]
            for a in record.approvals]
    return "## Approvals\n\n" + _table(["Effect id", "By", "Verdict", "Completes quorum", "Reason", "Time", "Event"],
                                       rows)


def _effects(record: RunRecord) -> str:
    if not record.effects:
        return "## Effects and their outcomes\n\nNo effects."
    rows = []
    for e in record.effects:
        answer = _value(e.result) if e.status == "succeeded" else _text(f"{e.error or ''} {e.message}".strip()) or "—"
        rows.append([f"`{e.effect_id}`", f"`{e.effect}`", e.kind, e.verdict, ", ".join(e.approved_by) or "—",
                     f"**{e.status}**", str(e.attempts), answer])
    return "## Effects and their outcomes\n\n" + _table(
        ["Effect id", "Effect", "Kind", "Verdict", "Approved by", "Outcome", "Attempts", "Result / error"], rows)


def _outcome(record: RunRecord) -> str:
    last = record.outcome
    if last is None:
        return "## Outcome\n\nNo domain event was journaled."
    return (f"## Outcome\n\n**{_text(last.type)}** — {_event_ref(last)}, {last.time}\n\n"
            f"{_value(last.data, 1000)}")


def _personal(record: RunRecord) -> str:
    if not record.personal_data_erased:
        return ""
    places = ", ".join(f"`{p}`" for p in record.erased[:20]) + (" …" if len(record.erased) > 20 else "")
    return ("## Personal data\n\nPersonal data in this run was erased at its subject's request; it shows as "
            f"`[erased]`. The seal still covers the stored (encrypted) records. Erased: {places}.")


def _seal(record: RunRecord) -> str:
    seal = record.seal
    if seal is None:
        return "## Seal\n\nNot sealed."
    state = "intact" if seal.intact else (
        f"**BROKEN at position {seal.first_bad_position}"
        + (f" (v{seal.first_bad_version})" if seal.first_bad_version is not None else "")
        + f"**: {_text(seal.problem)}")
    lines = [
        "## Seal",
        "",
        f"- Records sealed: {seal.events}; each record's own BLAKE2b-256 hash, order and "
        f"{seal.links} chain link(s) between consecutive records checked at export: {state}",
        f"- Journal head at export: #{seal.head_position} `{seal.head_hash}`",
        f"- Summary hash: `{seal.summary_hash}`",
        f"- Digest (BLAKE2b-256): `{seal.digest}`",
    ]
    if seal.signature:
        lines += [
            f"- Signature (Ed25519): `{seal.signature}`",
            f"- Signing key: fingerprint **`{seal.fingerprint}`**, public key `{seal.public_key}`",
            f"- Check it offline: `z8 verify --bundle <file> --key {seal.fingerprint}`",
        ]
    else:
        lines.append("- **Not signed** (the journal has no audit key yet; exporting a bundle creates it)")
    return "\n".join(lines)


# --- cells ---------------------------------------------------------------------------------


def _event_ref(event: EventSummary) -> str:
    return f"event #{event.position} (`{_text(event.stream)}` v{event.version})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _value(value: Any, limit: int = _CELL) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return _text(value, limit)
    return "`" + _text(msgspec.json.encode(value).decode(), limit).replace("`", "'") + "`"


def _text(value: Any, limit: int = _CELL) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
