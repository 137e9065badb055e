"""The generalization study (mode=generalization): checkpoints x variants x tuned baselines,
with meta-training seeds aggregated; and the zoo script's index entries."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from l2l.modes import generalization
from l2l.modes.generalization import winner
from l2l.presets import Variant, parse_variants, task_preset, variant_config
from l2l.records import StudyRow
from l2l.report import DASH, dumps
from l2l.report.study import study_verdict, summary_matrix
from l2l.run_config import in_mixture

ROOT = Path(__file__).resolve().parents[1]
TINY = ["eval.steps=12", "eval.instances=6", "tune.instances=3", "tune.per_decade=1",
        "meta.iterations=2", "meta.horizon=12", "meta.unroll=6", "meta.batch_size=2",
        "meta.val_every=1", "meta.val_instances=4", "progress=false", "threads=1",
        "logger=none"]
VARIANTS = ("generalization.variants=[{name:steps20,task:quadratic,eval_steps:20},"
            "{name:dim5,task:quadratic,kwargs:{dim:5}}]")


def _train(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[Path]:
    """Two tiny meta-trainings of the LSTM on quadratics, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("seeds")
    paths = []
    for seed in (0, 1):
        proc = _train([*TINY, "mode=meta_train", f"seed={seed}",
                       f"hydra.run.dir={root / f'seed{seed}'}"], root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        paths.append(root / f"seed{seed}")
    return paths


@pytest.mark.slow
def test_study_in_one_command_aggregates_seeds_per_variant(tmp_path, seeds):
    run_dir = tmp_path / "study"
    checkpoints = ",".join(str(p / "checkpoints" / "best.pt") for p in seeds)
    proc = _train([*TINY, "experiment=generalization", "task=quadratic",
                   "eval.baselines=[sgd,adam]", f"checkpoints=[{checkpoints}]", VARIANTS,
                   f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "generalization.json").read_text())
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["base", "steps20", "dim5"]
    for row in rows:
        assert row["group"] == "lstm" and row["n_seeds"] == 2 and row["ci_over"] == "seeds"
        finals = [s["final_loss"] for s in row["per_seed"]]
        assert [s["seed"] for s in row["per_seed"]] == [0, 1]
        assert row["learned_mean"] == pytest.approx(sum(finals) / 2)
        assert row["worst_seed"]["final_loss"] == max(finals)
        assert row["best_baseline"] in ("sgd", "adam")
        assert row["ratio"] == pytest.approx(row["learned_mean"] / row["best_baseline_mean"])
        assert row["winner"] in ("learned", row["best_baseline"], "overlap")
    steps = {v["name"]: v["steps"] for v in result["variants"]}
    assert steps == {"base": 12, "steps20": 20, "dim5": 12}
    assert [len(v["baselines"]) for v in result["variants"]] == [2, 2, 2]
    # baselines are tuned per variant (one tuning record per baseline and variant)
    tuned = [json.loads(x)["optimizer"] for x in (run_dir / "metrics.jsonl").read_text()
             .splitlines() if '"event": "tune"' in x]
    assert len(tuned) == 6 and "generalization/dim5/adam" in tuned
    seen = {r["variant"]: r["seen_in_training"] for r in rows}
    assert seen == {"base": "yes", "steps20": "task only (12 steps)", "dim5": "no"}
    assert "quadratic" in result["groups"]["lstm"]["trained_on"]
    table = (run_dir / "generalization.md").read_text()
    for name in ("| base |", "| steps20 |", "| dim5 |", "mean ± 95% CI over seeds", "worst seed"):
        assert name in table
    for row in rows:
        assert row["winner_log10"] in ("learned", row["best_log10_baseline"], "overlap")
    # the table ends with its verdict, in the file and on the console
    verdict = [line for line in table.splitlines() if line.startswith("**Verdict**")]
    assert len(verdict) == 1 and "mean final loss: base " in verdict[0]
    assert "Mean log10 final loss: base " in verdict[0] and verdict[0] in proc.stdout
    assert (run_dir / "generalization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_labelled_zoo_entry_is_its_own_group(tmp_path):
    run_dir = tmp_path / "study"
    proc = _train([*TINY, "mode=generalization", "eval.baselines=[adam]",
                   "checkpoints=[{path:lstm-quadratic,label:zoo}]", "generalization.base=false",
                   "generalization.variants=[{name:dim5,task:quadratic,kwargs:{dim:5}}]",
                   f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "generalization.json").read_text())
    (row,) = result["rows"]
    assert (row["group"], row["variant"], row["n_seeds"], row["ci_over"]) == (
        "zoo", "dim5", 1, "instances")
    assert "100-step horizon" in result["groups"]["zoo"]["trained_on"]


@pytest.mark.slow
def test_the_run_line_names_the_checkpoints_optimizers(tmp_path):
    """Not the config's default optimizer (lstm): the log says what is being studied."""
    proc = _train([*TINY, "mode=generalization", "eval.baselines=[adam]",
                   "checkpoints=[learnable-adam-mnist,{path:lstm-quadratic,label:zoo}]",
                   "generalization.base=false", "task=quadratic",
                   "generalization.variants=[{name:dim5,task:quadratic,kwargs:{dim:5}}]",
                   f"hydra.run.dir={tmp_path / 'study'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mode=generalization task=quadratic optimizer=learnable_adam,lstm device" in (
        proc.stderr)


@pytest.mark.slow
def test_a_bad_study_fails_before_any_work(tmp_path):
    for args, message in [([], "needs checkpoints="),
                          (["checkpoints=[nowhere.pt]"], "nowhere.pt"),
                          (["checkpoints=[lstm-quadratic]",
                            "generalization.variants=[{name:x,task:no_such_task}]"],
                           "no_such_task")]:
        proc = _train(["mode=generalization", "logger=none", *args,
                       f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=120)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]


def test_task_presets_are_read_from_conf_task_with_their_defaults():
    preset = task_preset("mnist_40", ROOT / "conf")
    assert preset.name == "mnist_40" and preset.family == "mnist_mlp"
    assert list(preset.kwargs.hidden_sizes) == [40] and preset.kwargs.activation == "sigmoid"
    cfg = OmegaConf.load(ROOT / "conf" / "config.yaml")
    cfg.task = task_preset("quadratic", ROOT / "conf")
    cfg.data_dir = None
    vcfg = variant_config(cfg, Variant("v", "mnist_relu", eval_steps=200, kwargs={"init_std": 1}))
    assert (vcfg.task.name, vcfg.eval.steps, vcfg.tune.steps) == ("mnist_relu", 200, 200)
    assert vcfg.task.kwargs.activation == "relu" and vcfg.task.kwargs.init_std == 1
    assert cfg.eval.steps == 100 and cfg.task.name == "quadratic"  # the run's config untouched


def test_the_experiment_preset_lists_the_paper_variants_relu_at_200_steps_cnn_and_logreg():
    cfg = OmegaConf.load(ROOT / "conf" / "experiment" / "generalization.yaml")
    variants = parse_variants(cfg)
    assert [(v.name, v.task, v.eval_steps) for v in variants] == [
        ("base", None, None), ("200_steps", "mnist", 200), ("40_units", "mnist_40", None),
        ("2_layers", "mnist_2layer", None), ("relu", "mnist_relu", None),
        ("relu_200_steps", "mnist_relu", 200), ("cnn", "mnist_cnn", None),
        ("logreg", "mnist_logreg", None)]
    for variant in variants[1:]:
        task_preset(variant.task, ROOT / "conf")  # every preset exists in conf/task


def test_a_mixture_component_counts_as_seen_in_training():
    mixture = OmegaConf.to_container(task_preset("mnist_mixture", ROOT / "conf"), resolve=False)
    mixture = {"name": mixture["name"], "family": mixture["family"], "kwargs": mixture["kwargs"]}

    def target(preset):
        cfg = OmegaConf.to_container(task_preset(preset, ROOT / "conf"), resolve=False)
        return {"name": cfg["name"], "family": cfg["family"],
                "kwargs": {k: v for k, v in cfg["kwargs"].items()
                           if k not in ("data_dir", "download")}}

    assert in_mixture(mixture, target("mnist")) and in_mixture(mixture, target("mnist_40"))
    assert not in_mixture(mixture, target("mnist_relu"))  # held out: no ReLU component
    assert not in_mixture(mixture, target("mnist_2layer"))  # its 2-layer nets are tanh 10-10
    assert not in_mixture(target("mnist"), target("mnist"))  # not a mixture at all


def _row(variant, group, mean, ci, winner, **more):
    return StudyRow(variant=variant, group=group, learned_mean=mean, learned_ci95=ci,
                    winner=winner, best_baseline="adam", best_baseline_mean=0.3,
                    best_baseline_ci95=0.01, best_baseline_lr=0.02, **more)


def test_the_side_by_side_matrix_marks_only_separated_winners():
    result = {"groups": {"lstm": {}, "rnnprop": {}},
              "rows": [_row("base", "lstm", 0.2, 0.01, "learned"),
                       _row("base", "rnnprop", 0.5, 0.01, "adam"),
                       _row("relu", "lstm", 0.31, 0.05, "overlap"),
                       _row("relu", "rnnprop", math.nan, math.nan, DASH)]}
    lines = summary_matrix(result).splitlines()
    assert lines[0] == "| variant | lstm | rnnprop | best tuned baseline |"
    assert lines[2].startswith("| base | **0.2 ± 0.01** ✓ | 0.5 ± 0.01 ✗ | adam 0.3 ± 0.01")
    assert "✓" not in lines[3] and "✗" not in lines[3]  # an overlap and a missing result
    assert len(lines) == 4


def test_winner_needs_separated_intervals():
    assert winner((1.0, 0.1), (2.0, 0.1), "adam") == "learned"
    assert winner((2.0, 0.1), (1.0, 0.1), "adam") == "adam"
    assert winner((1.0, 0.6), (2.0, 0.6), "adam") == "overlap"
    assert winner((1.0, math.nan), (2.0, 0.1), "adam") == "overlap (no CI)"
    with pytest.raises(ValueError, match="distinct names"):
        parse_variants(OmegaConf.create({"generalization": {"variants": [{"name": "base"}]}}))
    assert generalization.Study([], []).groups == {}


@pytest.mark.slow
def test_train_zoo_script_writes_an_index_entry_from_a_run(seeds):
    spec = importlib.util.spec_from_file_location("train_zoo", ROOT / "scripts" / "train_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = module.index_entry("lstm-tiny", seeds[1])
    assert (record["name"], record["file"], record["optimizer"]) == ("lstm-tiny", "lstm-tiny.pt",
                                                                      "lstm")
    assert record["task"] == "quadratic" and record["seed"] == 1
    assert record["command"].startswith("python train.py ") and "seed=1" in record["command"]
    # one unit: a task is one meta-iteration, of problems_per_task problems
    assert record["meta_training_tasks"] == record["iteration"]
    assert record["problems_per_task"] == 2 and record["run_tasks"] == 2
    assert record["score"] == "validation final loss"
    assert math.isfinite(record["val_loss"]) and "note" not in record
    assert module.index_entry("lstm-tiny", seeds[1], note="seed 1 of 3")["note"] == "seed 1 of 3"


@pytest.mark.slow
def test_a_finished_study_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "generalization.json").write_text("{}")
    proc = _train(["mode=generalization", "logger=none", "checkpoints=[lstm-quadratic]",
                   f"hydra.run.dir={run_dir}"], tmp_path, timeout=120)
    assert proc.returncode == 1 and "already holds results" in proc.stderr
    assert (run_dir / "generalization.json").read_text() == "{}"


def test_the_study_verdict_names_each_variants_winner_or_overlap():
    rows = [_row("base", "lstm", 0.2, 0.01, "learned", learned_log10_mean=-1.0,
                 learned_log10_ci95=0.5, best_log10_baseline="adam", best_log10_mean=-0.9,
                 best_log10_ci95=0.5, winner_log10="overlap"),
            _row("relu", "lstm", 0.5, 0.3, "overlap", winner_log10="adam")]
    assert study_verdict(rows) == (
        "**Verdict** (learned vs the best tuned baseline, separated 95% intervals) — mean final "
        "loss: base learned wins; relu overlap (lowest: adam). Mean log10 final loss: base "
        "overlap (lowest: learned); relu adam wins.")


def test_a_study_row_round_trips_and_refuses_a_misspelled_field():
    row = _row("base", "lstm", 0.2, 0.01, "learned", mean_curve=[1.0, math.inf])
    again = StudyRow.from_json(json.loads(dumps(row)))
    assert again.learned_mean == 0.2 and math.isnan(again.mean_curve[1])
    with pytest.raises(ValueError, match="no field 'learned_maen'"):
        StudyRow.from_json({**row.to_json(), "learned_maen": 0.2})
