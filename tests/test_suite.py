"""The held-out suite: its definition, the training distribution's disjointness, the baseline
cache, and ``experiment=suite`` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from l2l.presets import task_preset
from l2l.run_config import plain
from l2l.suite import cache, prepare
from l2l.suite import run as suite_run
from l2l.suite.run import tuned_baseline
from l2l.suite.scoring import speed_up
from l2l.suite.spec import families, parse_tasks, suite_families, task_config
from l2l.tasks import build_task
from l2l.tracking import RunLogger

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_TASKS = ("suite.tasks=[{name:rosen2,task:rosenbrock,horizon:10,kwargs:{dim:2}},"
              "{name:quad5,task:quadratic,horizon:8,kwargs:{dim:5}}]")
TINY = ["eval.instances=4", "tune.instances=2", "tune.per_decade=1", "progress=false",
        "threads=1", "logger=none", "suite.bootstrap_reps=50", TINY_TASKS]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=suite", *overrides])


def test_the_heldout_suite_has_12_tasks_with_horizons_from_families_outside_training():
    settings = OmegaConf.to_container(OmegaConf.load(CONF / "suite" / "heldout.yaml"))
    tasks = parse_tasks(settings, CONF)
    assert len(tasks) >= 12 and all(t.horizon >= 1 for t in tasks)
    held_out = suite_families(settings, CONF)
    training = families(OmegaConf.to_container(task_preset("suite_train", CONF)))
    assert training == {"mnist_mlp", "teacher_student", "conditioned_quadratic"}
    assert len(held_out) >= 6 and not held_out & training, held_out & training


def test_the_training_distribution_is_a_weighted_augmented_mixture():
    preset = task_preset("suite_train", CONF)
    cfg = OmegaConf.create({"data_dir": None, "task": preset})
    family = build_task(cfg.task.family, **plain(cfg.task.kwargs))
    assert family.weights == list(preset.kwargs.weights) and len(family.components) == 5
    assert all(type(c).__name__ == "AugmentedFamily" for c in family.components)


@pytest.mark.parametrize("tasks, message", [
    ([], "lists no tasks"),
    ([{"name": "a", "task": "no_such_task", "horizon": 5}], "not a conf/task preset"),
    ([{"name": "a", "task": "quadratic", "horizon": 0}], "horizon must be a positive"),
    ([{"name": "a", "task": "quadratic", "horizon": 5, "steps": 3}], "unknown key"),
    ([{"name": "a", "task": "quadratic", "horizon": 5}] * 2, "more than once"),
])
def test_a_bad_suite_definition_is_refused(tasks, message):
    with pytest.raises(ValueError, match=message):
        parse_tasks({"name": "s", "tasks": tasks}, CONF)


def test_a_task_whose_data_is_absent_is_skipped_with_a_note(tmp_path):
    from l2l.suite import run_suite

    cfg = _compose([*TINY[:-1], "checkpoints=[lstm-quadratic]", f"suite.cache_dir={tmp_path}",
                    "suite.tasks=[{name:quad5,task:quadratic,horizon:6,kwargs:{dim:5}},"
                    "{name:fmnist,task:mnist_8x8,horizon:6,kwargs:{dataset:fashion_mnist,"
                    f"download:false,data_dir:{tmp_path / 'none'}}}}}]"])
    plan = prepare(cfg, torch.device("cpu"))
    assert [s.name for s, _ in plan.skipped] == ["fmnist"] and len(plan.tasks) == 1
    with RunLogger(tmp_path / "run", {}, backend="none") as logger:
        result = run_suite(cfg, torch.device("cpu"), tmp_path / "run", logger, plan)
    assert [r["task"] for r in result["rows"]] == ["quad5"]
    text = (tmp_path / "run" / "suite.md").read_text()
    assert "## Skipped tasks (data not present)" in text and "- fmnist (mnist_8x8)" in text


def test_a_suite_task_is_tuned_at_its_horizon_even_when_run_longer():
    cfg = _compose(TINY)
    (rosen, _) = parse_tasks(OmegaConf.to_container(cfg.suite), CONF)
    long = task_config(cfg, rosen, steps=40)
    assert (long.tune.steps, long.eval.steps, long.task.kwargs.dim) == (10, 40, 2)


def test_the_baseline_cache_is_reused_and_invalidated_by_a_task_or_grid_change(tmp_path):
    cfg = _compose([*TINY, "checkpoints=[lstm-quadratic]", f"suite.cache_dir={tmp_path}"])
    calls = []
    real = suite_run.tune_and_evaluate

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    device = torch.device("cpu")
    with pytest.MonkeyPatch.context() as mp, RunLogger(tmp_path / "run", {},
                                                       backend="none") as logger:
        mp.setattr(suite_run, "tune_and_evaluate", counting)

        def tuned(cfg) -> tuple[dict, bool]:
            plan = prepare(cfg, device)
            spec, vcfg, task = plan.tasks[0]
            return tuned_baseline(cfg, plan, spec, vcfg, task, "adam", device, logger)

        first, hit = tuned(cfg)
        assert not hit and len(calls) == 1 and len(list(tmp_path.glob("*.json"))) == 1
        assert len(first["mean_curve"]) == 4 * 10 + 1  # speedup_cap x horizon steps
        again, hit = tuned(cfg)
        assert hit and len(calls) == 1 and again == json.loads(json.dumps(again))
        assert again["tuned_lr"] == first["tuned_lr"]
        assert again["mean_curve"] == pytest.approx(first["mean_curve"])
        other_task = cfg.copy()
        other_task.suite.tasks[0].kwargs.dim = 3
        assert not tuned(other_task)[1] and len(calls) == 2
        other_grid = cfg.copy()
        other_grid.tune.per_decade = 2
        assert not tuned(other_grid)[1] and len(calls) == 3
        assert tuned(cfg)[1] and len(calls) == 3  # the first entry is still there
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_the_cache_key_follows_the_code_and_a_corrupt_entry_is_ignored(tmp_path):
    from l2l.registry import build_optimizer
    from l2l.tasks import QuadraticFamily

    adam, task = build_optimizer("adam"), QuadraticFamily(dim=3)
    version = cache.code_version(adam, task)
    assert version == cache.code_version(adam, task)
    assert version != cache.code_version(build_optimizer("sgd"), task)  # other source file
    key = {"baseline": "adam", "code": version}
    cache.store(tmp_path, key, {"tuned_lr": 0.1})
    assert cache.load(tmp_path, key) == {"tuned_lr": 0.1}
    cache.cache_path(tmp_path, key).write_text("{not json")
    assert cache.load(tmp_path, key) is None


def _train(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_suite_in_one_command_scores_a_zoo_checkpoint_and_reuses_the_cache(tmp_path):
    args = ["experiment=suite", *TINY, "checkpoints=[lstm-quadratic]",
            f"suite.cache_dir={tmp_path / 'cache'}"]
    first = _train([*args, f"hydra.run.dir={tmp_path / 'one'}"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((tmp_path / "one" / "suite.json").read_text())
    assert [r["task"] for r in result["rows"]] == ["rosen2", "quad5"]
    for row, task in zip(result["rows"], result["tasks"]):
        assert row["group"] == "lstm-quadratic" and task["baselines"]["adam"]["cached"] is False
        curve = task["baselines"]["adam"]["mean_curve"]
        assert len(curve) == 4 * row["horizon"] + 1
        assert row["reference_final_loss"] == pytest.approx(curve[row["horizon"]])
        assert row["ratio"] == pytest.approx(row["learned_final_loss"]
                                             / row["reference_final_loss"])
        assert row["speed_up"] == speed_up(curve, row["learned_final_loss"], row["horizon"])
    agg = result["aggregates"]["lstm-quadratic"]
    assert agg["tasks"] == 2 and agg["runs"] == 1
    assert agg["ratio"]["iqm"] == pytest.approx(sum(r["ratio"] for r in result["rows"]) / 2)
    assert agg["ratio"]["ci_low"] == pytest.approx(agg["ratio"]["iqm"])  # one seed: a point
    table = (tmp_path / "one" / "suite.md").read_text()
    verdict = [line for line in table.splitlines() if line.startswith("**Verdict**")]
    assert len(verdict) == 1 and "of 3 goals met" in verdict[0] and verdict[0] in first.stdout
    assert "| rosen2 | 10 |" in table and "| **IQM** (2 tasks × 1 runs" in table
    assert (tmp_path / "one" / "suite_profile.png").read_bytes()[:4] == b"\x89PNG"
    # the next optimizer on the same suite (in-process, the same settings): no tuning again
    from l2l.suite import run_suite

    cfg = _compose([*TINY, "checkpoints=[lstm-quadratic]",
                    f"suite.cache_dir={tmp_path / 'cache'}"])
    calls = []
    with pytest.MonkeyPatch.context() as mp, RunLogger(tmp_path / "two", {},
                                                       backend="none") as logger:
        mp.setattr(suite_run, "tune_and_evaluate", lambda *a, **k: calls.append(a))
        again = json.loads(json.dumps(run_suite(cfg, torch.device("cpu"), tmp_path / "two",
                                                logger), default=str))
    assert calls == [] and all(t["baselines"]["adam"]["cached"] for t in again["tasks"])
    assert [r["ratio"] for r in again["rows"]] == pytest.approx([r["ratio"]
                                                                 for r in result["rows"]])
    assert "2 of 2 tuned baselines came from the cache" in (tmp_path / "two" / "suite.md"
                                                             ).read_text()
    assert not math.isnan(again["aggregates"]["lstm-quadratic"]["speed_up"]["iqm"])


@pytest.mark.slow
def test_an_unknown_suite_task_fails_in_one_line_before_any_work(tmp_path):
    proc = _train(["experiment=suite", "logger=none", "checkpoints=[lstm-quadratic]",
                   "suite.tasks=[{name:x,task:no_such_task,horizon:5}]",
                   f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "task 'x': task='no_such_task' is not a conf/task preset" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "suite.json").exists()


@pytest.mark.parametrize("overrides, message", [
    (["experiment=suite"], "needs checkpoints="),
    (["experiment=suite", "checkpoints=[lstm-quadratic]", "suite.reference=nadam"],
     "suite.reference=nadam is not among eval.baselines"),
    (["experiment=suite", "checkpoints=[lstm-quadratic]", "suite.speedup_cap=0"],
     "suite.speedup_cap must be a positive integer"),
    (["mode=suite", "checkpoints=[lstm-quadratic]"], "run it as experiment=suite"),
])
def test_a_bad_suite_run_is_refused_by_prepare(overrides, message):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, TINY_TASKS]
                      if overrides[0] == "experiment=suite" else overrides)
    with pytest.raises(ValueError, match=message):
        prepare(cfg, torch.device("cpu"))
