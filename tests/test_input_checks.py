"""Bad input is refused up front with one line that names the fix: the config checks of
train.py (l2l/config_checks.py), threads, long run names, unsafe or incomplete checkpoints, and
a sweep's malformed overrides.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from l2l import checkpoint
from l2l.aggregate import aggregate
from l2l.config_checks import MAX_TUNING_BATCH, SIZE_LIMITS, check_config
from l2l.env.runtime import MAX_THREADS_PER_CPU, resolve_threads
from l2l.learned.lstm import LSTMOptimizer
from l2l.meta_snapshot import RESUME_FIELDS
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.run_config import meta_config
from l2l.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("overrides", [[], ["experiment=paper_mnist"],
                                       ["experiment=paper_quadratic"], ["meta=paper"],
                                       ["experiment=generalization"], ["eval.threshold=null"]])
def test_the_shipped_configs_pass_the_checks(overrides):
    check_config(_compose(overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tune.low=10", "tune.high=0.001"], "tune.low=10 must be below tune.high=0.001"),
        (["tune.low=0.1", "tune.high=0.1"], "must be below tune.high"),
        (["tune.low=0"], "tune.low=0 must be a positive learning rate"),
        (["tune.low=-1"], "tune.low=-1 must be a positive learning rate"),
        (["tune.low=abc"], "tune.low='abc' must be a positive learning rate"),
        (["tune.high=inf"], "tune.high=inf must be a positive learning rate"),
        (["tune.high=true"], "tune.high=True must be a positive learning rate"),
        (["tune.per_decade=100", "tune.instances=1000"], "narrow tune.low..tune.high"),
        (["eval.baselines=[adam,sgd,adam]"], "eval.baselines lists 'adam' more than once"),
        (["eval.threshold=abc"], "eval.threshold='abc' must be a number"),
        (["eval.threshold=nan"], "eval.threshold=nan must be a number"),
        (["+meta.itertions=3"], "unknown meta option 'itertions' (did you mean 'iterations'?)"),
        (["+meta.seed=3"], "meta.seed is not a meta option: set seed= instead"),
        (["eval.instances=0"], "eval.instances must be a positive integer, got 0"),
        (["eval.steps=many"], "eval.steps must be a positive integer"),
        (["eval.instances=1000000000"], "eval.instances=1000000000 is above its limit"),
        (["eval.steps=1000000000"], "eval.steps=1000000000 is above its limit"),
        (["tune.instances=1000000000"], "tune.instances=1000000000 is above its limit"),
        (["tune.steps=1000000000"], "tune.steps=1000000000 is above its limit"),
        (["meta.val_instances=1000000000"], "meta.val_instances=1000000000 is above its limit"),
        (["meta.batch_size=1000000000"], "meta.batch_size=1000000000 is above its limit"),
        (["meta.horizon=1000000000"], "meta.horizon=1000000000 is above its limit"),
    ],
)
def test_bad_values_are_refused_with_the_fix(overrides, message):
    with pytest.raises(ValueError) as error:
        check_config(_compose(overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_sizes_up_to_their_limits_pass():
    limits = [f"{key}={limit}" for key, limit in SIZE_LIMITS.items()]
    rates = MAX_TUNING_BATCH // SIZE_LIMITS["tune.instances"]  # the largest grid they allow
    check_config(_compose([*limits, "tune.low=0.1", f"tune.high={0.1 * 10 ** (rates - 1)}",
                           "tune.per_decade=1"]))
    with pytest.raises(ValueError, match=f"the tuning grid has {rates + 1} learning rates"):
        check_config(_compose([*limits, "tune.low=0.1", f"tune.high={0.1 * 10 ** rates}",
                               "tune.per_decade=1"]))


def test_meta_config_refuses_an_unknown_key_too():
    with pytest.raises(ValueError, match=r"unknown meta option 'unrol' \(did you mean 'unroll'"):
        meta_config(_compose(["+meta.unrol=3"]))
    assert isinstance(meta_config(_compose([])), MetaConfig)


def test_threads_beyond_the_machine_are_refused():
    limit = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    assert resolve_threads(limit) == (limit, "as given")
    with pytest.raises(ValueError, match=rf"threads=100000 is more than .* at most {limit}"):
        resolve_threads(100_000)


# ---- checkpoints --------------------------------------------------------------------------


class _SystemCall:
    """Pickles as ``os.system(command)``: what a malicious checkpoint would run when loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Custom:
    pass


def test_pickled_code_and_classes_are_refused_not_called_corrupt(tmp_path):
    """torch 2.13 words a blocked module ("unsupported GLOBAL posix.system whose module posix
    is blocked") unlike a class it does not allow ("Unsupported global: ..."): both are refused
    as code, the payload never runs, and random bytes are still "corrupt"."""
    marker = tmp_path / "pwned"
    for name, obj in [("system", _SystemCall(f"touch {marker}")), ("class", _Custom())]:
        path = tmp_path / f"{name}.pt"
        torch.save({"format": checkpoint.FORMAT, "x": obj}, path)
        with pytest.raises(checkpoint.CheckpointError, match="refused: loading them could run "
                           "code") as error:
            checkpoint.load(path)
        assert "corrupt" not in str(error.value) and "weights_only" not in str(error.value)
    assert not marker.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(garbage)


_META = MetaConfig(iterations=2, horizon=10, unroll=5, batch_size=2, val_every=1,
                   val_instances=2, checkpoint_every=1)


@pytest.fixture(scope="module")
def latest_payload(tmp_path_factory):
    """The latest.pt of one meta-training iteration (written once for the tests below)."""
    run_dir = tmp_path_factory.mktemp("meta")
    MetaTrainer(LSTMOptimizer(preprocessing="none"), build_task("quadratic"), _META,
                run_dir=run_dir).train(stop_after=1)
    return checkpoint.load(run_dir / "checkpoints" / "latest.pt")


@pytest.mark.parametrize("field", ["skipped", "history", "best"])
def test_a_latest_checkpoint_missing_a_field_is_a_clear_error(tmp_path, latest_payload, field):
    assert field in RESUME_FIELDS
    payload = {k: v for k, v in latest_payload.items() if k not in (field, "format")}
    checkpoint.save_atomic(payload, tmp_path / "checkpoints" / "latest.pt")
    with pytest.raises(checkpoint.CheckpointError, match=rf"lacks the field\(s\) '{field}'.*"
                       "move it and previous.pt out of checkpoints/"):
        MetaTrainer(LSTMOptimizer(preprocessing="none"), build_task("quadratic"), _META,
                    run_dir=tmp_path)
    checkpoint.save_atomic(latest_payload, tmp_path / "checkpoints" / "latest.pt")
    assert MetaTrainer(LSTMOptimizer(preprocessing="none"), build_task("quadratic"), _META,
                       run_dir=tmp_path).iteration == 1  # the complete one resumes


# ---- l2l.aggregate -------------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [("- seed=1\n  bad: [\n", "malformed ("),
                                           ("seed: 1\n", "a dict, not a list"),
                                           ("- 3\n", "a list, not a list")])
def test_a_malformed_overrides_yaml_names_the_file(tmp_path, text, problem):
    job = tmp_path / "0_job" / ".hydra"
    job.mkdir(parents=True)
    (job / "overrides.yaml").write_text(text)
    with pytest.raises(ValueError, match="overrides.yaml is malformed") as error:
        aggregate(tmp_path)
    assert problem in str(error.value) and str(job / "overrides.yaml") in str(error.value)


def test_aggregate_command_on_a_malformed_overrides_yaml_is_one_line(tmp_path, capsys):
    from l2l.aggregate import main

    job = tmp_path / "0_job" / ".hydra"
    job.mkdir(parents=True)
    (job / "overrides.yaml").write_text("seed: [\n")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "overrides.yaml is malformed" in err


# ---- train.py, as a user types it ----------------------------------------------------------


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "logger=none",
                           "progress=false", "threads=1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["mode=tune", "optimizer=adam", "tune.low=10", "tune.high=0.001"],
         "tune.low=10 must be below tune.high=0.001"),
        (["mode=compare", "optimizer=adam", "eval.threshold=abc"],
         "eval.threshold='abc' must be a number"),
    ],
    ids=["tune-grid", "threshold"],
)
def test_train_refuses_before_any_work(tmp_path, args, message):
    """The other checks of check_config and resolve_threads run at the same place (tested
    above by direct calls): a subprocess each would only add time."""
    run_dir = tmp_path / "run"
    proc = _train([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (run_dir / "summary.json").exists() and not (run_dir / "metrics.jsonl").exists()


@pytest.mark.slow
def test_a_sweep_run_name_longer_than_a_file_name_is_one_line(tmp_path):
    proc = _train(["-m", "mode=evaluate", "optimizer=adam", f"run_name=a,{'x' * 300}"],
                  tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "run_name xxxx" in proc.stderr and "is 300 bytes long" in proc.stderr
    assert "choose a shorter run_name" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arg, setting", [(f"run_name={'y' * 256}", "run_name"),
                                          ("hydra.run.dir=out/" + "z" * 300 + "/a",
                                           "run_name or hydra.run.dir")])
def test_a_run_directory_name_longer_than_a_file_name_is_one_line(tmp_path, monkeypatch,
                                                                  capsys, arg, setting):
    """What train.py checks before Hydra creates the run directory (which fails with
    ENAMETOOLONG and a traceback)."""
    import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train.preflight(["mode=evaluate", "optimizer=adam", arg])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "bytes long, more than the 255" in err and f"choose a shorter {setting}" in err
    train.preflight(["mode=evaluate", "optimizer=adam", f"run_name={'y' * 255}"])  # fits
