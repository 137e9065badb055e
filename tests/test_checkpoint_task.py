"""checkpoint= brings its task: without task= a run evaluates on the checkpoint's training task
and says so; with task= the log says whether the checkpoint saw it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from l2l import checkpoint_task
from l2l.presets import task_preset

ROOT = Path(__file__).resolve().parents[1]


def _cfg(checkpoint: str, task: str = "quadratic", mode: str = "evaluate"):
    return OmegaConf.create({"mode": mode, "checkpoint": checkpoint, "data_dir": None,
                             "task": task_preset(task, ROOT / "conf")})


def test_without_task_the_checkpoints_training_task_is_used(caplog):
    cfg = _cfg("lstm-mnist")
    with caplog.at_level("INFO", logger="l2l"):
        checkpoint_task.adopt(cfg, ["mode=evaluate", "checkpoint=lstm-mnist"])
    assert cfg.task.name == "mnist" and cfg.task.family == "mnist_mlp"
    assert cfg.task.kwargs.activation == "sigmoid" and list(cfg.task.kwargs.hidden_sizes) == [20]
    assert cfg.task.threshold == task_preset("mnist", ROOT / "conf").threshold
    assert ("task= not given: evaluating on the checkpoint's training task, task=mnist"
            in caplog.text)


def test_a_mixture_checkpoint_brings_the_mixture():
    cfg = _cfg("rnnprop-mnist-mixture")
    checkpoint_task.adopt(cfg, ["checkpoint=rnnprop-mnist-mixture"])
    assert cfg.task.name == "mnist_mixture" and cfg.task.family == "mixture"


def test_a_checkpoint_brings_no_machines_paths_and_reads_this_runs_data_dir():
    """suite_mlp8_pes's checkpoints recorded each mixture component's data_dir as the path on
    the machine that trained them: adopted elsewhere, every component must read this run's
    data_dir, and the identity a run records now holds no path at all."""
    from l2l.run_config import task_identity

    recorded = {"name": "suite_train", "family": "mixture", "kwargs": {"components": [
        {"name": "m", "family": "augmented", "kwargs": {
            "task": {"family": "mnist_mlp", "kwargs": {"resolution": 8,
                                                       "data_dir": "/elsewhere/mnist"}},
            "param_scale_range": 1.0}},
        {"name": "q", "family": "conditioned_quadratic", "kwargs": {"dim": 20}}],
        "weights": [0.5, 0.5]}}
    cfg = _cfg("rnnprop-mnist-mixture")
    cfg.data_dir = "/here/mnist"
    node = checkpoint_task._task_config(recorded, cfg)
    cfg.task = node
    first = cfg.task.kwargs.components[0].kwargs.task.kwargs
    assert first.data_dir == "/here/mnist" and first.resolution == 8
    assert "data_dir" not in cfg.task.kwargs.components[1].kwargs
    identity = task_identity(recorded)
    nested = identity["kwargs"]["components"][0]["kwargs"]["task"]["kwargs"]
    assert nested == {"resolution": 8, "data_dir": None}
    assert "/elsewhere" not in json.dumps(identity)


@pytest.mark.parametrize("task, answer", [("mnist", "yes"), ("mnist_relu", "no"),
                                          ("quadratic", "no")])
def test_a_given_task_is_kept_and_the_log_says_if_training_saw_it(caplog, task, answer):
    cfg = _cfg("lstm-mnist", task)
    with caplog.at_level("INFO", logger="l2l"):
        checkpoint_task.adopt(cfg, ["checkpoint=lstm-mnist", f"task={task}"])
    assert cfg.task.name == task
    assert f"task={task} seen in training: {answer}" in caplog.text
    documented = task == "mnist_relu"  # in lstm-mnist's fails_on_tasks
    assert ("documented to fail on task=mnist_relu" in caplog.text) == documented


def test_a_mixture_component_is_seen_as_such(caplog):
    cfg = _cfg("rnnprop-mnist-mixture", "mnist")
    with caplog.at_level("INFO", logger="l2l"):
        checkpoint_task.adopt(cfg, ["task=mnist"])
    assert "seen in training: component of the mixture" in caplog.text


@pytest.mark.parametrize("overrides, given", [
    (["task=mnist"], True), (["task.kwargs.dim=5"], True), (["+task.threshold=1"], True),
    (["experiment=paper_mnist"], True), (["checkpoint=lstm-mnist", "eval.steps=5"], False),
    (["optimizer=rnnprop"], False)])
def test_task_given_reads_the_command_line(overrides, given):
    assert checkpoint_task.task_given(overrides) is given


def test_runs_without_a_checkpoint_or_in_other_modes_are_left_alone():
    cfg = _cfg("lstm-mnist", mode="meta_train")
    checkpoint_task.adopt(cfg, [])
    assert cfg.task.name == "quadratic"
    cfg = OmegaConf.create({"mode": "evaluate", "checkpoint": None,
                            "task": task_preset("quadratic", ROOT / "conf")})
    checkpoint_task.adopt(cfg, [])
    assert cfg.task.name == "quadratic"


@pytest.mark.slow
def test_train_evaluates_a_checkpoint_on_its_own_task_without_task(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "mode=evaluate", "checkpoint=rnnprop-mnist",
         "eval.steps=3", "eval.instances=2", "logger=none", "progress=false", "threads=1",
         f"data_dir={mnist_dir}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**os.environ, "WANDB_SILENT": "true"}, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluating on the checkpoint's training task, task=mnist" in proc.stderr
    assert "optimizer=rnnprop" in proc.stderr and "optimizer=lstm device" not in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "mnist"
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").task.name == "mnist"
