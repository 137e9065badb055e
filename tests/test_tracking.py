"""RunLogger: metrics.jsonl always, wandb offline files, no wandb at all, online fallback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from l2l.evaluation import EvaluationRecord, TuneResult
from l2l.tracking import MODES, RunLogger, TrackingWarning, default_mode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _wandb_sandbox(tmp_path_factory):
    """Keep wandb's own config, cache and staging files out of the home directory."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                    "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        for var in ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_API_KEY", "WANDB_RUN_ID",
                    "WANDB_RESUME", "WANDB_DIR"):
            mp.delenv(var, raising=False)
        yield home


def _read_jsonl(path: Path) -> list[dict]:
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _record(name: str, learned: bool, curve: list[float]) -> EvaluationRecord:
    record = EvaluationRecord.failed(name, name, learned, "ok")
    record.mean_curve = curve
    return record


ENTRIES = [_record("adam", False, [1.0, 0.5, 0.25]), _record("lstm", True, [1.0, 0.1, math.nan])]


# ---------------------------------------------------------------------------------------------
# No wandb.


def test_backend_none_writes_metrics_jsonl_only(tmp_path):
    run_dir = tmp_path / "run"
    with RunLogger(run_dir, {"lr": 0.1}, backend="none") as logger:
        assert logger.run is None and logger.mode is None and logger.wandb_run_dir is None
        logger.log({"train/loss": 0.5, "nan": math.nan}, step=0)
        logger.log({"train/loss": 0.25}, step=10)
        logger.log_curves(ENTRIES)
        logger.summary({"final": 1.0})
        (run_dir / "best.pt").write_bytes(b"x")
        logger.log_artifact(run_dir / "best.pt", "best")
    assert logger.finished
    logger.finish()  # idempotent
    assert _read_jsonl(run_dir / "metrics.jsonl") == [
        {"step": 0, "train/loss": 0.5, "nan": None},
        {"step": 10, "train/loss": 0.25},
    ]
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "metrics.jsonl"]
    with pytest.raises(RuntimeError, match="after finish"):
        logger.log({"x": 1.0}, step=11)
    with pytest.raises(FileNotFoundError):
        RunLogger(tmp_path / "other", {}, backend="none").log_artifact(tmp_path / "nope", "x")


def test_metrics_jsonl_appends_and_takes_tensors(tmp_path):
    import torch

    for step in (0, 1):
        with RunLogger(tmp_path, {}, backend="none") as logger:
            logger.log({"loss": torch.tensor(0.5), "acc": torch.tensor([0.75])}, step=step)
    rows = _read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 0, "loss": 0.5, "acc": 0.75}, {"step": 1, "loss": 0.5, "acc": 0.75}]


@pytest.mark.slow
def test_backend_none_never_imports_wandb(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import l2l.tracking
        from l2l.tracking import RunLogger
        with RunLogger({str(tmp_path)!r}, {{"a": 1}}, backend="none", mode="online") as log:
            log.log({{"x": 1.0}}, step=0)
            from l2l.evaluation import EvaluationRecord
            record = EvaluationRecord.failed("a", "a", False, "ok")
            record.mean_curve = [1.0, 0.5]
            log.log_curves([record])
            log.summary({{"x": 1.0}})
        with RunLogger({str(tmp_path / "d")!r}, {{}}, backend="wandb", mode="disabled") as log:
            log.log({{"x": 1.0}}, step=0)
        assert "wandb" not in sys.modules, "wandb was imported"
        assert "matplotlib" not in sys.modules, "matplotlib was imported"
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "d" / "wandb").exists()
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "d" / "metrics.jsonl").is_file()


def test_invalid_mode_and_backend(tmp_path):
    for backend in ("wandb", "none"):
        with pytest.raises(ValueError, match="offline, online, disabled"):
            RunLogger(tmp_path, {}, backend=backend, mode="dryrun")
    with pytest.raises(ValueError, match="wandb, none"):
        RunLogger(tmp_path, {}, backend="tensorboard")
    assert MODES == ("offline", "online", "disabled")


def test_default_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert default_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert default_mode() == "online"


# ---------------------------------------------------------------------------------------------
# wandb offline.


@pytest.mark.slow
def test_offline_run_files(tmp_path):
    run_dir = tmp_path / "run"
    config = {"task": {"name": "quadratic"}, "lr": 0.1, "bad": math.nan}
    with RunLogger(run_dir, config, mode="offline", group="g", tags=["test"],
                   name="offline-test", job_type="test") as logger:
        assert logger.mode == "offline"
        for step in range(3):
            logger.log({"train/unique_metric_key": 0.125 * (step + 1)}, step=step)
        logger.log_curves(ENTRIES, key="eval/loss")
        logger.summary({"eval/final_loss": 0.25})
        (run_dir / "best.pt").write_bytes(b"weights")
        logger.log_artifact(run_dir / "best.pt", "lstm/best", metadata={"step": 3})
        wandb_run = logger.wandb_run_dir
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert offline == [wandb_run]
    records = list(wandb_run.glob("run-*.wandb"))
    assert len(records) == 1 and records[0].stat().st_size > 0
    data = records[0].read_bytes()
    assert b"train/unique_metric_key" in data and b"0.375" in data  # the logged history
    assert b"eval/loss_curves" in data and b"eval/final_loss" in data
    tables = {p.name.split("_table")[0] for p in wandb_run.glob("files/media/table/eval/*.json")}
    assert tables == {"loss", "loss_curves"}
    assert _read_jsonl(run_dir / "metrics.jsonl")[-1] == {
        "step": 2, "train/unique_metric_key": 0.375}


def test_offline_init_failure_never_kills_the_run(tmp_path, monkeypatch):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("service exploded")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(TrackingWarning, match="continuing without wandb"):
        logger = RunLogger(tmp_path, {}, mode="offline")
    with logger:
        assert logger.run is None
        logger.log({"x": 1.0}, step=0)
        logger.log_curves(ENTRIES)
    assert _read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 0, "x": 1.0}]


def test_online_falls_back_to_offline_when_init_raises(tmp_path, monkeypatch, caplog):
    import logging

    import wandb

    real_init, modes = wandb.init, []

    def flaky_init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("server unreachable")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", flaky_init)
    with pytest.warns(TrackingWarning, match="falling back to offline") as record, \
            caplog.at_level(logging.WARNING, logger="l2l"):
        logger = RunLogger(tmp_path, {}, mode="online", init_timeout=5)
    # also a log record, which Hydra writes to train.log (a warning alone reaches only stderr)
    assert any("falling back to offline" in r.getMessage() and r.name.startswith("l2l")
               for r in caplog.records)
    with logger:
        assert modes == ["online", "offline"]
        assert logger.mode == "offline"
        logger.log({"x": 1.0}, step=0)
    message = str(record[0].message)
    assert "server unreachable" in message and f"wandb sync {logger.wandb_run_dir}" in message
    assert logger.wandb_run_dir.name.startswith("offline-run-")


@pytest.mark.slow
def test_online_unreachable_server_falls_back_quickly(tmp_path):
    """A real online attempt at a closed localhost port, in a fresh process (wandb reads its
    base URL once per process). A hang would trip the subprocess timeout; how fast the fallback
    is belongs to benchmarks, not to an assertion."""
    code = textwrap.dedent(f"""
        import json, time, warnings
        from l2l.tracking import RunLogger
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger = RunLogger({str(tmp_path)!r}, {{"a": 1}}, mode="online", init_timeout=3)
        seconds = time.perf_counter() - start
        with logger:
            logger.log({{"x": 1.0}}, step=0)
        print(json.dumps({{"mode": logger.mode, "seconds": seconds,
                          "warnings": [str(w.message) for w in caught],
                          "run": str(logger.wandb_run_dir)}}))
    """)
    home = tmp_path / "home"
    env = _env(WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="0" * 40,
               WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
               WANDB_DATA_DIR=str(home / "data"), HOME=str(home))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode"] == "offline", result
    fallback = [w for w in result["warnings"] if "falling back to offline" in w]
    assert len(fallback) == 1 and "wandb online init failed" in fallback[0]
    assert f"wandb sync {result['run']}" in fallback[0]
    assert Path(result["run"]).name.startswith("offline-run-")
    assert list(Path(result["run"]).glob("run-*.wandb"))


# ---------------------------------------------------------------------------------------------
# One run directory, one wandb run; tuning records.


def test_resumed_run_dir_continues_the_same_wandb_run(tmp_path):
    """Two sessions on one run directory (a run killed and resumed) log into one wandb run:
    the id is stored in wandb_id.txt and passed back with resume="allow"."""
    run_dir = tmp_path / "run"
    ids = []
    for session in range(2):
        with RunLogger(run_dir, {"lr": 0.1}, mode="offline", name="my-run") as logger:
            logger.log({"x": float(session)}, step=session)
            ids.append(logger.run.id)
            assert logger.run.name == "my-run"
    assert ids[0] == ids[1] == (run_dir / "wandb_id.txt").read_text().strip()
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert folders and all(ids[0] in f.name for f in folders)


def test_another_run_dir_gets_another_wandb_run(tmp_path):
    with RunLogger(tmp_path / "a", mode="offline") as a, \
            RunLogger(tmp_path / "b", mode="offline") as b:
        assert a.run.id != b.run.id


def test_log_tuning_line_in_metrics_jsonl(tmp_path):
    tuning = TuneResult(grid=[0.1, 1.0], scores=[0.5, math.inf], best_lr=0.1)
    with RunLogger(tmp_path, backend="none") as logger:
        logger.log({"meta/loss": 1.0}, step=1)
        logger.log_tuning("adam", tuning)
    lines = _read_jsonl(tmp_path / "metrics.jsonl")
    assert lines[-1] == {"event": "tune", "optimizer": "adam", "grid": [0.1, 1.0],
                         "scores": [0.5, None], "diverged": [False, True], "best_lr": 0.1,
                         "edge": "low"}


def test_wandb_staging_and_cache_live_in_the_run_folder(tmp_path, monkeypatch, _wandb_sandbox):
    """The best-checkpoint artifact is staged under <run dir>/wandb/ (not ~/.local/share), so
    a run folder copied elsewhere and synced there keeps its artifact; a user's own setting of
    the folders is left alone."""
    from l2l import tracking_files as tracking

    for var in tracking.WANDB_DIRS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_own_wandb_dirs", {})
    run_dir = tmp_path / "run"
    content = b"weights of the staging test"
    with RunLogger(run_dir, {"x": 1}, mode="offline", name="staging-test") as logger:
        (run_dir / "best.pt").write_bytes(content)
        logger.log_artifact(run_dir / "best.pt", "lstm/best")
        assert os.environ["WANDB_DATA_DIR"] == str(run_dir / "wandb" / "data")
    def copies(folder: Path) -> list[Path]:
        return [p for p in folder.rglob("*") if p.is_file() and p.read_bytes() == content]

    assert copies(run_dir / "wandb" / "data"), "the artifact was not staged in the run folder"
    assert not copies(_wandb_sandbox)  # no copy outside the run
    tracking.keep_wandb_files_in(tmp_path / "second")  # l2l's own value follows the run
    assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "second" / "wandb" / "cache")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "mine"))  # the user's: kept
    tracking.keep_wandb_files_in(tmp_path / "third")
    assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "mine")
