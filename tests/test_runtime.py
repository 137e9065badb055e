"""Runtime choices: threads for the machine, optimizer defaults defined once, a useful --help."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from l2l import app_help
from l2l.env import runtime
from l2l.env.runtime import available_cpus, resolve_compile, resolve_threads
from l2l.meta_training import MetaConfig
from l2l.registry import build_optimizer, optimizer_defaults, optimizers

ROOT = Path(__file__).resolve().parents[1]


def test_auto_threads_use_one_for_small_problems_and_share_cores_among_jobs():
    assert resolve_threads("auto", problem_size=10)[0] == 1
    threads, why = resolve_threads("auto", problem_size=1_000_000)
    assert 1 <= threads <= available_cpus() and why.startswith("auto")
    assert resolve_threads("auto", problem_size=1_000_000, parallel_jobs=10**6)[0] == 1
    assert resolve_threads(3) == (3, "as given")
    assert resolve_threads(None)[0] is None
    for bad in (-1, 0, 2.5, "many", True):
        with pytest.raises(ValueError, match="must be a positive integer, auto, or null"):
            resolve_threads(bad)


def test_compile_auto_compiles_large_problems_where_a_compiler_exists(monkeypatch):
    cpu = torch.device("cpu")
    assert MetaConfig().compile == "auto"
    assert resolve_compile(True, problem_size=10, device=cpu) is True
    assert resolve_compile(False, problem_size=10**6, device=cpu) is False
    assert resolve_compile("auto", problem_size=10, device=cpu) is False  # too small to pay
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/" + name)
    assert resolve_compile("auto", problem_size=15_910, device=cpu) is True
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)  # no C++ compiler
    with pytest.warns(RuntimeWarning, match="no C.. compiler .* runs uncompiled"):
        assert resolve_compile("auto", problem_size=15_910, device=cpu) is False


def test_bad_compile_settings_are_refused_with_the_choices():
    for bad in ("yes", 2, None):
        with pytest.raises(ValueError, match="meta.compile must be true, false or auto"):
            MetaConfig(compile=bad)
    with pytest.raises(ValueError, match="meta.compile must be true, false or auto"):
        resolve_compile("sometimes", problem_size=10**6, device=torch.device("cpu"))


@pytest.mark.slow
def test_optimizer_yamls_take_their_defaults_from_the_classes():
    """No default is written twice: each yaml composes to its class's signature defaults (the
    LSTM's per-task settings aside), and building from the config gives the default object."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in optimizers():
            cfg = compose("config", overrides=[f"optimizer={name}", "task=mnist"])
            hyper = OmegaConf.to_container(cfg.optimizer.hyperparameters, resolve=True)
            assert cfg.optimizer.name == name
            assert hyper == optimizer_defaults(name)["hyperparameters"], name
            assert build_optimizer(name, **hyper).hyperparameters() == \
                build_optimizer(name).hyperparameters()
        quad = compose("config", overrides=["optimizer=lstm", "task=quadratic"])
        assert quad.optimizer.hyperparameters.preprocessing == "none"
        assert quad.optimizer.hyperparameters.output_scale == 1.0
    for path in (ROOT / "conf" / "optimizer").glob("*.yaml"):
        assert "lr: " not in path.read_text() or path.stem == "lstm", path


def test_help_page_lists_every_group_option_of_the_conf_tree():
    groups = app_help.config_groups(ROOT / "conf")
    page = app_help.render(ROOT / "conf")
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1].split(", ")
             for line in page.split("== Config groups (group=option) ==\n", 1)[1].split("\n\n")[0]
             .splitlines()}
    on_disk = {path.name: sorted(p.stem for p in path.glob("*.yaml"))
               for path in (ROOT / "conf").iterdir() if path.is_dir() and path.name != "hydra"}
    assert lines == groups == on_disk
    assert "$" not in page and "optimizer_defaults" not in page  # Hydra's variables all filled


def _mode_names() -> list[str]:
    """The keys of ``l2l.modes.MODES``, read from its source (importing it imports torch)."""
    tree = ast.parse((ROOT / "l2l" / "modes" / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "MODES":
            return [key.value for key in node.value.keys]
    raise AssertionError("l2l/modes/__init__.py defines no MODES")


@pytest.mark.slow
def test_help_lists_modes_groups_and_presets_without_importing_torch():
    script = ("import runpy, sys\n"
              "sys.argv = sys.argv[1:]\n"
              "try:\n"
              "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
              "finally:\n"
              "    print(sorted({'torch', 'hydra'} & set(sys.modules)), file=sys.stderr)\n")
    for flag in ("--help", "-h"):
        argv = [sys.executable, "-c", script, str(ROOT / "train.py"), "mode=tune", flag]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == "[]"  # neither torch nor Hydra imported
        out = proc.stdout
        modes = out.split("== Modes (mode=) ==", 1)[1].split("==", 1)[0]
        for mode in _mode_names():  # every mode train.py accepts is in the list
            assert f"  {mode} " in modes, mode
        for group, options in app_help.config_groups(ROOT / "conf").items():
            assert f"{group}: {', '.join(options)}\n" in out, group
        for word in ("python -m l2l", "paper_mnist run_name=", "--cfg job"):
            assert word in out, word


@pytest.mark.slow
def test_seed_sweeps_keep_the_test_problems_unless_eval_seed_changes(tmp_path):
    """`seed` is the meta-training seed; `eval.seed` alone picks validation and test problems."""
    import json
    import os

    def tuned(*overrides: str) -> dict:
        run = tmp_path / "_".join(o.replace("=", "") for o in overrides)
        env = {**os.environ, "WANDB_SILENT": "true"}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), "mode=tune", "optimizer=sgd",
             "eval.instances=4", "eval.steps=10", "tune.instances=3", "tune.per_decade=1",
             "logger=none", "progress=false", f"hydra.run.dir={run}", *overrides],
            capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads((run / "summary.json").read_text())
        assert {"seed", "eval_seed"} <= set(summary)  # both recorded in every summary
        return summary["optimizers"][0]

    a, b, c = tuned("seed=0"), tuned("seed=1"), tuned("seed=0", "eval.seed=1")
    assert a["mean_curve"] == b["mean_curve"] and a["tuned_lr"] == b["tuned_lr"]
    assert a["mean_curve"] != c["mean_curve"]


def _fake_cpu(monkeypatch, load: float, samples: list[tuple[int, int]] | None) -> None:
    """A 2-CPU machine with this 1-minute load and these successive /proc/stat readings."""
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (load, load, load))
    readings = itertools.cycle(samples) if samples is not None else None
    monkeypatch.setattr(runtime, "_cpu_times",
                        lambda: None if readings is None else next(readings))
    monkeypatch.setattr(runtime.time, "sleep", lambda seconds: None)


def test_auto_threads_ignore_a_load_average_left_by_a_job_that_has_ended(monkeypatch):
    # the last minute's load says one core is busy, but nothing runs now: both cores are free
    _fake_cpu(monkeypatch, load=1.2, samples=[(100, 1000), (100, 1040)])
    assert runtime.busy_cpus() == 0.0
    assert resolve_threads("auto", problem_size=1_000_000)[0] == 2


def test_auto_threads_leave_a_core_to_a_job_that_is_running(monkeypatch):
    # a CPU-bound neighbour: one of two CPUs busy in the sample, and in the load average
    _fake_cpu(monkeypatch, load=1.0, samples=[(100, 1000), (120, 1040)])
    assert runtime.busy_cpus() == 1.0
    threads, why = resolve_threads("auto", problem_size=1_000_000)
    assert threads == 1 and "machine is busy (1.0 cores in use)" in why


def test_auto_threads_use_the_load_average_where_there_is_no_proc_stat(monkeypatch):
    _fake_cpu(monkeypatch, load=1.0, samples=None)  # macOS, Windows
    assert runtime.busy_cpus() == 1.0
    assert resolve_threads("auto", problem_size=1_000_000)[0] == 1
    _fake_cpu(monkeypatch, load=0.1, samples=None)
    assert resolve_threads("auto", problem_size=1_000_000)[0] == 2


def test_auto_threads_do_not_wait_for_a_sample_on_a_quiet_machine(monkeypatch):
    _fake_cpu(monkeypatch, load=0.2, samples=None)

    def no_sample():
        raise AssertionError("sampled /proc/stat although the load leaves every core free")

    monkeypatch.setattr(runtime, "_cpu_times", no_sample)
    assert runtime.busy_cpus() == 0.2
    assert resolve_threads("auto", problem_size=1_000_000)[0] == 2
