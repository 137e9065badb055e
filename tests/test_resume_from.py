"""``resume_from=``: a run carried between machines (its ``latest.pt`` committed or copied)
resumes in a fresh run directory exactly where it stopped, and never rewinds a run that moved on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2l import checkpoint

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["mode=meta_train", "meta.horizon=10", "meta.unroll=5", "meta.batch_size=2",
         "meta.val_instances=4", "meta.val_every=2", "meta.meta_lr=0.01", "logger=none",
         "progress=false", "threads=1"]
pytestmark = pytest.mark.slow


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *QUICK, *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=180)


def _latest(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / "checkpoints" / "latest.pt")


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    """A run stopped after 3 of its tasks: its latest.pt is what gets carried."""
    run = tmp_path_factory.mktemp("first")
    assert _train(["meta.iterations=3", f"hydra.run.dir={run}"], run).returncode == 0
    return run


def test_a_carried_latest_resumes_bit_for_bit_in_a_fresh_run_directory(tmp_path, first):
    straight, moved = tmp_path / "straight", tmp_path / "moved"
    assert _train(["meta.iterations=5", f"hydra.run.dir={straight}"], tmp_path).returncode == 0
    carried = tmp_path / "carried_latest.pt"
    shutil.copyfile(first / "checkpoints" / "latest.pt", carried)

    proc = _train(["meta.iterations=5", f"resume_from={carried}", f"hydra.run.dir={moved}"],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming from resume_from={carried} (iteration 3)" in proc.stderr
    for key, value in _latest(straight)["optimizer"]["weights"].items():
        torch.testing.assert_close(_latest(moved)["optimizer"]["weights"][key], value,
                                   rtol=0, atol=0, msg=key)
    best = checkpoint.load(moved / "checkpoints" / "best.pt")
    assert best["val_loss"] == _latest(straight)["best_val"]

    # the same command again: the run directory's own latest.pt (iteration 5) is further along
    proc = _train(["meta.iterations=5", f"resume_from={carried}", f"hydra.run.dir={moved}"],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not used: the run directory's own" in proc.stderr


def test_a_run_directory_behind_the_carried_file_is_refused_not_replaced(tmp_path, first):
    behind = tmp_path / "behind"
    assert _train(["meta.iterations=1", f"hydra.run.dir={behind}"], tmp_path).returncode == 0
    before = (behind / "checkpoints" / "latest.pt").read_bytes()
    proc = _train(["meta.iterations=6", f"resume_from={first / 'checkpoints' / 'latest.pt'}",
                   f"hydra.run.dir={behind}"], tmp_path)
    assert proc.returncode == 1
    assert "behind resume_from=" in proc.stderr and "Traceback" not in proc.stderr
    assert (behind / "checkpoints" / "latest.pt").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["mode=evaluate", "optimizer=adam"], "resume_from= resumes meta-training"),
    (["resume_from=BEST"], "is not a resumable checkpoint"),
    (["resume_from=missing.pt"], "does not exist"),
])
def test_resume_from_bad_input_is_one_line(tmp_path, first, args, message):
    args = [a.replace("BEST", str(first / "checkpoints" / "best.pt")) for a in args]
    if not any(a.startswith("resume_from=") for a in args):
        args.append(f"resume_from={first / 'checkpoints' / 'latest.pt'}")
    proc = _train([*args, f"hydra.run.dir={tmp_path / 'new'}"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
