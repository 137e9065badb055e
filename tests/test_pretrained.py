"""The pretrained zoo: every shipped entry loads, is described, and beats doing nothing on
held-out problems of the task it was trained on; zoo names work wherever a checkpoint goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import l2l.pretrained as zoo
from l2l.checkpoint import CheckpointError
from l2l.evaluation import run_optimizer
from l2l.learned.base import LearnedOptimizer
from l2l.tasks import MNISTNotFoundError, build_task

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = zoo.names()
FIELDS = ("name", "file", "optimizer", "task", "task_config", "command", "seed", "iteration",
          "meta_training_tasks", "val_loss", "l2l_version", "date")


def test_the_zoo_ships_the_quadratic_lstm_with_its_recipe():
    assert "lstm-quadratic" in ENTRIES
    for record in zoo.list():
        for key in FIELDS:
            assert key in record, (record["name"], key)
        assert record["command"].startswith("python train.py ")
        assert "mode=meta_train" in record["command"]
        assert zoo.path(record["name"]).is_file()


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_beats_the_no_op_on_held_out_problems_of_its_task(name):
    record = zoo.entry(name)
    optimizer = zoo.load(name)
    assert isinstance(optimizer, LearnedOptimizer) and optimizer.name == record["optimizer"]
    spec = record["task_config"]
    task = build_task(spec["family"], **spec["kwargs"])
    try:  # seed 9999: problems neither meta-training nor validation ever drew
        instances = task.sample(16, 9999, "test")
    except MNISTNotFoundError as error:
        pytest.skip(f"{name} needs MNIST: {error}")
    steps = record.get("horizon") or 100
    final = run_optimizer(optimizer, instances, steps, with_metrics=False).final_loss
    with torch.no_grad():  # the no-op (zero update) stays at theta_0
        no_op = instances.loss_and_grad(instances.init_params, steps)[0].double()
    assert torch.isfinite(final).all()
    assert final.mean() < no_op.mean()
    if spec["family"] == "quadratic":  # and far below it
        assert final.mean() < 0.1 * no_op.mean()


def test_resolve_accepts_names_package_paths_and_files(tmp_path, monkeypatch):
    shipped = zoo.path("lstm-quadratic")
    assert zoo.resolve("lstm-quadratic") == shipped
    monkeypatch.chdir(tmp_path)  # l2l/pretrained/<name>.pt is found from any directory
    assert zoo.resolve("l2l/pretrained/lstm-quadratic.pt") == shipped
    assert zoo.resolve(shipped) == shipped
    with pytest.raises(CheckpointError, match="lstm-quadratic"):  # the error lists the zoo
        zoo.resolve("no-such-optimizer")


def test_listing_command_prints_how_each_entry_was_trained():
    proc = subprocess.run([sys.executable, "-m", "l2l.pretrained"], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for record in zoo.list():
        assert record["name"] in proc.stdout and record["command"] in proc.stdout


def test_package_data_declares_the_zoo_files():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"pretrained/*.pt"' in text and '"pretrained/*.json"' in text
    index = json.loads((ROOT / "l2l" / "pretrained" / "index.json").read_text())
    assert {e["file"] for e in index["entries"]} <= {p.name for p in zoo.ZOO_DIR.glob("*.pt")}


@pytest.mark.parametrize("checkpoint", ["lstm-quadratic", "l2l/pretrained/lstm-quadratic.pt"])
def test_train_evaluates_a_zoo_entry_by_name_or_package_path(tmp_path, checkpoint):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "mode=evaluate", "optimizer=lstm",
         f"checkpoint={checkpoint}", "eval.steps=20", "eval.instances=4", "logger=none",
         "progress=false", "threads=1", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (entry,) = json.loads((run_dir / "summary.json").read_text())["optimizers"]
    assert entry["learned"] and entry["status"] == "ok"
    assert entry["final_loss_mean"] < entry["mean_curve"][0]


def test_an_unknown_checkpoint_name_fails_fast_listing_the_zoo(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "mode=evaluate", "checkpoint=lstm-nowhere",
         "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "lstm-nowhere" in proc.stderr and "lstm-quadratic" in proc.stderr
