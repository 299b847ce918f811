"""Child for tests/test_journal_errors.py: open journals as an unprivileged user.

Usage (as root): python journal_open_as_nobody.py UID GID WARMUP_DIR READ_ONLY_DIR WRITABLE_DIR

Root ignores permission bits, so a read-only directory proves nothing to it. This
child starts as root (the interpreter may live where only root can reach it, e.g.
under /root/.pyenv, so ``subprocess.run(user=...)`` cannot exec it), opens and
closes a journal in WARMUP_DIR so that every module ``open_journal`` imports lazily
(py-lmdb 3 imports ``lmdb._envid`` at first open) is loaded while it still can read
them, then drops to UID/GID for good and tries both directories. It prints one JSON line describing what happened.
"""

from __future__ import annotations

import json
import os
import sys

import z8.errors
from z8.journal import open_journal


def attempt(path: str) -> dict[str, object]:
    try:
        journal = open_journal(path, durability="fast")
    except Exception as exc:  # report anything: the parent decides
        return {
            "opened": False,
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "is_journal_path_error": isinstance(exc, z8.errors.JournalPathError),
            "is_os_error": isinstance(exc, OSError),
            "message": str(exc),
        }
    journal.close()
    return {"opened": True}


def main() -> None:
    uid, gid = int(sys.argv[1]), int(sys.argv[2])
    warmup, read_only, writable = sys.argv[3:6]
    warmed = attempt(warmup)
    if warmed != {"opened": True}:
        raise SystemExit(f"warm-up open as root failed: {warmed}")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # after this, regaining root is impossible
    report = {
        "euid": os.geteuid(),
        "egid": os.getegid(),
        "read_only_traversable": os.access(read_only, os.R_OK | os.X_OK),
        "read_only_writable": os.access(read_only, os.W_OK),
        "read_only": attempt(read_only),
        "read_only_listing": sorted(os.listdir(read_only)),
        "writable": attempt(writable),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
