"""The examples run, and the z8 command works on a real journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from z8.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


SMALL = {name: ["--accounts", "2000", "--operations", "4000"] for name in ("fleet.py", "demo.py")}
"""Arguments that keep an example quick in the suite (its default size is for people)."""
SMALL["demo.py"] += ["--ai-runs", "60"]
SMALL["ai_fleet.py"] = ["--runs", "60"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example), "--dir", str(tmp_path), *SMALL.get(example.name, [])],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout.splitlines()[-1]


def test_demo_catches_the_tampered_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "journal_demo.py"), "--dir", str(tmp_path),
         "--accounts", "20", "--transfers", "50"], check=True, capture_output=True,
    )
    assert main(["verify", str(tmp_path / "bank")]) == 0
    assert "ok: 220 events" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "bank-tampered")]) == 1
    assert "BROKEN at position 110" in capsys.readouterr().out


def test_events_prints_json_lines(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "journal_demo.py"), "--dir", str(tmp_path),
         "--accounts", "3", "--transfers", "1"], check=True, capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-m", "z8.cli", "events", str(tmp_path / "bank"), "--stream", "account-0001", "--limit", "2"],
        capture_output=True, check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["stream"], r["version"], r["type"]) for r in rows] == [
        ("account-0001", 1, "AccountOpened"), ("account-0001", 2, "Deposited")
    ]
    assert rows[1]["data"] == {"amount": 1000}


def test_cli_reports_bad_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["verify", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


APP = '''
import os
import z8

class Echo(z8.Actor):
    async def receive(self, message, ctx):
        return f"echo {message}"

def make():
    return z8.Runtime(os.environ["APP_DIR"], durability="fast", children=[z8.child(Echo, id="echo")])
'''


def test_shell_runs_the_application_in_the_background(tmp_path: Path) -> None:
    (tmp_path / "shellapp.py").write_text(APP)
    env = {**__import__("os").environ, "APP_DIR": str(tmp_path / "j"), "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "z8.cli", "shell", "shellapp:make"],
        input='tree()\nask("/app/echo", "hi")\nevents("$system", 2)\n',
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "echo  [actor" in result.stderr or "echo  [actor" in result.stdout
    assert "'echo hi'" in result.stdout + result.stderr
    assert "z8.ActorStarted" in result.stdout
    assert "stopping the runtime" in result.stdout + result.stderr


def test_shell_names_a_bad_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shell", "no_such_module_z8:app"]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert main(["shell", "json"]) == 2
    assert "MODULE:ATTR" in capsys.readouterr().err
