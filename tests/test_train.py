"""train.py and conf/: every config composes, runs end to end, sweeps, logs, and fails fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from l2l.registry import build_optimizer
from l2l.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = ["eval.steps=12", "eval.instances=6", "tune.instances=3", "tune.per_decade=1",
        "meta.iterations=2", "meta.horizon=12", "meta.unroll=6", "meta.batch_size=2",
        "meta.val_every=1", "meta.val_instances=4", "progress=false"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


# The groups with many options compose for seconds each (Hydra merges ~50 files per compose), so
# they sit outside the quick subset; CI runs them all.
@pytest.mark.parametrize("group", [pytest.param("optimizer", marks=pytest.mark.slow),
                                   pytest.param("task", marks=pytest.mark.slow), "meta", "logger",
                                   pytest.param("experiment", marks=pytest.mark.slow)])
def test_every_config_group_option_composes(group):
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = _compose([f"{group}={option}"])
        # Every value resolves (but a mandatory ??? checkpoint of the generalisation presets).
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        assert resolved["mode"] in ("meta_train", "evaluate", "tune", "compare", "generalization",
                                    "suite")
        hyper = resolved["optimizer"]["hyperparameters"]
        build_optimizer(resolved["optimizer"]["name"], **hyper)
        task = resolved["task"]
        build_task(task["family"], **task["kwargs"])  # lazy: MNIST is read on first sample()


def test_presets_reproduce_the_paper_settings():
    mnist = _compose(["experiment=paper_mnist"])
    assert (mnist.task.name, mnist.meta.horizon, mnist.meta.unroll) == ("mnist", 100, 20)
    assert mnist.meta.meta_lr == 1e-3 and mnist.meta.iterations == 10_000
    assert mnist.optimizer.hyperparameters.output_scale == 0.1
    assert mnist.optimizer.hyperparameters.preprocessing == "log_sign"
    quad = _compose(["experiment=paper_quadratic"])
    assert quad.optimizer.hyperparameters.preprocessing == "none"
    assert _compose(["experiment=mnist_200_steps"]).eval.steps == 200
    assert _compose(["experiment=mnist_relu"]).task.kwargs.activation == "relu"
    assert list(_compose(["experiment=mnist_2_layers"]).task.kwargs.hidden_sizes) == [20, 20]
    assert list(_compose(["experiment=mnist_40_units"]).task.kwargs.hidden_sizes) == [40]


def _train(args: list[str], tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_compare_end_to_end_with_wandb_offline(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train([*TINY, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    names = [e["name"] for e in summary["optimizers"]]
    assert sorted(names) == sorted(["sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta",
                                    "adam", "nadam", "lstm"])
    for entry in summary["optimizers"]:
        for key in ("name", "hyperparameters", "tuned_lr", "final_loss_mean", "final_loss_ci95",
                    "steps_to_threshold", "seconds_per_step", "diverged", "mean_curve"):
            assert key in entry, key
        assert len(entry["mean_curve"]) == 13
        assert (entry["tuned_lr"] is None) == (entry["name"] == "lstm")
    report = (run_dir / "report.md").read_text()
    assert "| optimizer |" in report and "lstm" in report
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for figure in ("tuning.png", "meta_training.png"):  # tuning grids, meta-training curves
        assert (run_dir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert f"]({figure})" in report
    assert (run_dir / "checkpoints" / "best.pt").exists()
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "metrics.jsonl").read_text().count("\n") >= 2
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb")), "wandb offline files missing"
    assert "| optimizer |" in proc.stdout  # the table is printed


@pytest.mark.slow
def test_any_learned_optimizer_meta_trains_and_evaluates_from_its_checkpoint(tmp_path):
    """No mode knows the learned optimizers by name: rnnprop goes through meta_train and
    evaluate like the LSTM, and its checkpoint rebuilds an RNNprop."""
    proc = _train([*TINY, "mode=meta_train", "optimizer=rnnprop", "logger=none",
                   f"hydra.run.dir={tmp_path / 'meta'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = tmp_path / "meta" / "checkpoints" / "best.pt"
    proc = _train([*TINY, "mode=evaluate", "optimizer=rnnprop", f"checkpoint={best}",
                   "logger=none", f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert [(e["name"], e["learned"]) for e in summary["optimizers"]] == [("rnnprop", True)]


@pytest.mark.slow
def test_logger_none_writes_no_wandb_files(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train([*TINY, "mode=evaluate", "optimizer=adam", "logger=none",
                   f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "summary.json").exists()
    assert not (run_dir / "wandb").exists()
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_two_job_multirun(tmp_path, launcher):
    if launcher == "joblib":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher",
                            reason="pip install hydra-joblib-launcher (in the dev extra)")
    sweep = tmp_path / "sweep"
    proc = _train(["-m", f"hydra/launcher={launcher}", *TINY, "mode=tune", "optimizer=sgd,adam",
                   "logger=none", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2
    tuned = {json.loads(p.read_text())["optimizers"][0]["name"] for p in summaries}
    assert tuned == {"sgd", "adam"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        (["optimizer=adamw"], "Could not find 'optimizer/adamw'"),
        (["optimizer=sgd", "optimizer.hyperparameters.lr=-1"], "lr must lie in [0.0, inf]"),
        (["optimizer.hyperparameters.hidden_size=twenty"], "hidden_size"),
        (["eval.steps=many"], "eval.steps must be a positive integer"),
        (["mode=train"], "unknown mode 'train'"),
        (["device=cuda:7"], "no CUDA GPU"),
        (["task=mnist", "task.kwargs.activation=swish"], "unknown activation 'swish'"),
        (["mode=evaluate", "checkpoint=nowhere.pt"], "checkpoint=nowhere.pt does not exist"),
        (["mode=evaluate", "checkpoint=lstm-quadratc"], "did you mean lstm-quadratic"),
        (["mode=evaluate", "checkpoint=adam"], "checkpoint=adam names a hand-designed optimizer"),
        (["optimizer=adam", "checkpoint=x.pt"], "optimizer=adam is hand-designed"),
        (["mode=meta_train", "optimizer=sgd"], "needs a learned optimizer"),
        (["meta.unroll=50", "meta.horizon=20"], "meta.unroll=50 is longer than meta.horizon"),
        (["eval.baselines=[adam,rnnprop]"], "eval.baselines lists the learned optimizer"),
    ],
)
def test_bad_override_fails_fast_with_a_clear_message(tmp_path, override, message):
    proc = _train([*override, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path,
                  timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_tune_keeps_the_whole_grid_and_warns_at_its_edge(tmp_path):
    """adam's best lr on quadratics is far above 0.01: with tune.high=0.01 the best is the
    grid's top, which the log, report.md and summary.json say, naming the override to use."""
    run_dir = tmp_path / "run"
    proc = _train([*TINY, "mode=tune", "optimizer=adam", "tune.high=0.01", "logger=none",
                   f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (entry,) = json.loads((run_dir / "summary.json").read_text())["optimizers"]
    tuning = entry["tuning"]
    assert tuning["grid"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert len(tuning["scores"]) == 3 and tuning["diverged"] == [False] * 3
    assert tuning["best_lr"] == entry["tuned_lr"] == pytest.approx(1e-2)
    assert tuning["edge"] == "high"
    assert any("tune.high=0.1" in note for note in entry["notes"])
    assert "tune.high=0.1" in (run_dir / "report.md").read_text()
    assert "tune.high=0.1" in (run_dir / "train.log").read_text()
    assert (run_dir / "tuning.png").exists()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["optimizer"] for x in lines if x.get("event") == "tune"] == ["adam"]


@pytest.mark.slow
def test_missing_mnist_fails_before_any_wandb_run(tmp_path):
    """Inputs are checked before the logger starts: no MNIST in data_dir (and no download)
    fails the run with the data error and leaves no wandb run behind."""
    empty = tmp_path / "no_mnist"
    empty.mkdir()
    run_dir = tmp_path / "run"
    proc = _train(["task=mnist", f"data_dir={empty}", "task.kwargs.download=false",
                   "mode=evaluate", "optimizer=adam", *TINY, f"hydra.run.dir={run_dir}"],
                  tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "MNIST" in proc.stderr + proc.stdout
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_id.txt").exists()
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_sweep_is_aggregated_by_swept_settings_over_seeds(tmp_path):
    """A 2x2 sweep (optimizer x seed): short job folder names, and the Hydra callback writes
    one aggregate grouping the 4 jobs by optimizer, with mean and CI over the 2 seeds."""
    sweep = tmp_path / "sweep"
    proc = _train(["-m", *TINY, "mode=tune", "optimizer=sgd,adam", "seed=0,1", "logger=none",
                   "run_name=agg", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(names) == 4
    assert all("run_name" not in n and "progress" not in n and "logger" not in n for n in names)
    result = json.loads((sweep / "aggregate.json").read_text())
    assert result["jobs"] == 4 and result["swept"] == ["optimizer"]
    rows = {row["settings"]["optimizer"]: row for row in result["rows"]}
    assert set(rows) == {"sgd", "adam"}
    for name, row in rows.items():
        assert row["optimizer"] == name and row["n"] == 2 and sorted(row["seeds"]) == ["0", "1"]
        assert row["final_loss_mean"] > 0 and row["final_loss_ci95"] is not None
    assert "| optimizer |" in (sweep / "aggregate.md").read_text()
    assert (sweep / "aggregate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
