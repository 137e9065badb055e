"""Long runs never lose, mix or misreport work: preemption, concurrent runs, resume checks, a
best checkpoint that only improves, finite divergence, no overwritten results, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from l2l import checkpoint
from l2l.env.run_dir import RunDirInUse, RunDirLock
from l2l.learned.lstm import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["meta.horizon=10", "meta.unroll=5", "meta.batch_size=2", "meta.val_instances=4",
         "meta.meta_lr=0.01", "logger=none", "progress=false", "threads=1"]


def _train(args: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "latest.pt")["optimizer"]["weights"]


def _metric_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "meta/loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_and_the_resume_ends_where_an_uninterrupted_run_ends(tmp_path, signum):
    iterations = ["mode=meta_train", "meta.iterations=150", "meta.val_every=1000",
                  "meta.checkpoint_every=1000", *QUICK]
    straight = tmp_path / "straight"
    proc = _train([*iterations, f"hydra.run.dir={straight}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    stopped = tmp_path / "stopped"
    env = {**os.environ, "WANDB_SILENT": "true"}
    child = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *iterations,
                              f"hydra.run.dir={stopped}"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = stopped / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 3):
        time.sleep(0.05)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signum, err[-2000:]
    assert "Rerun the same command to resume" in err
    assert "Traceback" not in err
    saved = checkpoint.load(stopped / "checkpoints" / "latest.pt")["iteration"]
    assert 3 <= saved < 150
    assert max(_metric_steps(stopped)) <= saved + 1  # at most the task in flight was lost

    proc = _train([*iterations, f"hydra.run.dir={stopped}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(stopped)[key], value, rtol=0, atol=0, msg=key)
    steps = _metric_steps(stopped)
    assert steps == sorted(set(steps)) == list(range(1, 151))  # no duplicated rows


@pytest.mark.slow
def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    with RunDirLock(tmp_path):
        proc = _train(["mode=meta_train", "meta.iterations=2", *QUICK,
                       f"hydra.run.dir={tmp_path}"], tmp_path)
        assert proc.returncode == 1
        assert f"is in use by pid {os.getpid()}" in proc.stderr
        assert not (tmp_path / "checkpoints").exists()
        with pytest.raises(RunDirInUse):
            RunDirLock(tmp_path).acquire()
    RunDirLock(tmp_path).acquire().release()  # free again once the holder is gone


@pytest.mark.slow
def test_a_changed_setting_on_resume_is_refused_and_an_allowed_one_accepted(tmp_path):
    base = ["mode=meta_train", "meta.iterations=3", "meta.val_every=1", *QUICK,
            f"hydra.run.dir={tmp_path}"]
    assert _train(base, tmp_path).returncode == 0
    proc = _train([*base, "meta.meta_lr=0.5"], tmp_path)
    assert proc.returncode == 1
    assert "meta_lr: checkpoint 0.01, now 0.5" in proc.stderr
    assert "another run_name" in proc.stderr
    proc = _train([*base, "task.kwargs.dim=5"], tmp_path)
    assert proc.returncode == 1 and "task" in proc.stderr
    proc = _train([*base, "meta.iterations=5"], tmp_path)  # training longer is allowed
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert checkpoint.load(tmp_path / "checkpoints" / "latest.pt")["iteration"] == 5
    assert "iterations: 5" in (tmp_path / ".hydra" / "config.yaml").read_text()


def _config(**overrides) -> MetaConfig:
    base = dict(iterations=6, horizon=20, unroll=10, batch_size=4, meta_lr=0.01, val_every=2,
                val_instances=8, checkpoint_every=1)
    return MetaConfig(**{**base, **overrides})


def _lstm(seed: int = 0) -> LSTMOptimizer:
    torch.manual_seed(seed)
    return LSTMOptimizer(preprocessing="none", output_scale=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["delete", "corrupt_both"])
def test_best_checkpoint_never_gets_worse(tmp_path, damage):
    task = build_task("quadratic")
    MetaTrainer(_lstm(), task, _config(iterations=4, horizon=10, unroll=5),
                run_dir=tmp_path).train()
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best["iteration"] > 0
    for name in ("latest.pt", "previous.pt"):
        path = tmp_path / "checkpoints" / name
        if damage == "delete":
            path.unlink()
        else:
            path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning):
        fresh = MetaTrainer(_lstm(seed=3), task,
                            _config(iterations=2, val_every=1, horizon=10, unroll=5),
                            run_dir=tmp_path)
    assert fresh.iteration == 0 and fresh.validator.best_val == pytest.approx(best["val_loss"])
    fresh.train()  # the untrained optimizer's validation must not replace best.pt
    after = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert after["val_loss"] <= best["val_loss"]


@pytest.mark.slow
def test_finite_blow_up_is_reported_not_called_success(tmp_path):
    proc = _train(["mode=meta_train", "meta.iterations=4", "meta.val_every=2", *QUICK,
                   "meta.meta_lr=1000", "optimizer.hyperparameters.output_scale=1000",
                   f"hydra.run.dir={tmp_path / 'meta'}"], tmp_path)
    assert proc.returncode != 0
    assert "never beat the untrained lstm" in proc.stderr
    assert "meta.second_order=true" in proc.stderr  # first-order runs are told of the exact one
    best = tmp_path / "meta" / "checkpoints" / "best.pt"
    proc = _train(["mode=evaluate", f"checkpoint={best}", "eval.instances=4", "eval.steps=10",
                   "logger=none", "progress=false", f"hydra.run.dir={tmp_path / 'eval'}"],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads((tmp_path / "eval" / "summary.json").read_text())["optimizers"][0]
    assert row["status"] == "untrained" and "untrained" in " ".join(row["notes"])
    assert "untrained" in (tmp_path / "eval" / "report.md").read_text()


@pytest.mark.slow
def test_results_are_never_overwritten(tmp_path):
    args = ["mode=evaluate", "optimizer=adam", "eval.instances=4", "eval.steps=5", "logger=none",
            "progress=false", f"hydra.run.dir={tmp_path}"]
    assert _train(args, tmp_path).returncode == 0
    before = (tmp_path / "summary.json").read_text()
    proc = _train([*args, "optimizer.hyperparameters.lr=0.5"], tmp_path)
    assert proc.returncode == 1 and "already holds results" in proc.stderr
    assert (tmp_path / "summary.json").read_text() == before


@pytest.mark.slow
def test_compare_reports_a_baseline_that_cannot_be_tuned_and_the_rest(tmp_path):
    proc = _train(["mode=compare", "optimizer=sgd", "eval.baselines=[sgd,adam]",
                   "tune.low=1000", "tune.high=100000", "tune.per_decade=1", "eval.instances=4",
                   "eval.steps=10", "tune.instances=3", "logger=none", "progress=false",
                   f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((tmp_path / "summary.json").read_text())
            ["optimizers"]}
    assert rows["sgd"]["status"].startswith("failed to tune")
    assert rows["adam"]["status"] == "ok" or rows["adam"]["status"].startswith("failed")
    assert "failed to tune" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    (["device=nonsense"], "device=nonsense is not a device"),
    (["threads=-1"], "threads=-1 must be a positive integer"),
    (["optimizer.hyperparameters.hidden_size=2.5"], "hidden_size must be an integer"),
    (["optimizer.hyperparameters.hidden_size=1000000"], "hidden_size must be an integer"),
    (["task=mnist", "data_dir=/etc/hostname"], "is a file, not a directory"),
    (["hydra.run.dir=/etc/hostname/run"], "cannot create the run directory"),
    (["mode=evaluate", "checkpoint=/etc/hostname"], "corrupt"),
])
def test_bad_input_is_one_line_without_a_traceback(tmp_path, override, message):
    proc = _train([*override, "logger=none", "progress=false"], tmp_path, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_checkpoint_with_unknown_fields_is_one_line(tmp_path):
    payload = LSTMOptimizer().payload()
    payload["config"]["wings"] = 2
    path = tmp_path / "odd.pt"
    checkpoint.save_atomic({"optimizer": payload}, path)
    proc = _train(["mode=evaluate", f"checkpoint={path}", "logger=none"], tmp_path, timeout=60)
    assert proc.returncode == 1 and "unknown field(s) ['wings']" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_corrupt_mnist_file_is_one_line(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"not mnist")
    proc = _train(["task=mnist", f"data_dir={data}", "task.kwargs.download=false",
                   "logger=none", "progress=false"], tmp_path, timeout=60)
    assert proc.returncode == 1
    assert "MNIST" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
