"""Errors the journal raises, and that each says what went wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from z8.errors import JournalPathError
from z8.journal import open_journal

_AS_NOBODY = Path(__file__).parent / "_procs" / "journal_open_as_nobody.py"
_NOBODY = 65534


def test_read_only_directory_is_rejected(tmp_path: Path) -> None:
    """An existing directory this process cannot write to is refused up front, by name.

    Root ignores permission bits, so as root the check runs in a child that drops to
    nobody (65534) itself, after a warm-up open as root: ``subprocess.run(user=...)``
    cannot work here because the interpreter lives under /root (mode 0700). The
    directories sit in a world-traversable parent under /tmp (pytest's tmp_path is
    private to root). The same child opens a writable sibling,
    so the refusal is shown to come from the permissions and nothing else.
    """
    if os.geteuid() != 0:
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o555)
        try:
            with pytest.raises(JournalPathError, match="not writable") as caught:
                open_journal(read_only)
            assert str(read_only) in str(caught.value)
            assert list(read_only.iterdir()) == []
        finally:
            read_only.chmod(0o755)
        return

    parent = Path(tempfile.mkdtemp(prefix="z8-readonly-", dir="/tmp"))
    try:
        parent.chmod(0o755)
        read_only, writable = parent / "read-only", parent / "writable"
        read_only.mkdir()
        writable.mkdir()
        read_only.chmod(0o555)
        writable.chmod(0o777)
        done = subprocess.run(
            [
                sys.executable, str(_AS_NOBODY), str(_NOBODY), str(_NOBODY),
                str(parent / "warm-up"), str(read_only), str(writable),
            ],
            capture_output=True, text=True, timeout=60, cwd=parent,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        assert (report["euid"], report["egid"]) == (_NOBODY, _NOBODY)
        assert report["read_only_traversable"] and not report["read_only_writable"], report

        refused = report["read_only"]
        assert not refused["opened"], "open_journal accepted a directory it cannot write to"
        assert refused["type"] == "z8.errors.JournalPathError", refused
        assert refused["is_journal_path_error"] and refused["is_os_error"], refused
        assert "not writable" in refused["message"], refused["message"]
        assert str(read_only) in refused["message"], refused["message"]
        assert report["read_only_listing"] == [], "a refused open left files behind"
        assert list(read_only.iterdir()) == []

        assert report["writable"] == {"opened": True}, report["writable"]
        assert (writable / "data.mdb").exists()
    finally:
        shutil.rmtree(parent, ignore_errors=True)  # root: the 0o555 directory is no obstacle
