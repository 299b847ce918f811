"""The ``z8`` command: look into a journal from a shell.

    z8 verify PATH [--stream S]     walk the hash chain (or one stream's events); exit 1 if it is broken
    z8 verify --bundle FILE [--key FINGERPRINT]
                                    check an exported run bundle with no journal: exit 0 intact,
                                    1 altered (or signed by another key than --key), 2 not a bundle
    z8 audit PATH (--stream S | --correlation C) [--markdown | --bundle OUT]
                                    the run record of an agent or a request, as Markdown (default)
                                    or as a sealed bundle; appends nothing to the journal (a
                                    bundle's export creates the journal's audit.key the first
                                    time); exit 1 if the run's records fail their checks
    z8 events PATH [--stream S] [--from N] [--limit N]
                                    print events as JSON lines (payloads decoded generically)
    z8 effects PATH [--status S]    list effects without a final outcome (stuck, dead, parked…)
                                    as JSON lines
    z8 shell MODULE:ATTR            start the Runtime named there on a background thread and
                                    open a Python REPL bound to it (tree(), events(stream)…)
    z8 runs PATH [--status S]       list AI runs (z8.ai) with their status as JSON lines
    z8 replay PATH RUN_ID --agent MODULE:CLASS
                                    rebuild an AI run from the journal with that agent's code,
                                    calling no model and no tool: exit 0 if it matches the record,
                                    1 if it diverged (the first differing step is printed)
"""

from __future__ import annotations

import argparse
import code
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from z8.actors._ledger import RECORD_TYPES, EffectIntended, status_after
from z8.app._run_record import ERASED_TEXT, SEALED_TEXT
from z8.effects import CURSOR
from z8.errors import InvalidArgument, Z8Error
from z8.journal import ERASED, Envelope, open_journal
from z8.journal._personal import ERASED_EXT, SEALED_EXT

_decode_any = msgspec.msgpack.Decoder().decode


def _personal_text(value: Any) -> Any:
    """Personal data in a printed row: what run records show for it (never the plaintext)."""
    if value is ERASED or (isinstance(value, msgspec.msgpack.Ext) and value.code == ERASED_EXT):
        return ERASED_TEXT
    if isinstance(value, msgspec.msgpack.Ext) and value.code == SEALED_EXT:
        return SEALED_TEXT
    raise NotImplementedError(f"cannot print a {type(value).__name__} as JSON")


_json = msgspec.json.Encoder(enc_hook=_personal_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="z8", description="z8: durable agents on an event journal")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify a journal's hash chain, or an exported run bundle")
    verify.add_argument("path", nargs="?", help="the journal directory")
    verify.add_argument("--stream", help="only this stream's events")
    verify.add_argument("--bundle", metavar="FILE", help="check this exported run bundle instead (no journal needed)")
    verify.add_argument("--key", metavar="FINGERPRINT", help="with --bundle: the signer's key fingerprint (or public key)")
    audit = commands.add_parser("audit", help="print or export the sealed run record of a stream or a request")
    audit.add_argument("path")
    audit.add_argument("--stream", help="the agent's stream (its whole history)")
    audit.add_argument("--correlation", help="the request's correlation id (across streams)")
    output = audit.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true", help="print the record as Markdown (the default)")
    output.add_argument("--bundle", metavar="OUT", help="write the sealed JSON bundle to OUT")
    events = commands.add_parser("events", help="print a journal's events as JSON lines")
    events.add_argument("path")
    events.add_argument("--stream", help="only this stream (in version order)")
    events.add_argument("--from", dest="start", type=int, default=1, help="first position (or version with --stream)")
    events.add_argument("--limit", type=int, default=None)
    effects = commands.add_parser("effects", help="list effects without a final outcome as JSON lines")
    effects.add_argument("path")
    effects.add_argument("--status", choices=["intended", "parked", "unknown", "stuck", "dead"],
                         help="only effects in this status")
    shell = commands.add_parser("shell", help="run an application in the background and open a REPL on it")
    shell.add_argument("target", help="MODULE:ATTR naming a z8.Runtime, or a function that returns one")
    _ai_commands(commands)
    return parser


def _as_json(envelope: Envelope) -> bytes:
    row = msgspec.structs.asdict(envelope)
    row["data"] = _decode_any(envelope.data)
    row["prev_hash"], row["hash"] = envelope.prev_hash.hex(), envelope.hash.hex()
    return _json.encode(row)


def _open_effects(journal: Any, status: str | None) -> list[dict[str, Any]]:
    """Fold the effect records after the outbox's checkpoint: what still has no final outcome."""
    open_: dict[str, dict[str, Any]] = {}
    for envelope in journal.read_all(journal.cursor(CURSOR) + 1):
        cls = RECORD_TYPES.get(envelope.type)
        if cls is None:
            continue
        record = msgspec.msgpack.decode(envelope.data, type=cls)
        effect_id = getattr(record, "effect_id", None)
        if effect_id is None:
            continue
        if isinstance(record, EffectIntended):
            row = open_[effect_id] = {"effect_id": effect_id, "effect": record.effect, "kind": record.kind,
                                      "stream": envelope.stream, "position": envelope.position,
                                      "status": status_after(None, record)}
        elif (row := open_.get(effect_id)) is not None:
            row["status"] = status_after(row["status"], record)
        else:
            continue
        row["last"] = envelope.type
        if row["status"] is None:
            del open_[effect_id]
    return [row for row in open_.values() if status is None or row["status"] == status]


def _load_runtime(target: str) -> Any:
    from z8.supervision import Runtime

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise InvalidArgument(f"name the application as MODULE:ATTR (e.g. myapp.main:runtime), got {target!r}")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(f"cannot load {target!r}: {exc}") from exc
    runtime = found if isinstance(found, Runtime) else found()
    if not isinstance(runtime, Runtime):
        raise InvalidArgument(f"{target!r} is not a z8.Runtime (nor returns one), got {type(runtime).__name__}")
    return runtime


def _shell(target: str) -> int:
    handle = _load_runtime(target).run_in_thread()
    journal = handle.runtime.journal

    def events(stream: str, limit: int = 20) -> None:
        """Print the last ``limit`` events of ``stream``."""
        for envelope in reversed(journal.read_stream(stream, backward=True, limit=limit)):
            try:
                payload: Any = journal.decode(envelope)
            except Z8Error:
                payload = _decode_any(envelope.data)
            print(f"#{envelope.position} v{envelope.version} {envelope.type} {payload}")

    helpers = {
        "runtime": handle, "tree": handle.tree, "lookup": handle.lookup, "tell": handle.tell,
        "ask": handle.ask, "spawn": handle.spawn, "stop": handle.stop, "events": events, "journal": journal,
    }
    banner = (
        f"z8 shell: {target} is running (root /{handle.runtime.name}).\n"
        "  tree()  lookup(path)  tell(path, msg)  ask(path, msg)  spawn(Cls, ...)  stop(path)  events(stream)\n"
        "Ctrl-D stops the runtime and exits."
    )
    try:
        code.interact(banner=banner, local=helpers, exitmsg="z8 shell: stopping the runtime")
    finally:
        handle.close()
    return 0


def _verify_bundle(bundle: str | None, key: str | None, path: str | None) -> int:
    from z8.audit import verify_bundle

    if bundle is None or path is not None:
        print("z8: verify takes a journal PATH or --bundle FILE (not both)", file=sys.stderr)
        return 2
    try:
        report = verify_bundle(bundle, key=key)
    except Z8Error as exc:
        print(f"z8: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


def _audit(journal: Any, args: argparse.Namespace) -> int:
    from z8.app._seal import existing_signing_key
    from z8.audit import Audit

    if args.stream is None and args.correlation is None:
        print("z8: audit needs --stream S or --correlation C", file=sys.stderr)
        return 2
    # Printing never writes to the journal directory: it signs only with a key that
    # exists. A bundle must be signed, so its export creates the key the first time.
    key = existing_signing_key(journal)
    record = Audit(journal, signing_key=key).run(args.stream, correlation=args.correlation,
                                                 sign=key is not None or args.bundle is not None)
    if args.bundle is not None:
        record.export(args.bundle)
        seal = record.seal
        print(f"wrote {args.bundle}: {seal.events} events, digest {seal.digest[:16]}…, signed by key "
              f"{seal.fingerprint}" + ("" if seal.intact else f"; the journal is BROKEN at position "
                                       f"{seal.first_bad_position}: {seal.problem}"))
    else:
        sys.stdout.write(record.markdown())
    return 0 if record.seal.intact else 1


# --- z8.ai: runs and replay ---------------------------------------------------------------------

_AI_COMMANDS = ("runs", "replay")


def _ai_commands(commands: Any) -> None:
    runs = commands.add_parser("runs", help="list AI runs with their status as JSON lines")
    runs.add_argument("path")
    runs.add_argument("--status", help="only runs in this status (answered, waiting, running, failed…)")
    replay = commands.add_parser("replay", help="rebuild an AI run from the journal, calling no model and no tool")
    replay.add_argument("path")
    replay.add_argument("run_id")
    replay.add_argument("--agent", required=True, metavar="MODULE:CLASS", help="the run's z8.ai.Agent class")


def _ai_agent(target: str) -> Any:
    from z8.ai import Agent

    module_name, _, attr = target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr) if module_name and attr else None
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(f"cannot load {target!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Agent)):
        raise InvalidArgument(f"--agent names a z8.ai.Agent subclass as MODULE:CLASS, got {target!r}")
    return found


def _ai_main(args: argparse.Namespace) -> int:
    """``z8 runs`` and ``z8 replay``: read-only, the journal is opened and nothing is appended."""
    from z8 import ai

    out = sys.stdout.buffer
    try:
        agent = _ai_agent(args.agent) if args.command == "replay" else None
        with open_journal(args.path) as journal:
            if args.command == "runs":
                for status in ai.runs(journal):
                    if args.status is None or status.status == args.status:
                        out.write(_json.encode(status) + b"\n")
                out.flush()
                return 0
            report = ai.replay(journal, args.run_id, agent, strict=False)
    except Z8Error as exc:
        print(f"z8: {exc}", file=sys.stderr)
        return 2
    if report.matched:
        print(f"run {report.run_id!r} replayed: {report.decisions} decisions, {report.events} events, "
              f"{report.steps} steps rebuilt ({report.model_calls} model and {report.tool_calls} tool calls read "
              f"from the journal, none made); status {report.status}; final state digest {report.state_digest} "
              "matches the record")
        return 0
    print(report.divergence)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``z8`` command; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "shell":
        try:
            return _shell(args.target)
        except Z8Error as exc:
            print(f"z8: {exc}", file=sys.stderr)
            return 2
    if args.command == "verify" and (args.bundle is not None or args.path is None):
        return _verify_bundle(args.bundle, args.key, args.path)
    if args.command in _AI_COMMANDS:
        return _ai_main(args)
    try:
        with open_journal(args.path) as journal:
            if args.command == "verify":
                report = journal.verify(args.stream)
                print(report)
                return 0 if report.ok else 1
            if args.command == "audit":
                return _audit(journal, args)
            if args.command == "effects":
                out = sys.stdout.buffer
                for row in _open_effects(journal, args.status):
                    out.write(_json.encode(row) + b"\n")
                out.flush()
                return 0
            found = (
                journal.read_stream(args.stream, args.start, limit=args.limit)
                if args.stream else journal.read_all(args.start, args.limit)
            )
            out = sys.stdout.buffer
            for envelope in found:
                out.write(_as_json(envelope) + b"\n")
            out.flush()
            return 0
    except Z8Error as exc:
        print(f"z8: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
