"""Data-parallel meta-training (l2l/env/distributed.py): two processes under torchrun learn exactly
what one process learns from the same meta-batch, only rank 0 writes, a killed run resumes, and
a sweep runs through hydra-submitit-launcher (its local executor, the SLURM path's stand-in)."""

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
from hydra import compose, initialize_config_dir

from l2l import checkpoint, run_config
from l2l.env.distributed import Synchronizer
from l2l.meta_training import MetaTrainer
from l2l.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ["mode=meta_train", "meta.batch_size=4", "meta.horizon=10", "meta.unroll=5",
        "meta.val_instances=4", "threads=1", "logger=none", "progress=false"]


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("WANDB_MODE", None)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    return env


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
            str(ROOT / "train.py"), *args]


def _reference(overrides: list[str]) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The same meta-training in this one process: final weights and meta-loss history."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    torch.manual_seed(cfg.seed)
    learned = run_config.study_optimizer(cfg)
    task = build_task(cfg.task.family, **run_config.plain(cfg.task.kwargs))
    trainer = MetaTrainer(learned, task, run_config.meta_config(cfg))
    result = trainer.train()
    return learned.state_dict(), result["history"]["meta_loss"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "latest.pt")["optimizer"]["weights"]


def _meta_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "meta/loss" in r]


def _assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Equal up to float32 rounding: the ranks sum their halves of the batch in another order
    than one process does, and Adam's step (lr 0.01 here) divides by the root of the second
    moment, which lifts those ~1e-7 differences of near-zero gradients to ~1e-6 in the weights.
    A wrong shard or weighting differs by a whole step (~1e-2)."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=2e-5, msg=key)


def test_shards_cover_the_meta_batch_and_uneven_splits_are_refused():
    assert [Synchronizer(r, 2).shard(4) for r in (0, 1)] == [(0, 2), (2, 2)]
    assert not Synchronizer(1, 2).is_writer
    with pytest.raises(ValueError, match="not divisible"):
        Synchronizer(0, 2).shard(3)


@pytest.mark.slow
def test_two_processes_learn_what_one_learns_and_only_rank_0_writes(tmp_path):
    args = [*TINY, "meta.iterations=4"]
    proc = subprocess.run(_torchrun(args), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "over 2 processes (gloo), 2 instances each" in proc.stderr
    runs = list((tmp_path / "runs" / "meta_train" / "quadratic").iterdir())
    assert len(runs) == 1, runs  # both ranks agreed on rank 0's timestamped run_name
    run_dir = runs[0]
    want, losses = _reference(args)
    _assert_same_weights(_weights(run_dir), want)
    rows = _meta_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one writer: no duplicated rows
    # the logged meta-loss is the mean over the whole meta-batch, as in one process
    assert [r["meta/loss"] for r in rows] == pytest.approx(losses, rel=1e-6)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt", "latest.pt", "previous.pt"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert proc.stderr.count("meta-training done") == 1  # rank 1 keeps quiet


@pytest.mark.slow
def test_two_processes_own_half_the_particles_each_and_learn_what_one_learns(tmp_path):
    """PES over 2 processes of 2 antithetic pairs each equals PES over 4 pairs in one process;
    latest.pt keeps both processes' particles."""
    args = [*TINY, "meta.iterations=3", "meta.estimator=pes", "meta.particles=8",
            "meta.meta_lr=0.01", "meta.lengths=log_uniform", "meta.min_length=5",
            "meta.max_length=12"]
    proc = subprocess.run(_torchrun(args), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next((tmp_path / "runs" / "meta_train" / "quadratic").iterdir())
    want, losses = _reference(args)
    _assert_same_weights(_weights(run_dir), want)
    assert [r["meta/loss"] for r in _meta_rows(run_dir)] == pytest.approx(losses, rel=1e-5)
    saved = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    shares = saved["population"]["ranks"]
    assert len(shares) == 2 and [s["params"].shape[0] for s in shares] == [4, 4]
    assert not torch.equal(shares[0]["params"], shares[1]["params"])


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY, "meta.iterations=60", "meta.val_every=1000", "meta.checkpoint_every=1000"]
    args = [*common, f"hydra.run.dir={run_dir}"]
    straight = subprocess.run(_torchrun([*common, f"hydra.run.dir={tmp_path / 'straight'}"]),
                              cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=120)
    assert straight.returncode == 0, straight.stderr[-3000:]
    child = subprocess.Popen(_torchrun(args), cwd=tmp_path, env=_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = run_dir / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 10):
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGTERM)  # what a cluster does: the whole job gets SIGTERM
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0, err[-3000:]
    assert err.count("Rerun the same command to resume") == 2, err[-3000:]  # both ranks
    saved = checkpoint.load(run_dir / "checkpoints" / "latest.pt")["iteration"]
    assert 10 <= saved < 60
    assert max(r["step"] for r in _meta_rows(run_dir)) <= saved + 1

    proc = subprocess.run(_torchrun(args), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming meta-training from iteration {saved}" in proc.stderr
    # bit for bit what the uninterrupted two-process run learned (over 60 iterations float32
    # rounding makes one process drift from two, see _assert_same_weights; not a resume issue)
    want = _weights(tmp_path / "straight")
    for key, value in _weights(run_dir).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=0, msg=key)
    steps = [r["step"] for r in _meta_rows(run_dir)]
    assert steps == list(range(1, 61))


def test_the_slurm_launcher_config_runs_one_process_per_gpu():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0


@pytest.mark.slow
def test_a_sweep_of_two_process_jobs_runs_through_submitit(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=5",
         f"hydra.sweep.dir={sweep}", *TINY, "meta.iterations=2", "seed=0,1"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        (run_dir,) = sweep.glob(f"{job}_*seed={job}")
        assert "over 2 processes" in (run_dir / "train.log").read_text()
        assert checkpoint.load(run_dir / "checkpoints" / "latest.pt")["iteration"] == 2
        assert [r["step"] for r in _meta_rows(run_dir)] == [1, 2]  # rank 0 alone logged


# ---- a peer that never starts, or freezes: bounded waits, one line naming it ------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_env(rank: int, port: int, slurm: bool = False) -> dict[str, str]:
    names = ("SLURM_PROCID", "SLURM_NTASKS") if slurm else ("RANK", "WORLD_SIZE")
    return {**_env(), names[0]: str(rank), names[1]: "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


def test_the_timeouts_come_from_the_config_or_the_command_line():
    from omegaconf import OmegaConf

    from l2l.env.distributed import RENDEZVOUS_TIMEOUT, TIMEOUT, timeouts

    assert timeouts() == (RENDEZVOUS_TIMEOUT, TIMEOUT)
    cfg = OmegaConf.create({"distributed": {"rendezvous_timeout": 5, "timeout": 7}})
    assert timeouts(cfg) == (5.0, 7.0)
    assert timeouts(argv=["mode=meta_train", "distributed.timeout=2.5"]) == (
        RENDEZVOUS_TIMEOUT, 2.5)
    for bad in ("0", "-1", "abc", "inf"):
        with pytest.raises(ValueError, match="distributed.timeout must be a positive number"):
            timeouts(argv=[f"distributed.timeout={bad}"])


@pytest.mark.slow
@pytest.mark.parametrize("rank, message", [
    (0, "rank 0 of 2: rank 1 did not join the rendezvous at 127.0.0.1:"),
    (1, "rank 1 of 2 could not reach rank 0 at 127.0.0.1:"),
])
def test_a_rank_whose_peer_never_starts_fails_in_bounded_time(tmp_path, rank, message):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY,
                           "distributed.rendezvous_timeout=1", f"hydra.run.dir={tmp_path}"],
                          cwd=tmp_path, env=_rank_env(rank, _free_port(), slurm=True),
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert message in proc.stderr and "distributed.rendezvous_timeout" in proc.stderr
    assert "Traceback" not in proc.stderr and "frame #" not in proc.stderr, proc.stderr[-3000:]
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_a_frozen_peer_stops_rank_0_after_the_timeout(tmp_path):
    """kill -STOP on rank 1 mid-training: rank 0's next gradient exchange times out (gloo)
    after distributed.timeout seconds and it exits with one line naming rank 1."""
    port = _free_port()
    args = [sys.executable, str(ROOT / "train.py"), *TINY, "meta.iterations=100000",
            "distributed.timeout=2", f"hydra.run.dir={tmp_path}"]
    ranks = [subprocess.Popen(args, cwd=tmp_path, env=_rank_env(r, port),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        log = tmp_path / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 3):
            time.sleep(0.05)
        os.kill(ranks[1].pid, signal.SIGSTOP)
        frozen = time.monotonic()
        _, err = ranks[0].communicate(timeout=60)
        assert ranks[0].returncode == 1, err[-3000:]
        assert "rank 0 of 2: rank 1 stopped answering" in err, err[-3000:]
        assert "distributed.timeout=2 s" in err and "Traceback" not in err
        assert time.monotonic() - frozen < 45
    finally:
        for proc in ranks:
            proc.kill()
            proc.communicate()
