"""``scripts/validation_curves.py`` draws a run from its directory or from a carried latest.pt."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / "docs" / "results" / "mnist" / "paper_lstm_s0_latest.pt"


def test_a_run_directory_and_a_carried_file_draw_the_same_curve(tmp_path):
    main = runpy.run_path(str(ROOT / "scripts" / "validation_curves.py"))["main"]
    run = tmp_path / "paper_lstm_s0"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(CARRIED, run / "checkpoints" / "latest.pt")
    main([str(run), "--out", str(tmp_path / "a.png")])
    main([str(CARRIED), "--out", str(tmp_path / "b.png")])
    a, b = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b  # same label, same points
