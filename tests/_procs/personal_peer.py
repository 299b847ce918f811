"""A second process sharing a journal with personal data (tests/test_personal.py).

Commands on stdin, one per line, each answered by one line on stdout:
``append STREAM SUBJECT NOTE`` -> ``ok``; ``read STREAM`` -> the decoded notes (repr);
``quit``.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec

import z8
from z8.journal import TypeRegistry, open_journal


class Note(msgspec.Struct, frozen=True):
    who: z8.Subject
    text: z8.Personal[str]


def main() -> None:
    journal = open_journal(sys.argv[1], types=TypeRegistry([Note]), durability="fast")
    loop = asyncio.new_event_loop()
    print("READY", flush=True)
    for line in sys.stdin:
        command, *args = line.rstrip("\n").split(" ", 3)
        if command == "append":
            stream, subject, text = args
            loop.run_until_complete(journal.append(stream, [Note(subject, text)]))
            print("ok", flush=True)
        elif command == "read":
            print(repr([journal.decode(e).text for e in journal.read_stream(args[0])]), flush=True)
        elif command == "quit":
            break
    journal.close()
    loop.close()


if __name__ == "__main__":
    main()
