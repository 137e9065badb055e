"""l2l.aggregate: a sweep's jobs grouped by the swept settings, averaged over seeds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from l2l.aggregate import aggregate, swept_keys
from l2l.evaluation import EvaluationRecord
from l2l.report import dumps
from l2l.stats import mean_ci95

ROOT = Path(__file__).resolve().parents[1]


def _job(sweep: Path, num: int, overrides: list[str], losses: dict[str, float | None]) -> None:
    job = sweep / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if losses:
        optimizers = []
        for name, loss in losses.items():
            record = EvaluationRecord.failed(name, name, name == "lstm", "ok")
            record.final_loss_mean = math.nan if loss is None else loss
            record.tuned_lr = 0.1
            optimizers.append(record.to_json())
        (job / "summary.json").write_text(dumps({"optimizers": optimizers}))


def test_swept_keys_ignore_seed_names_and_constants():
    jobs = [{"mode": "tune", "optimizer": o, "seed": s, "run_name": f"r{s}", "threads": "1"}
            for o in ("sgd", "adam") for s in ("0", "1")]
    assert swept_keys(jobs) == ["optimizer"]


def test_groups_and_seed_statistics(tmp_path):
    sweep = tmp_path / "sweep"
    losses = {("16", "0"): 1.0, ("16", "1"): 2.0, ("16", "2"): 4.0,
              ("32", "0"): 0.5, ("32", "1"): 0.25, ("32", "2"): None}  # one failed job
    for num, ((hidden, seed), loss) in enumerate(losses.items()):
        _job(sweep, num, ["mode=compare", f"optimizer.hyperparameters.hidden_size={hidden}",
                          f"seed={seed}", "run_name=x"],
             {"lstm": loss, "adam": 3.0} if loss is not None else {})
    result = aggregate(sweep)
    assert result["jobs"] == 6 and result["missing"] == ["5_job"]
    assert result["swept"] == ["optimizer.hyperparameters.hidden_size"]
    rows = {(r.settings["optimizer.hyperparameters.hidden_size"], r.optimizer): r
            for r in result["rows"]}
    assert set(rows) == {("16", "lstm"), ("16", "adam"), ("32", "lstm"), ("32", "adam")}
    mean, ci = mean_ci95([1.0, 2.0, 4.0])
    assert rows["16", "lstm"].final_loss_mean == pytest.approx(mean)
    assert rows["16", "lstm"].final_loss_ci95 == pytest.approx(ci)
    assert rows["16", "lstm"].n == 3 and rows["32", "lstm"].n == 2
    assert rows["16", "adam"].final_loss_ci95 == 0.0
    text = (sweep / "aggregate.md").read_text()
    assert "**lstm**" in text and "`5_job`" in text and "3/3" in text
    assert json.loads((sweep / "aggregate.json").read_text())["rows"]
    assert (sweep / "aggregate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_command_line(tmp_path):
    _job(tmp_path, 0, ["optimizer=sgd", "seed=0"], {"sgd": 1.0})
    _job(tmp_path, 1, ["optimizer=sgd", "seed=1"], {"sgd": 3.0})
    proc = subprocess.run([sys.executable, "-m", "l2l.aggregate", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 ± " in proc.stdout and (tmp_path / "aggregate.md").exists()


def test_the_aggregate_table_ends_with_a_verdict_per_group(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(3):  # lstm clearly lower on both means; adam the same in every job
        _job(sweep, seed, ["optimizer=lstm", f"seed={seed}", "eval.steps=10"],
             {"lstm": 0.1 + 0.01 * seed, "adam": 3.0 + 0.1 * seed})
        _job(sweep, 3 + seed, ["optimizer=lstm", f"seed={seed}", "eval.steps=20"],
             {"lstm": [0.1, 5.0, 0.2][seed], "adam": 3.0 + 0.1 * seed})
    for job in sweep.iterdir():  # the log10 means, as summary.json holds them
        summary = json.loads((job / "summary.json").read_text())
        for entry in summary["optimizers"]:
            entry["final_log10_loss_mean"] = math.log10(entry["final_loss_mean"])
        (job / "summary.json").write_text(json.dumps(summary))
    aggregate(sweep)
    lines = (sweep / "aggregate.md").read_text().splitlines()
    verdicts = [line for line in lines if line.startswith("**Verdict**")]
    assert verdicts == [
        "**Verdict** (eval.steps=10) — mean final loss: lstm wins (separated 95% intervals); "
        "mean log10 final loss: lstm wins (separated 95% intervals).",
        "**Verdict** (eval.steps=20) — mean final loss: overlap (lowest: lstm); "
        "mean log10 final loss: overlap (lowest: lstm)."]


def test_a_summary_json_with_a_misspelled_field_is_a_broken_job_not_a_silent_gap(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["optimizer=sgd", "seed=0"], {"sgd": 1.0})
    _job(sweep, 1, ["optimizer=sgd", "seed=1"], {"sgd": 3.0})
    path = sweep / "1_job" / "summary.json"
    path.write_text(path.read_text().replace('"final_loss_mean"', '"final_loss_maen"'))
    result = aggregate(sweep)
    (failure,) = result["failed"]
    assert failure["status"] == "broken" and "final_loss_maen" in failure["reason"]
    assert [(r.optimizer, r.jobs) for r in result["rows"]] == [("sgd", 1)]
