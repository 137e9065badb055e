"""The pretrained zoo: every shipped entry loads, is described, and beats doing nothing on
held-out problems of the task it was trained on; zoo names work wherever a checkpoint goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import l2l.pretrained as zoo
from l2l.checkpoint import CheckpointError
from l2l.evaluation import run_optimizer
from l2l.learned.base import LearnedOptimizer
from l2l.tasks import MNISTNotFoundError, build_task

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = zoo.names()
FIELDS = ("name", "file", "optimizer", "task", "task_config", "command", "seed", "iteration",
          "meta_training_tasks", "val_loss", "l2l_version", "date")


def test_the_zoo_ships_the_quadratic_lstm_with_its_recipe():
    assert "lstm-quadratic" in ENTRIES
    for record in zoo.list():
        for key in FIELDS:
            assert key in record, (record["name"], key)
        assert record["command"].startswith("python train.py ")
        assert "mode=meta_train" in record["command"]
        assert zoo.path(record["name"]).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_beats_the_no_op_on_held_out_problems_of_its_task(name):
    record = zoo.entry(name)
    optimizer = zoo.load(name)
    assert isinstance(optimizer, LearnedOptimizer) and optimizer.name == record["optimizer"]
    spec = record["task_config"]
    task = build_task(spec["family"], **spec["kwargs"])
    try:  # seed 9999: problems neither meta-training nor validation ever drew
        instances = task.sample(16, 9999, "test")
    except MNISTNotFoundError as error:
        pytest.skip(f"{name} needs MNIST: {error}")
    steps = record.get("horizon") or 100
    final = run_optimizer(optimizer, instances, steps, with_metrics=False).final_loss
    with torch.no_grad():  # the no-op (zero update) stays at theta_0
        no_op = instances.loss_and_grad(instances.init_params, steps)[0].double()
    assert torch.isfinite(final).all()
    assert final.mean() < no_op.mean()
    if spec["family"] == "quadratic":  # and far below it
        assert final.mean() < 0.1 * no_op.mean()


def test_resolve_accepts_names_package_paths_and_files(tmp_path, monkeypatch):
    shipped = zoo.path("lstm-quadratic")
    assert zoo.resolve("lstm-quadratic") == shipped
    monkeypatch.chdir(tmp_path)  # l2l/pretrained/<name>.pt is found from any directory
    assert zoo.resolve("l2l/pretrained/lstm-quadratic.pt") == shipped
    assert zoo.resolve(shipped) == shipped
    with pytest.raises(CheckpointError, match="lstm-quadratic"):  # the error lists the zoo
        zoo.resolve("no-such-optimizer")


@pytest.mark.slow
def test_listing_command_prints_how_each_entry_was_trained():
    proc = subprocess.run([sys.executable, "-m", "l2l.pretrained"], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for record in zoo.list():
        assert record["name"] in proc.stdout and record["command"] in proc.stdout


def test_package_data_declares_the_zoo_files():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"pretrained/*.pt"' in text and '"pretrained/*.json"' in text
    index = json.loads((ROOT / "l2l" / "pretrained" / "index.json").read_text())
    assert {e["file"] for e in index["entries"]} <= {p.name for p in zoo.ZOO_DIR.glob("*.pt")}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["lstm-quadratic", "l2l/pretrained/lstm-quadratic.pt"])
def test_train_evaluates_a_zoo_entry_by_name_or_package_path(tmp_path, checkpoint):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "mode=evaluate", "optimizer=lstm",
         f"checkpoint={checkpoint}", "eval.steps=20", "eval.instances=4", "logger=none",
         "progress=false", "threads=1", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (entry,) = json.loads((run_dir / "summary.json").read_text())["optimizers"]
    assert entry["learned"] and entry["status"] == "ok"
    assert entry["final_loss_mean"] < entry["mean_curve"][0]


@pytest.mark.slow
def test_an_unknown_checkpoint_name_fails_fast_listing_the_zoo(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "mode=evaluate", "checkpoint=lstm-nowhere",
         "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "lstm-nowhere" in proc.stderr and "lstm-quadratic" in proc.stderr


# -- what a newcomer needs from each entry -----------------------------------------------------

NEWCOMER_FIELDS = ("trained_on", "works_on", "fails_on", "evidence", "fails_on_tasks", "cost",
                   "sha256", "run_tasks", "problems_per_task", "score")


def test_every_entry_says_what_it_suits_fails_on_and_costs():
    for record in zoo.list():
        for key in NEWCOMER_FIELDS:
            assert key in record, (record["name"], key)
        for model in ("cnn", "transformer"):  # measured by benchmarks/bench_dropin.py
            cost = record["cost"][model]
            assert cost["ns_per_param_step"] > 0 and cost["x_adam"] > 0, record["name"]
        assert record["cost"]["source"] == "benchmarks/bench_dropin.py"
        assert zoo.verify(record["name"]) == zoo.path(record["name"])  # the shipped sha256
        for source in record["evidence"].replace(",", ";").split(";"):  # cited files exist
            source = source.strip().split(" ")[0]
            if source.startswith("docs/"):
                assert (ROOT / source).is_file(), (record["name"], source)
        text = zoo.describe(record)
        for label in ("trained on:", "suits:", "fails on:", "cost:", "ns/param", "x torch Adam",
                      record["works_on"], record["fails_on"], record["sha256"][:12]):
            assert label in text, (record["name"], label)


def test_the_listing_states_one_recommended_default():
    best = zoo.recommended()
    assert best is not None and best["name"] in ENTRIES and best["why"]
    import contextlib
    import io

    from l2l.pretrained.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main()
    assert f"recommended default: {best['name']}" in out.getvalue()


def _run_tasks_of(command: str) -> int:
    """The run's length from its command: meta.iterations=, else the meta preset's."""
    import yaml

    words = dict(w.split("=", 1) for w in command.split() if "=" in w)
    if "meta.iterations" in words:
        return int(words["meta.iterations"])
    preset = words.get("meta", "paper")
    return yaml.safe_load((ROOT / "conf" / "meta" / f"{preset}.yaml").read_text())["iterations"]


def test_task_counts_use_one_unit_across_index_listing_and_readme():
    """A task is one meta-iteration (of problems_per_task problems): the index, the listing and
    the zoo's page (docs/pretrained.md) give the kept checkpoint's and the run's counts in that
    unit."""
    page = (ROOT / "docs" / "pretrained.md").read_text()
    section = page.split("## The entries", 1)[1].split("\n## ", 1)[0]
    for record in zoo.list():
        assert record["meta_training_tasks"] == record["iteration"], record["name"]
        assert record["run_tasks"] == _run_tasks_of(record["command"]), record["name"]
        assert record["problems_per_task"] == record["meta_batch_size"], record["name"]
        text = zoo.describe(record)
        assert (f"kept at task {record['meta_training_tasks']} of a {record['run_tasks']}-task "
                f"run, {record['problems_per_task']} problem") in text
        (bullet,) = [" ".join(b.split("\n\n")[0].split()) for b in section.split("\n- ")[1:]
                     if f"`{record['name']}`" in b.split("\n\n")[0]]
        assert f"{record['run_tasks']} tasks" in bullet, (record["name"], bullet)
        if record["problems_per_task"] != 1:
            assert f"of {record['problems_per_task']} problems" in bullet, record["name"]


def test_a_mixture_entry_names_its_log_score():
    mixtures = [r for r in zoo.list() if r["task_config"]["family"] == "mixture"]
    assert mixtures
    for mixture in mixtures:
        text = zoo.describe(mixture)
        assert "ln(final loss)" in text and "validation final loss" not in text, mixture["name"]
    (plain,) = [r for r in zoo.list() if r["name"] == "lstm-mnist"]
    assert f"validation final loss {plain['val_loss']:.4g}" in zoo.describe(plain)


def _private_zoo(tmp_path, monkeypatch, entries):
    """A copy of the zoo's files in tmp_path with its own index.json holding ``entries``."""
    for name in ENTRIES:
        (tmp_path / zoo.entry(name)["file"]).write_bytes(zoo.path(name).read_bytes())
    (tmp_path / "index.json").write_text(json.dumps({"entries": entries}))
    monkeypatch.setattr(zoo.zoo, "ZOO_DIR", tmp_path)  # the index module the loader reads
    monkeypatch.setattr(zoo.zoo, "INDEX", tmp_path / "index.json")


def test_an_entry_pointing_at_another_entrys_file_is_refused(tmp_path, monkeypatch):
    wrong = {**zoo.entry("lstm-quadratic"), "file": zoo.entry("lstm-mnist")["file"]}
    _private_zoo(tmp_path, monkeypatch, [wrong])
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        zoo.load("lstm-quadratic")


def test_an_edited_zoo_file_is_refused(tmp_path, monkeypatch):
    _private_zoo(tmp_path, monkeypatch, [zoo.entry("lstm-quadratic")])
    with (tmp_path / "lstm-quadratic.pt").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="lstm-quadratic.*sha256"):
        zoo.load("lstm-quadratic")


@pytest.mark.parametrize("missing", ["file", "name"])
def test_an_index_entry_without_file_or_name_is_one_clear_error(tmp_path, monkeypatch, missing):
    broken = {k: v for k, v in zoo.entry("lstm-quadratic").items() if k != missing}
    _private_zoo(tmp_path, monkeypatch, [broken])
    label = "#1" if missing == "name" else "lstm-quadratic"
    with pytest.raises(CheckpointError, match=f"entry {label} has no '{missing}'"):
        zoo.names()


def test_an_index_entry_whose_file_leaves_the_zoo_is_refused(tmp_path, monkeypatch):
    _private_zoo(tmp_path, monkeypatch, [{**zoo.entry("lstm-quadratic"), "file": "../x.pt"}])
    with pytest.raises(CheckpointError, match="not a plain file name"):
        zoo.names()


@pytest.mark.parametrize("name", ["../../../x", "a/b", "..", ".hidden", ""])
def test_train_zoo_refuses_names_that_escape_the_zoo(tmp_path, name, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_zoo", ROOT / "scripts" / "train_zoo.py")
    train_zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_zoo)
    before = sorted(p.name for p in zoo.ZOO_DIR.iterdir())
    with pytest.raises(SystemExit, match="invalid zoo name"):
        train_zoo.main([name, "--from-run", str(tmp_path)])
    assert sorted(p.name for p in zoo.ZOO_DIR.iterdir()) == before


def test_load_logs_what_the_entry_suits_and_fails_on(caplog):
    with caplog.at_level("INFO", logger="l2l"):
        learned = zoo.load("lstm-mnist")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "l2l"]
    assert line.startswith("pretrained lstm-mnist: trained on ") and "fails on: " in line
    assert learned.pretrained_name == "lstm-mnist"


def test_documented_failures_warn_on_the_task_and_in_the_drop_in(caplog):
    import l2l

    assert zoo.warn_task("lstm-mnist", "mnist_relu")
    assert not zoo.warn_task("lstm-mnist", "mnist")
    assert not zoo.warn_task("runs/not-a-zoo-file.pt", "mnist_relu")
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    caplog.clear()
    with caplog.at_level("WARNING", logger="l2l"):
        l2l.TorchOptimizer(mlp.parameters(), zoo.load("lstm-mnist"))
        assert not caplog.records  # documented to fail on convolutions, not on this MLP
        l2l.TorchOptimizer(cnn[0].parameters(), zoo.load("lstm-mnist"))
        assert "documented to fail on a module with convolutions" in caplog.text
        caplog.clear()
        l2l.TorchOptimizer(mlp.parameters(), zoo.load("lstm-quadratic"))
        assert "documented to fail on this module" in caplog.text
        caplog.clear()
        l2l.TorchOptimizer(cnn[0].parameters(), zoo.load("rnnprop-mnist-mixture"))
        assert not caplog.records


@pytest.mark.slow
@pytest.mark.parametrize("module", ["l2l.pretrained", "l2l"])
def test_a_listing_cut_short_by_head_exits_quietly(module):
    proc = subprocess.run(f"{sys.executable} -m {module} | head -1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_the_benchmark_writes_the_costs_it_measured_into_the_index(tmp_path):
    """``bench_dropin.py --zoo-index`` replaces a measured entry's cost and leaves every other
    byte of the index as it was (the file is the zoo's, diffs of it are reviewed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_dropin", ROOT / "benchmarks" / "bench_dropin.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    index = tmp_path / "index.json"
    original = (ROOT / "l2l" / "pretrained" / "index.json").read_text()
    index.write_text(original)
    row = {"ns_per_param_step": 12.5, "x_adam": 2.5, "x_adam_foreach": 2.75, "first_step_s": 0.1,
           "ms_per_step": 13.6}
    results = {"machine": "a test machine", "date": "2026-12-03", "sgemm_gflops": 99.0,
               "models": {m: {"parameters": 10, "rows": {"learnable-adam-mnist": row}}
                          for m in ("cnn", "transformer")}}
    bench.write_costs(index, results)
    text = index.read_text()
    written = json.loads(text)
    before = json.loads(original)
    for new, old in zip(written["entries"], before["entries"]):
        if new["name"] == "learnable-adam-mnist":
            assert new["cost"]["machine"] == "a test machine"
            assert new["cost"]["cnn"] == {"parameters": 10, "ns_per_param_step": 12.5,
                                          "x_adam": 2.5, "x_adam_foreach": 2.75,
                                          "first_step_s": 0.1}
            new["cost"] = old["cost"]
        assert new == old
    bench.write_costs(index, {**results, "models": {}})  # nothing measured: nothing changes
    assert index.read_text() == text
