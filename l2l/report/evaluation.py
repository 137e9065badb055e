"""An evaluation's result files: ``summary.json``, ``report.md``, ``curves.png`` (and
``tuning.png``), from the run's :class:`l2l.evaluation.EvaluationRecord` list; the comparison
table the console shows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2l.atomic import write_text
from l2l.report.cells import (
    DASH,
    all_diverged,
    cell,
    display_name,
    dumps,
    finite,
    fmt,
    mean_ci,
    sort_entries,
    verdict_line,
)
from l2l.report.figures import plot_curves, plot_tuning

if TYPE_CHECKING:
    from l2l.evaluation import EvaluationRecord, TuneResult


def _accuracy(entry: EvaluationRecord) -> str:
    mean, ci = (finite(v) for v in entry.metrics.get("accuracy", (None, None)))
    if mean is None:
        return DASH
    text = f"{100 * mean:.2f}%"
    return text if ci is None else f"{text} ± {100 * ci:.2f}"


def _threshold_header(entries: Sequence[EvaluationRecord]) -> str:
    thresholds = {entry.threshold for entry in entries} - {None}
    if len(thresholds) == 1:
        return f"steps to loss ≤ {fmt(next(iter(thresholds)))}"
    return "steps to loss ≤ threshold"


def _steps(entry: EvaluationRecord) -> str:
    if entry.threshold is None:
        return DASH
    steps = entry.steps_to_threshold
    return "never" if steps is None else str(int(steps))


def markdown_table(entries: Sequence[EvaluationRecord]) -> str:
    """The comparison table (Markdown), best final loss first, the learned optimizer in bold."""
    with_accuracy = any(finite(e.metrics.get("accuracy", (None,))[0]) is not None
                        for e in entries)
    header = ["optimizer", "tuned lr", "final loss (mean ± 95% CI)", "mean log10 loss",
              _threshold_header(entries), "time / step (ms)", "diverged"]
    if with_accuracy:
        header.append("test accuracy")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    index = {id(e): i for i, e in enumerate(entries)}
    best = _best_per_column(entries)
    for entry in sort_entries(entries):
        name = cell(display_name(entry, index[id(entry)]))
        seconds = finite(entry.seconds_per_step)
        instances = entry.instances
        diverged = entry.diverged
        row = [
            f"**{name}**" if entry.learned else name,
            fmt(entry.tuned_lr),
            mean_ci(entry.final_loss_mean, entry.final_loss_ci95),
            fmt(entry.final_log10_loss_mean),
            _steps(entry),
            DASH if seconds is None else fmt(1000 * seconds),
            DASH if diverged is None else (
                f"{diverged}/{instances}" if instances is not None else str(diverged)),
        ]
        if with_accuracy:
            row.append(_accuracy(entry))
        for column, winner in best.items():  # the best value of each column, marked
            if winner is entry and column < len(row):
                row[column] = f"{row[column]} ▲"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def table_with_verdict(entries: Sequence[EvaluationRecord]) -> str:
    """:func:`markdown_table`, then its one-line verdict (what the console and report.md show)."""
    return f"{markdown_table(entries)}\n\n{entries_verdict(entries)} ▲: best in its column."


def _best_per_column(entries: Sequence[EvaluationRecord]) -> dict[int, EvaluationRecord]:
    """Column index -> the entry with the best value there (lowest final loss, log10 loss,
    steps to threshold and time per step; highest accuracy); ties and all-missing: none."""
    def pick(value, highest: bool = False) -> EvaluationRecord | None:
        scored = [(v, e) for e in entries if (v := value(e)) is not None]
        if not scored:
            return None
        top = (max if highest else min)(v for v, _ in scored)
        winners = [e for v, e in scored if v == top]
        return winners[0] if len(winners) == 1 else None

    def ok(entry: EvaluationRecord, key: str) -> float | None:
        if all_diverged(entry):
            return None
        if key.startswith("metric:"):
            return finite(entry.metrics.get(key[len("metric:"):], (None,))[0])
        return finite(getattr(entry, key))

    columns = {
        2: pick(lambda e: ok(e, "final_loss_mean")),
        3: pick(lambda e: ok(e, "final_log10_loss_mean")),
        4: pick(lambda e: None if e.threshold is None or all_diverged(e)
                else finite(e.steps_to_threshold)),
        5: pick(lambda e: ok(e, "seconds_per_step")),
        7: pick(lambda e: ok(e, "metric:accuracy"), highest=True),
    }
    return {k: v for k, v in columns.items() if v is not None}


def entries_verdict(entries: Sequence[EvaluationRecord]) -> str:
    """:func:`verdict_line` over a comparison's entries (summary.json rows)."""
    if len(entries) < 2:
        return "**Verdict** — one optimizer only: nothing to compare."
    named = [(display_name(e, i), e) for i, e in enumerate(entries)]
    return verdict_line(
        [(n, finite(e.final_loss_mean), finite(e.final_loss_ci95))
         for n, e in named],
        [(n, finite(e.final_log10_loss_mean), finite(e.final_log10_loss_ci95))
         for n, e in named])


def _instances_text(entries: Sequence[EvaluationRecord]) -> str:
    counts = sorted({int(e.instances) for e in entries if e.instances is not None})
    if not counts:
        return "held-out instances"
    joined = "/".join(str(c) for c in counts)
    return f"{joined} held-out instance{'s' if counts != [1] else ''}"


def markdown_report(entries: Sequence[EvaluationRecord], *, task: str, steps: int, title: str,
                    tuning_figure: bool = False, meta_figure: bool = False) -> str:
    """report.md: the table, then notes (failed rows, caveats such as a best learning rate at
    an edge of the tuning grid), the tuning grids, the figures and the hyperparameters."""
    lines = [
        f"# {title}",
        "",
        f"Task `{task}`, {steps} optimization steps, {_instances_text(entries)} per optimizer "
        "(the same instances for every optimizer); ± is the 95% confidence interval of the mean "
        "over the held-out instances (Student t); final-loss statistics leave out diverged "
        "instances; mean log10 loss averages log10 of each instance's final loss; time / step "
        "is the wall time of one step (gradient and update) of the whole batch of instances; "
        "▲ marks the best value of each column, and the verdict below the table names a winner "
        "only where its 95% interval is separated from every other row's.",
        "",
        table_with_verdict(entries),
        "",
        "![loss curves](curves.png)",
    ]
    notes = [(display_name(e, i), e.status, e.notes)
             for i, e in enumerate(entries)]
    notes = [(name, status, n) for name, status, n in notes if n or status not in (None, "ok")]
    if notes:
        lines += ["", "## Notes", ""]
        for name, status, texts in notes:
            if status not in (None, "ok"):
                lines.append(f"- **{name}**: {status}")
            lines += [f"- **{name}**: {text}" for text in texts]
    tuned = [(display_name(e, i), e.tuning) for i, e in enumerate(entries) if e.tuning]
    if tuned:
        lines += ["", "## Learning-rate tuning", "",
                  "Mean final validation loss at each learning rate of the grid (∞: some "
                  "validation instance diverged); the lowest is each optimizer's tuned lr.", "",
                  "| optimizer | best lr | grid | " + " | ".join(
                      fmt(lr, 2) for lr in tuned[0][1].grid) + " |"
                  if _same_grids(tuned) else "| optimizer | best lr | grid | scores |"]
        if _same_grids(tuned):
            lines.append("|---|---|---|" + "---|" * len(tuned[0][1].grid))
            for name, t in tuned:
                lines.append(f"| {cell(name)} | {fmt(t.best_lr, 3)} | "
                             f"{_grid_text(t)} | " + " | ".join(_score(v) for v in t.scores)
                             + " |")
        else:
            lines.append("|---|---|---|---|")
            for name, t in tuned:
                scores = ", ".join(f"{fmt(lr, 2)}: {_score(v)}"
                                   for lr, v in zip(t.grid, t.scores))
                lines.append(f"| {cell(name)} | {fmt(t.best_lr, 3)} | {_grid_text(t)} "
                             f"| {scores} |")
        if tuning_figure:
            lines += ["", "![learning-rate tuning](tuning.png)"]
    if meta_figure:
        lines += ["", "## Meta-training", "", "![meta-training](meta_training.png)"]
    hyper = [(display_name(e, i), e.hyperparameters) for i, e in enumerate(entries)]
    hyper = [(name, h) for name, h in hyper if h]
    if hyper:
        lines += ["", "## Hyperparameters", ""]
        for name, h in hyper:
            values = ", ".join(f"{k}={_hyper_value(v)}" for k, v in h.items())
            lines.append(f"- {name}: {values}")
    return "\n".join(lines) + "\n"


def _same_grids(tuned: Sequence[tuple[str, TuneResult]]) -> bool:
    return len({tuple(t.grid) for _, t in tuned}) == 1


def _grid_text(tuning: TuneResult) -> str:
    edge = tuning.edge
    return "⚠ best at the " + edge + " edge" if edge else "ok"


def _score(value: Any) -> str:
    return "∞" if finite(value) is None else fmt(value, 3)


def _hyper_value(value: Any) -> str:
    return fmt(value) if isinstance(value, float) else str(value)


def write_report(run_dir: str | Path, entries: Sequence[EvaluationRecord], *, task: str, steps: int,
                 title: str | None = None, run: dict | None = None) -> dict[str, Path]:
    """Write ``summary.json``, ``report.md`` and ``curves.png`` into ``run_dir``.

    ``run``: facts about the run stored in summary.json beside the results (e.g. the seeds).
    Returns their paths under the keys ``"summary"``, ``"report"`` and ``"curves"`` (and
    ``"tuning"`` when an entry kept its learning-rate grid: ``tuning.png``). A
    ``meta_training.png`` already in ``run_dir`` (drawn by meta-training) is embedded too.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    title = title or f"Optimizer comparison on {task} ({steps} steps)"
    paths = {"summary": run_dir / "summary.json", "report": run_dir / "report.md",
             "curves": run_dir / "curves.png"}
    summary = {"task": task, "steps": steps, "title": title, **(run or {}),
               "optimizers": [entry.to_json() for entry in entries]}
    tuned = any(entry.tuning for entry in entries)
    meta_figure = (run_dir / "meta_training.png").is_file()
    write_text(paths["report"], markdown_report(entries, task=task, steps=steps, title=title,
                                                tuning_figure=tuned, meta_figure=meta_figure))
    try:
        plot_curves(paths["curves"], entries, title=f"{title}: mean loss, 95% CI band")
        if tuned:
            paths["tuning"] = plot_tuning(run_dir / "tuning.png", entries,
                                          title=f"learning-rate tuning on {task}")
    except OSError:
        raise  # a full disk: no summary.json either, the rerun redoes it all
    except Exception as error:  # never lose the numbers to matplotlib
        logging.getLogger("l2l").warning("could not draw the figures: %s", error)
    # last: a summary.json means a complete result (l2l.env.run_dir.refuse_existing_results)
    write_text(paths["summary"], dumps(summary, indent=2) + "\n")
    return paths
