"""A supervision tree that heals itself, and the journal that remembers how.

    python examples/supervision_tree.py [--dir DIR]

A bank branch: two tellers under a one_for_one supervisor, and a vault with its
ledger under rest_for_one (if the vault crashes, the ledger that depends on it is
restarted after it). A teller is handed a malformed request and crashes; its
supervisor restarts it at once, the caller gets ``ActorDied``, the next request
works. The vault's state machine refuses an illegal transition. Then the tree is
printed, and ``$system`` is read back: the restart is traced to the crash that
caused it through the journal's causation links.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

import z8
from z8.actors import register_system_types
from z8.errors import ActorDied, TransitionBlocked
from z8.journal import TypeRegistry, open_journal


class Teller(z8.Actor):
    """Counts deposits; crashes on a request it cannot parse."""

    def __init__(self) -> None:
        self.deposits = 0

    async def receive(self, message: dict, ctx: z8.ActorContext) -> int:
        self.deposits += int(message["amount"])  # a malformed request raises here
        return self.deposits


class Vault(z8.Actor):
    """Opens and closes; the machine forbids opening an open vault."""

    actor_machine = z8.Machine.of("closed", {"closed": ["open"], "open": ["closed"]})

    async def receive(self, message: str, ctx: z8.ActorContext) -> str | None:
        try:
            ctx.transition(message)
        except TransitionBlocked as blocked:  # journaled in $system; the vault stays as it was
            return f"refused: {blocked}"
        return ctx.state


class Ledger(z8.Actor):
    async def receive(self, message: str, ctx: z8.ActorContext) -> str:
        return f"ledger noted {message}"


def branch(path: Path) -> z8.Runtime:
    return z8.Runtime(
        path,
        name="branch",
        children=[
            z8.child(z8.supervisor(z8.child(Teller, id="alice"), z8.child(Teller, id="bob")), id="tellers"),
            z8.child(
                z8.supervisor(z8.child(Vault, id="vault"), z8.child(Ledger, id="ledger"), strategy="rest_for_one"),
                id="back-office",
            ),
        ],
    )


async def main(directory: Path) -> bool:
    async with branch(directory / "branch") as runtime:
        alice = runtime.lookup("/branch/tellers/alice")
        print("alice:", await alice.ask({"amount": "100"}), await alice.ask({"amount": "50"}))
        try:
            await alice.ask({"amount": "a lot"})
        except ActorDied as died:
            print(f"alice crashed on a malformed request: {died.cause!r}")
        print("alice after her restart (a fresh incarnation):", await alice.ask({"amount": "10"}))

        vault = runtime.lookup("/branch/back-office/vault")
        print("vault:", await vault.ask("open"))
        answer = await vault.ask("open")
        blocked = answer.startswith("refused") and vault.state == "open"
        print("vault:", answer)
        await asyncio.sleep(0.05)  # supervisors restart on their own schedule; let them settle
        print()
        print(runtime.tree())
        recovered = await alice.ask({"amount": "1"}) == 11

    types = register_system_types(TypeRegistry())
    with open_journal(directory / "branch", types=types) as journal:
        system = journal.read_stream("$system")
        restarts = [e for e in system if e.type == "z8.ActorRestarted"]
        blocked = blocked and any(e.type == "z8.TransitionRefused" for e in system)
        print(f"\n$system holds {journal.stream_version('$system')} events; the first restart's causes:")
        for envelope in journal.causes(restarts[0].event_id):
            print(f"  #{envelope.position} {envelope.type:<22} {journal.decode(envelope)}")
        traced = [e.type for e in journal.causes(restarts[0].event_id)][-2:] == ["z8.ActorCrashed", "z8.ActorRestarted"]
        verified = journal.verify().ok
    ok = recovered and blocked and traced and verified
    print("\nsupervision demo " + ("passed" if ok else "FAILED"))
    return ok


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory)")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="z8-supervision-"))
    ok = asyncio.run(main(directory))
    if args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    cli()
