"""Faults a cluster and a careless user cause: a kill at the worst instant, a full disk, a
failing sweep job, SIGHUP, a refused command, duplicate checkpoints. None loses work, none
leaves a wrong record, each ends in one line."""

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

from l2l import atomic, checkpoint
from l2l.learned.lstm import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
Q = ["task=quadratic", "threads=1", "logger=none", "progress=false"]
QUICK = ["meta.horizon=10", "meta.unroll=5", "meta.batch_size=2", "meta.val_instances=4",
         "meta.meta_lr=0.01", *Q]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **extra,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("WANDB_MODE", None)
    return env


def _train(args: list[str], cwd: Path, timeout: int = 180, **env: str
           ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd,
                          env=_env(**env), capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# ---- best.pt only ever improves, latest.pt always exists --------------------------------------

TRAINER = """
import sys, torch
from l2l.learned.lstm import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.tasks import build_task
torch.manual_seed(0)
config = MetaConfig(iterations={iterations}, horizon=10, unroll=5, batch_size=4, meta_lr=0.01,
                    val_every={val_every}, val_instances=8, checkpoint_every=1000)
MetaTrainer(LSTMOptimizer(preprocessing="none", output_scale=1.0), build_task("quadratic"),
            config, run_dir=sys.argv[1]).train()
"""


def _config(**fields) -> MetaConfig:
    return MetaConfig(**{**dict(horizon=10, unroll=5, batch_size=4, meta_lr=0.01,
                                val_instances=8, checkpoint_every=1000), **fields})


@pytest.mark.slow
def test_a_kill_between_best_and_latest_never_makes_best_worse(tmp_path, monkeypatch):
    """Validations at 0, 3 and 6 each improve; the fault hook kills the run just after the
    third best.pt (iteration 6) is in place, before latest.pt (iteration 3) follows. The
    resume validates every iteration (an allowed change): iterations 4 and 5 beat what
    latest.pt records but not best.pt, so they must not replace it."""
    script = TRAINER.format(iterations=6, val_every=3)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=_env(
        **{atomic.FAULT_ENV: "after:best.pt:kill:3"}), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    latest = checkpoint.load(tmp_path / "checkpoints" / "latest.pt")
    assert (best["iteration"], latest["iteration"]) == (6, 3)
    assert best["val_loss"] < latest["best_val"]

    written = []
    save = checkpoint.save_atomic

    def spy(payload, path, previous=None):
        if Path(path).name == "best.pt":
            written.append(payload["val_loss"])
        save(payload, path, previous)

    monkeypatch.setattr(checkpoint, "save_atomic", spy)
    torch.manual_seed(0)
    trainer = MetaTrainer(LSTMOptimizer(preprocessing="none", output_scale=1.0),
                          build_task("quadratic"), _config(iterations=6, val_every=1),
                          run_dir=tmp_path)
    assert trainer.resumed_from is not None and trainer.validator.best_val == best["val_loss"]
    trainer.train()
    replayed = trainer.history["val_loss"][-3:]  # iterations 4, 5, 6
    assert any(best["val_loss"] < v < latest["best_val"] for v in replayed)  # the trap was set
    assert all(v <= best["val_loss"] for v in written), written
    assert checkpoint.load(tmp_path / "checkpoints" / "best.pt")["val_loss"] <= best["val_loss"]


def test_latest_pt_exists_at_every_instant_of_a_write(tmp_path, monkeypatch):
    """Every rename and link of a checkpoint write is watched: before and after each one,
    latest.pt is a complete checkpoint (the old or the new), and previous.pt is the old one."""
    latest, previous = tmp_path / "latest.pt", tmp_path / "previous.pt"
    seen = []

    def watched(real):
        def call(*args, **kwargs):
            seen.append(checkpoint.load(latest)["n"])
            result = real(*args, **kwargs)
            seen.append(checkpoint.load(latest)["n"])
            return result
        return call

    checkpoint.save_atomic({"n": 0}, latest, previous=previous)
    monkeypatch.setattr(checkpoint.os, "replace", watched(os.replace))
    monkeypatch.setattr(checkpoint.os, "link", watched(os.link))
    for n in (1, 2, 3):
        checkpoint.save_atomic({"n": n}, latest, previous=previous)
        assert checkpoint.load(previous)["n"] == n - 1
    assert seen and set(seen) <= {0, 1, 2, 3}
    assert checkpoint.load(latest)["n"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"]


# ---- SIGHUP: a closed terminal or ssh session ------------------------------------------------


@pytest.mark.slow
def test_sighup_finishes_the_task_saves_and_exits_129(tmp_path):
    args = ["mode=meta_train", "meta.iterations=400", "meta.val_every=1000",
            "meta.checkpoint_every=1000", *QUICK, f"hydra.run.dir={tmp_path}"]
    child = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    log = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 3):
        time.sleep(0.05)
    done = log.read_text().count("\n") - 1  # the rows after the first validation's
    child.send_signal(signal.SIGHUP)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGHUP, err[-2000:]  # killed by it would be -1
    assert "received SIGHUP" in err and "Rerun the same command to resume" in err
    assert "Traceback" not in err
    saved = checkpoint.load(tmp_path / "checkpoints" / "latest.pt")["iteration"]
    assert done <= saved < 400


# ---- a failing sweep job --------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_sweep_job_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    from l2l import aggregate

    sweep = tmp_path / "sweep"
    proc = _train(["-m", "mode=evaluate", "optimizer=sgd,lstm,adam", "eval.instances=3",
                   "eval.steps=10", *Q, "run_name=mr_fail", f"hydra.sweep.dir={sweep}"],
                  tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep ran on, then said it failed
    assert "some jobs of the sweep failed" in proc.stderr and "Traceback" not in proc.stderr
    first, middle, last = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert json.loads((last / "summary.json").read_text())["optimizers"][0]["name"] == "adam"
    failure = json.loads((middle / "failed.json").read_text())
    assert failure["status"] == "failed" and "needs checkpoint=" in failure["message"]
    assert "optimizer=lstm" in failure["overrides"]
    result = json.loads((sweep / "aggregate.json").read_text())
    assert result["jobs"] == 3 and result["planned"] == 3
    assert [f["job"] for f in result["failed"]] == [middle.name]
    assert {r["optimizer"] for r in result["rows"]} == {"sgd", "adam"}
    assert "needs checkpoint=" in (sweep / "aggregate.md").read_text()

    # by hand, later: a job that never started and a truncated summary.json are listed too
    import shutil

    shutil.rmtree(last)
    (first / "summary.json").write_text('{"optimizers": [{"name": "sg')
    aggregate.main([str(sweep)])
    out = capsys.readouterr().out
    assert "3 jobs" not in out and "2 jobs (2 failed, 1 never started)" in out
    assert "summary.json is unreadable" in out and "optimizer=adam" in out


# ---- duplicate checkpoints are not extra seeds -----------------------------------------------


def test_duplicate_checkpoints_are_refused_by_content(tmp_path):
    import shutil

    from hydra import compose, initialize_config_dir

    from l2l import pretrained
    from l2l.modes import generalization

    copy = tmp_path / "copy.pt"
    shutil.copyfile(pretrained.resolve("lstm-quadratic"), copy)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "mode=generalization",
            f"checkpoints=[lstm-quadratic,rnnprop-mnist,l2l/pretrained/lstm-quadratic.pt,"
            f"{copy}]"])
    with pytest.raises(ValueError, match="same checkpoint more than once") as refused:
        generalization.prepare(cfg, torch.device("cpu"))
    assert f"lstm-quadratic, l2l/pretrained/lstm-quadratic.pt, {copy}" in str(refused.value)
    assert "rnnprop" not in str(refused.value)


@pytest.mark.slow
def test_duplicate_checkpoints_are_one_line(tmp_path):
    proc = _train(["mode=generalization", *Q, f"hydra.run.dir={tmp_path / 'run'}",
                   "checkpoints=[lstm-quadratic,lstm-quadratic,l2l/pretrained/lstm-quadratic.pt]"],
                  tmp_path, timeout=120)
    _one_line_error(proc, "checkpoints= lists the same checkpoint more than once")
    assert not (tmp_path / "run" / ".hydra").exists()  # refused: no record of a run


# ---- a full disk while writing results ---------------------------------------------------------

EVALUATE = ["mode=evaluate", "optimizer=adam", "eval.instances=3", "eval.steps=20", *Q]


def _limit_file_size(limit: int):
    def set_limit() -> None:  # a file may grow to `limit` bytes, then writes fail (EFBIG)
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


@pytest.mark.slow
def test_a_full_disk_names_the_file_and_does_not_block_the_rerun(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train.py"), *EVALUATE, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120, preexec_fn=_limit_file_size(20_000))  # < curves.png
    _one_line_error(proc, f"could not write {run_dir / 'curves.png'} (File too large)")
    assert not (run_dir / "summary.json").exists()  # no complete result: none claimed
    assert not list(run_dir.glob(".*.tmp"))

    proc = _train([*EVALUATE, f"hydra.run.dir={run_dir}"], tmp_path,
                  **{atomic.FAULT_ENV: "during:summary.json:enospc"})
    _one_line_error(proc, f"could not write {run_dir / 'summary.json'} (No space left")
    assert not (run_dir / "summary.json").exists() and not list(run_dir.glob(".*.tmp"))

    (run_dir / "summary.json").write_text('{"task": "quadr')  # truncated by an old version
    proc = _train([*EVALUATE, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "summary.json is incomplete or unreadable: the rerun replaces it" in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["optimizers"][0]["name"] == "adam"
    assert (run_dir / "summary.json").stat().st_mode & 0o044  # readable like any file


def test_result_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic.write_text(target, "old")
    monkeypatch.setenv(atomic.FAULT_ENV, "during:summary.json:enospc")
    with pytest.raises(atomic.WriteError, match=f"could not write {target}"):
        atomic.write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]


# ---- a refused command leaves the run's record alone -------------------------------------------


def _record(run_dir: Path) -> tuple[str, str]:
    return ((run_dir / ".hydra" / "config.yaml").read_text(),
            (run_dir / ".hydra" / "overrides.yaml").read_text())


@pytest.mark.slow
def test_a_refused_command_leaves_the_record_untouched(tmp_path):
    meta = tmp_path / "meta"
    base = ["mode=meta_train", "meta.iterations=2", *QUICK, f"hydra.run.dir={meta}"]
    assert _train(base, tmp_path).returncode == 0
    before = _record(meta)
    _one_line_error(_train([*base, "seed=1"], tmp_path), "seed: checkpoint 0, now 1")
    assert _record(meta) == before

    run = tmp_path / "eval"  # what an evaluate run with optimizer=adam left
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("optimizer:\n  name: adam\n")
    (run / ".hydra" / "overrides.yaml").write_text("- optimizer=adam\n")
    (run / "summary.json").write_text('{"optimizers": [{"name": "adam"}]}')
    before = _record(run)
    proc = _train([*EVALUATE, "optimizer=sgd", f"hydra.run.dir={run}"], tmp_path)
    _one_line_error(proc, "already holds results")
    assert _record(run) == before


# ---- a rerun after an interruption logs tuning rows once ---------------------------------------


@pytest.mark.slow
def test_a_compare_rerun_after_sigterm_does_not_duplicate_the_tuning_rows(tmp_path):
    args = ["mode=compare", "eval.baselines=[sgd,adam]", "tune.instances=2", "tune.per_decade=1",
            "eval.steps=10", "eval.instances=2", "meta.iterations=100000", "meta.val_every=1000",
            "meta.checkpoint_every=1000", *QUICK, f"hydra.run.dir={tmp_path}"]
    child = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    log = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or "meta/loss" not in log.read_text()):
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, err[-2000:]
    saved = checkpoint.load(tmp_path / "checkpoints" / "latest.pt")["iteration"]
    proc = _train([*args, f"meta.iterations={saved + 1}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["optimizer"] for r in rows if r.get("event") == "tune") == ["adam", "sgd"]
    steps = [r["step"] for r in rows if "meta/loss" in r]
    assert steps == list(range(1, saved + 2))
