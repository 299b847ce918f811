"""The ``z8`` command: look into a journal from a shell.

    z8 verify PATH                  walk the hash chain; exit 1 if it is broken
    z8 events PATH [--stream S] [--from N] [--limit N]
                                    print events as JSON lines (payloads decoded generically)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

from z8.errors import Z8Error
from z8.journal import Envelope, open_journal

_decode_any = msgspec.msgpack.Decoder().decode
_json = msgspec.json.Encoder()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="z8", description="z8: durable agents on an event journal")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify a journal's hash chain")
    verify.add_argument("path")
    events = commands.add_parser("events", help="print a journal's events as JSON lines")
    events.add_argument("path")
    events.add_argument("--stream", help="only this stream (in version order)")
    events.add_argument("--from", dest="start", type=int, default=1, help="first position (or version with --stream)")
    events.add_argument("--limit", type=int, default=None)
    return parser


def _as_json(envelope: Envelope) -> bytes:
    row = msgspec.structs.asdict(envelope)
    row["data"] = _decode_any(envelope.data)
    row["prev_hash"], row["hash"] = envelope.prev_hash.hex(), envelope.hash.hex()
    return _json.encode(row)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``z8`` command; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        with open_journal(args.path) as journal:
            if args.command == "verify":
                report = journal.verify()
                print(report)
                return 0 if report.ok else 1
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
