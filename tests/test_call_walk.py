"""scripts/call_walk.py refuses a bad option in one line, before it profiles anything."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _main():
    spec = importlib.util.spec_from_file_location("call_walk", ROOT / "scripts" / "call_walk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("argv, message", [
    (["--depth", "two", "--"], "--depth two is not a positive whole number"),
    (["--depth", "0", "--"], "--depth 0 is not a positive whole number"),
    (["--depth"], "--depth needs a value"),
    (["--start", "compare.run", "--"], "--start compare.run is not FILE:FUNCTION"),
    (["--start", "l2l/modes/nowhere.py:run", "--"], "which is not a file"),
])
def test_a_bad_option_is_one_line(argv, message, capsys):
    assert _main()(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_start_that_never_runs_is_named(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the script sets train.py's argv
    monkeypatch.setattr(sys, "path", list(sys.path))  # and puts ROOT first
    # --help ends train.py before run(): the walk's start is never reached
    assert _main()([str(ROOT), "--start", "l2l/modes/compare.py:run", "--", "--help"]) == 2
    err = capsys.readouterr().err
    assert "run() of l2l/modes/compare.py was never called in this run" in err
