"""report.md / summary.json / curves.png from evaluation summaries."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from l2l.evaluation import EvaluationRecord, TuneResult
from l2l.report import (
    dumps,
    entries_verdict,
    fmt,
    markdown_report,
    markdown_table,
    sort_entries,
    table_with_verdict,
    write_report,
)
from l2l.stats import separated_winner

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _entry(name, final, *, learned=False, diverged=0, instances=4, steps_to=None, threshold=0.01,
           tuned_lr=0.1, accuracy=None, steps=5):
    curve = [1.0 * (final / 1.0) ** (t / steps) if math.isfinite(final) else
             (1.0 if t == 0 else math.nan) for t in range(steps + 1)]
    entry = {
        "name": name,
        "optimizer": name,
        "hyperparameters": {} if learned else {"lr": tuned_lr},
        "tuned_lr": None if learned else tuned_lr,
        "learned": learned,
        "final_loss_mean": final,
        "final_loss_ci95": final / 10 if math.isfinite(final) else math.nan,
        "final_log10_loss_mean": math.log10(final) if math.isfinite(final) else math.nan,
        "diverged": diverged,
        "instances": instances,
        "seconds_per_step": 2.5e-4,
        "steps_to_threshold": steps_to,
        "threshold": threshold,
        "mean_curve": curve,
        "ci_curve": [math.nan] + [abs(c) / 10 for c in curve[1:]],
    }
    if accuracy is not None:
        entry["final_accuracy_mean"], entry["final_accuracy_ci95"] = accuracy, 0.004
    return EvaluationRecord.from_json(entry)


@pytest.fixture
def entries():
    return [
        _entry("sgd", math.nan, diverged=4, tuned_lr=10.0),  # every instance diverged: last
        _entry("adam", 2.5e-2, tuned_lr=0.1),
        _entry("lstm", 3.2e-7, learned=True, steps_to=3),
        _entry("rmsprop", 1.5e-3, diverged=1, steps_to=4, tuned_lr=0.01),  # one diverged
    ]


def _rows(table: str) -> list[list[str]]:
    lines = table.strip().splitlines()
    assert lines[1].startswith("|---")
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]


def test_write_report_files_and_summary_json(tmp_path, entries):
    paths = write_report(tmp_path / "run", entries, task="quadratic", steps=5, title="Demo")
    assert set(paths) == {"summary", "report", "curves"}
    for key, name in [("summary", "summary.json"), ("report", "report.md"),
                      ("curves", "curves.png")]:
        assert paths[key] == tmp_path / "run" / name
        assert paths[key].stat().st_size > 0

    text = paths["summary"].read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = _strict_json(text)
    assert summary["task"] == "quadratic" and summary["steps"] == 5 and summary["title"] == "Demo"
    by_name = {e["name"]: e for e in summary["optimizers"]}
    assert list(by_name) == ["sgd", "adam", "lstm", "rmsprop"]  # entries kept as given
    assert by_name["sgd"]["final_loss_mean"] is None  # NaN -> null
    assert by_name["sgd"]["mean_curve"][0] == 1.0 and by_name["sgd"]["mean_curve"][1] is None
    assert by_name["lstm"]["learned"] is True and by_name["lstm"]["tuned_lr"] is None
    assert by_name["adam"]["final_loss_mean"] == pytest.approx(2.5e-2)
    assert by_name["adam"]["ci_curve"][0] is None
    assert len(by_name["adam"]["mean_curve"]) == 6
    assert text.startswith("{\n  ")  # indent 2


def test_report_markdown(tmp_path, entries):
    paths = write_report(tmp_path, entries, task="quadratic", steps=5)
    text = paths["report"].read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "quadratic" in lines[0]
    description = lines[2]
    for words in ["quadratic", "5 optimization steps", "4 held-out instances", "95%",
                  "Student t"]:
        assert words in description
    assert markdown_table(entries) in text
    assert "![loss curves](curves.png)" in text
    assert "- adam: lr=0.1" in text


def test_table_sorted_learned_bold_diverged_last(entries):
    table = markdown_table(entries)
    header = table.splitlines()[0]
    assert header.startswith("| optimizer | tuned lr | final loss (mean ± 95% CI) |")
    assert "steps to loss ≤ 0.01" in header and "time / step (ms)" in header
    assert "test accuracy" not in header  # no entry has an accuracy
    rows = _rows(table)
    assert [r[0] for r in rows] == ["**lstm**", "rmsprop", "adam", "sgd"]
    lstm, rmsprop, adam, sgd = rows
    assert lstm[1] == "—" and adam[1] == "0.1"
    assert lstm[2] == "3.2e-07 ± 3.2e-08 ▲"  # ▲: the best of its column
    assert lstm[3] == "-6.495 ▲"
    assert lstm[4] == "3 ▲" and adam[4] == "never"
    assert adam[5] == "0.25"  # 2.5e-4 s -> ms
    assert sum("▲" in cell for row in rows for cell in row) == 3  # equal times: a tie, no mark
    assert rmsprop[6] == "1/4" and sgd[6] == "4/4"
    assert sgd[2] == "—" and sgd[3] == "—"
    assert [e.name for e in sort_entries(entries)] == ["lstm", "rmsprop", "adam", "sgd"]


def test_table_accuracy_column_and_no_threshold():
    entries = [_entry("adam", 0.3, accuracy=0.9123, threshold=None),
               _entry("lstm", 0.2, learned=True, accuracy=0.95, threshold=None)]
    table = markdown_table(entries)
    assert table.splitlines()[0].rstrip().endswith("| test accuracy |")
    assert "steps to loss ≤ threshold" in table.splitlines()[0]
    rows = _rows(table)
    assert [r[0] for r in rows] == ["**lstm**", "adam"]
    assert rows[0][-1] == "95.00% ± 0.40 ▲" and rows[1][-1] == "91.23% ± 0.40"
    assert rows[0][4] == "—"  # no threshold: no "never"


def test_fmt():
    assert fmt(None) == "—" and fmt(math.nan) == "—"
    assert fmt(math.inf) == "∞"
    assert fmt(0.123456) == "0.1235"
    assert fmt(1.23456e-7) == "1.235e-07"
    assert fmt(12.0) == "12"
    assert fmt(0) == "0"


def test_curves_png_is_an_image(tmp_path, entries):
    from matplotlib.image import imread

    path = write_report(tmp_path, entries, task="quadratic", steps=5)["curves"]
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 0.01  # not a blank canvas


def test_everything_diverged_still_reports(tmp_path):
    entries = [_entry("sgd", math.nan, diverged=4), _entry("adam", math.nan, diverged=4)]
    entries[1].mean_curve = [math.nan] * 6
    entries[1].ci_curve = [math.nan] * 6
    paths = write_report(tmp_path, entries, task="quadratic", steps=5)
    summary = _strict_json(paths["summary"].read_text())
    assert all(e["final_loss_mean"] is None for e in summary["optimizers"])
    assert paths["curves"].read_bytes()[:8] == PNG_SIGNATURE
    assert [r[6] for r in _rows(markdown_table(entries))] == ["4/4", "4/4"]


@pytest.mark.slow
def test_report_leaves_pyplot_alone(tmp_path):
    code = (
        "import math, sys\n"
        "from l2l.report import write_report\n"
        "from l2l.evaluation import EvaluationRecord\n"
        "e = EvaluationRecord.failed('adam', 'adam', False, 'ok')\n"
        "e.final_loss_mean, e.final_loss_ci95, e.instances = 0.1, 0.01, 2\n"
        "e.mean_curve, e.ci_curve = [1.0, 0.1], [math.nan, 0.01]\n"
        f"write_report({str(tmp_path)!r}, [e], task='t', steps=1)\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert 'wandb' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=_env_without_display())
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


def _env_without_display() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_tuning_grid_notes_and_figure(tmp_path, entries):
    """A tuned entry keeps its whole grid: report.md tabulates it (∞ for a diverged lr), the
    edge caveat appears under Notes, and tuning.png is drawn."""
    entries[1].tuning = TuneResult(grid=[1e-3, 1e-2, 1e-1], scores=[0.5, 0.2, math.inf],
                                   best_lr=1e-2)
    entries[3].tuning = TuneResult(grid=[1e-3, 1e-2, 1e-1], scores=[0.9, 0.5, 0.3], best_lr=1e-1)
    entries[3].notes = ["the best learning rate 0.1 is the highest value of the tuning grid; "
                           "widen the grid with tune.high=1"]
    paths = write_report(tmp_path, entries, task="quadratic", steps=5)
    text = paths["report"].read_text()
    assert "## Notes" in text and "tune.high=1" in text
    assert "## Learning-rate tuning" in text and "![learning-rate tuning](tuning.png)" in text
    assert "| adam | 0.01 | ok | 0.5 | 0.2 | ∞ |" in text
    assert "high edge" in text
    assert paths["tuning"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = _strict_json(paths["summary"].read_text())
    assert summary["optimizers"][1]["tuning"]["scores"] == [0.5, 0.2, None]


def test_meta_training_figure_is_embedded(tmp_path, entries):
    from l2l.report import plot_meta_training

    history = {"meta_loss": [3.0, 2.0, math.nan, 1.0], "val_loss": [5.0, 2.0, 1.5],
               "val_iteration": [0, 2, 4]}
    path = plot_meta_training(tmp_path / "meta_training.png", history)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = write_report(tmp_path, entries, task="quadratic", steps=5)["report"].read_text()
    assert "![meta-training](meta_training.png)" in text
    assert "meta_training.png" not in write_report(tmp_path / "other", entries,
                                                   task="quadratic", steps=5)["report"].read_text()


def test_separated_winner_needs_separated_intervals():
    assert separated_winner([("a", 1.0, 0.1), ("b", 2.0, 0.1)]) == ("a", "a")
    assert separated_winner([("a", 1.0, 0.6), ("b", 2.0, 0.5)]) == (None, "a")  # touching
    assert separated_winner([("a", 1.0, math.nan), ("b", 2.0, 0.1)]) == (None, "a")
    assert separated_winner([("a", 1.0, 0.1), ("b", math.nan, 0.1)]) == ("a", "a")
    assert separated_winner([("a", math.nan, 0.1)]) == (None, None)


def test_every_comparison_table_ends_with_its_verdict(entries):
    text = table_with_verdict(entries)
    last = text.splitlines()[-1]
    assert last.startswith("**Verdict** — mean final loss: ") and "mean log10 final loss: " in last
    assert markdown_report(entries, task="quadratic", steps=5, title="t").count(last) == 1
    # the demo's case (README section 1): lowest mean, overlapping intervals, another row
    # ahead on the log mean: the verdict says so instead of leaving it to the reader
    demo = [_entry("lstm", 0.1314, learned=True), _entry("momentum", 0.2277)]
    demo[0] = dataclasses.replace(demo[0], final_loss_ci95=0.0862, final_log10_loss_mean=-2.051,
                   final_log10_loss_ci95=0.3)
    demo[1] = dataclasses.replace(demo[1], final_loss_ci95=0.1306, final_log10_loss_mean=-2.23,
                   final_log10_loss_ci95=0.3)
    assert entries_verdict(demo) == ("**Verdict** — mean final loss: overlap (lowest: lstm); "
                                     "mean log10 final loss: overlap (lowest: momentum).")
    demo[1] = dataclasses.replace(demo[1], final_loss_mean=0.9, final_loss_ci95=0.01)
    assert "mean final loss: lstm wins (separated 95% intervals)" in entries_verdict(demo)


# ---- typed records: written and read by one function each -------------------------------------


def test_a_record_survives_its_json_round_trip(entries):
    entries[1].tuning = TuneResult(grid=[1e-3, 1e-2], scores=[0.5, math.inf], best_lr=1e-3)
    for entry in [*entries, _entry("cnn", 0.2, accuracy=0.9)]:
        again = EvaluationRecord.from_json(json.loads(json.dumps(entry.to_json())))
        assert dumps(again.to_json()) == dumps(entry.to_json())  # NaN and inf as null alike
    assert EvaluationRecord.from_json(entries[1].to_json()).tuning.edge == "low"
    assert _entry("cnn", 0.2, accuracy=0.9).metrics == {"accuracy": (0.9, 0.004)}


def test_a_misspelled_record_field_fails_loudly(entries):
    """A misspelled key in a summary.json row, a missing field, or a misspelled attribute
    raises, naming the field: nothing turns silently into None."""
    row = entries[1].to_json()
    row["final_loss_maen"] = row.pop("final_loss_mean")
    with pytest.raises(ValueError, match="no field 'final_loss_maen' \\(did you mean "
                                         "'final_loss_mean'\\?\\)"):
        EvaluationRecord.from_json(row)
    del row["final_loss_maen"]
    with pytest.raises(ValueError, match="misses the field\\(s\\) final_loss_mean"):
        EvaluationRecord.from_json(row)
    with pytest.raises(ValueError, match="TuneResult has no field 'best'"):
        TuneResult.from_json({"grid": [0.1], "scores": [1.0], "best": 0.1})
    with pytest.raises(AttributeError):
        entries[1].final_loss_maen = 0.3
    with pytest.raises(AttributeError):
        entries[1].final_loss_maen  # noqa: B018 - the read itself is the test
