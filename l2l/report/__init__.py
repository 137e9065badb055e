"""Result files of an evaluation: ``summary.json``, ``report.md`` and ``curves.png``.

Each entry is one optimizer's :func:`l2l.evaluation.summarize` dict plus what the run script
adds (``name``, ``optimizer``, ``hyperparameters``, ``tuned_lr``, ``learned``). Nothing here
needs wandb, and matplotlib is imported only when a figure is drawn (with the Agg canvas
directly, never pyplot, so it works headless and leaves pyplot's global state alone).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2l.atomic import save_figure, write_text
from l2l.stats import separated_winner

if TYPE_CHECKING:
    from l2l.evaluation import EvaluationRecord, TuneResult

DASH = "—"


# ---------------------------------------------------------------------------------------------
# JSON.


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: non-finite floats become ``None``, tensors/arrays lists,
    typed records (:class:`l2l.evaluation.EvaluationRecord`, ...) their ``to_json()``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "to_json"):  # a typed record: its one JSON form
        return jsonable(obj.to_json())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens) of :func:`jsonable` ``(obj)``."""
    return json.dumps(jsonable(obj), allow_nan=False, ensure_ascii=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# Formatting.


def finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt(x: Any, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits (scientific when tiny or huge); ``—`` if missing."""
    if x is None:
        return DASH
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def mean_ci(mean: Any, ci: Any, ci_digits: int = 4) -> str:
    """The one cell format of a mean and its 95% CI, ``mean ± ci`` (``mean`` alone when the CI
    is unknown; ``—`` or ``∞`` when the mean is missing or infinite)."""
    if finite(mean) is None:
        return fmt(mean)
    return fmt(mean) if finite(ci) is None else f"{fmt(mean)} ± {fmt(ci, ci_digits)}"


def _accuracy(entry: EvaluationRecord) -> str:
    mean, ci = (finite(v) for v in entry.metrics.get("accuracy", (None, None)))
    if mean is None:
        return DASH
    text = f"{100 * mean:.2f}%"
    return text if ci is None else f"{text} ± {100 * ci:.2f}"


def display_name(entry: EvaluationRecord, index: int = 0) -> str:
    return str(entry.name or entry.optimizer or f"optimizer {index}")


def cell(text: Any) -> str:
    """``text`` made safe for a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def all_diverged(entry: EvaluationRecord) -> bool:
    """True when no instance of this entry finished with a finite loss."""
    instances, diverged = entry.instances, entry.diverged
    if instances is not None and diverged is not None and diverged >= instances:
        return True
    return finite(entry.final_loss_mean) is None


def sort_entries(entries: Sequence[EvaluationRecord]) -> list[EvaluationRecord]:
    """By mean final loss, lowest first; entries with no finite final loss last."""
    def key(item: tuple[int, EvaluationRecord]) -> tuple:
        index, entry = item
        loss = finite(entry.final_loss_mean)
        bad = all_diverged(entry)
        return (bad, loss if loss is not None and not bad else math.inf, index)

    return [entry for _, entry in sorted(enumerate(entries), key=key)]


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


def verdict_text(rows: Sequence[tuple[str, float, float]]) -> str:
    """``"<name> wins (separated 95% intervals)"`` or ``"overlap (lowest: <name>)"``."""
    winner, lowest = separated_winner(rows)
    if winner is not None:
        return f"{winner} wins (separated 95% intervals)"
    return f"overlap (lowest: {lowest})" if lowest is not None else "no finite result"


def verdict_line(loss_rows: Sequence[tuple[str, float, float]],
                 log_rows: Sequence[tuple[str, float, float]]) -> str:
    """The one-line verdict every comparison table ends with: the winner with separated 95%
    intervals, or overlap, on the mean final loss and on the mean log10 final loss (rows:
    ``(name, mean, ci95)``)."""
    return (f"**Verdict** — mean final loss: {verdict_text(loss_rows)}; mean log10 final loss: "
            f"{verdict_text(log_rows)}.")


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


# ---------------------------------------------------------------------------------------------
# Figure.


def plot_curves(path: str | Path, entries: Sequence[EvaluationRecord], *, title: str,
                dpi: int = 120) -> Path:
    """Mean loss vs step per optimizer with its 95% CI band, log-scale y, learned on top."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def array(values: Any) -> np.ndarray:
        return np.array([np.nan if finite(v) is None else float(v) for v in values or []])

    ordered = sort_entries(entries)
    curves = [array(e.mean_curve) for e in ordered]
    seen = np.concatenate([c[np.isfinite(c)] for c in curves] or [np.empty(0)])
    log_scale = seen.size > 0 and bool((seen > 0).all())
    floor = float(seen.min()) * 1e-2 if log_scale else None

    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = palette()
    index = {id(e): i for i, e in enumerate(entries)}
    for entry, mean in zip(ordered, curves):
        learned = bool(entry.learned)
        label = display_name(entry, index[id(entry)]) + (" (learned)" if learned else "")
        if all_diverged(entry):
            label += " (diverged)"
        colour = "black" if learned else next(colours)
        steps = np.arange(mean.size)
        ax.plot(steps, mean, color=colour, lw=2.6 if learned else 1.4, label=label,
                zorder=4 if learned else 2)
        ok = np.flatnonzero(np.isfinite(mean))
        if ok.size and (ok.size == 1 or ok[-1] < mean.size - 1):  # mark where a curve stops
            ax.plot(ok[-1:], mean[ok[-1:]], "x", color=colour, ms=8, mew=2, zorder=5)
        ci = array(entry.ci_curve)
        if ci.size == mean.size and np.isfinite(ci).any():
            low, high = mean - ci, mean + ci
            if floor is not None:
                low = np.maximum(low, floor)
            ax.fill_between(steps, low, high, color=colour, alpha=0.12 if learned else 0.15,
                            lw=0, zorder=3 if learned else 1)
    if log_scale:
        ax.set_yscale("log")
    if seen.size == 0:
        ax.text(0.5, 0.5, "no finite losses (every run diverged)", ha="center", va="center",
                transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean over instances)" + (", log scale" if log_scale else ""))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if ordered:
        ax.legend(fontsize="small", framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


def plot_tuning(path: str | Path, entries: Sequence[EvaluationRecord], *, title: str,
                dpi: int = 120) -> Path:
    """Final validation loss vs learning rate, log-log, one line per tuned optimizer; a
    diverged learning rate is a gap in its line (marked ``x`` at the bottom), the tuned lr a
    filled dot. Shows at a glance whether each grid brackets its optimum."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = palette()
    tuned = [(display_name(e, i), e.tuning) for i, e in enumerate(entries) if e.tuning]
    seen = [v for _, t in tuned for v in t.scores if finite(v) is not None and v > 0]
    bottom = min(seen) / 3 if seen else 1.0
    for name, tuning in tuned:
        colour = next(colours)
        grid = np.array(tuning.grid, dtype=float)
        scores = np.array([np.nan if finite(v) is None or v <= 0 else float(v)
                           for v in tuning.scores])
        ax.plot(grid, scores, "o-", color=colour, ms=3, lw=1.4, label=name)
        bad = ~np.isfinite(scores)
        if bad.any():
            ax.plot(grid[bad], np.full(int(bad.sum()), bottom), "x", color=colour, ms=6)
        best = finite(tuning.best_lr)
        if best is not None and np.isfinite(scores).any():
            k = int(np.nanargmin(scores))
            ax.plot(grid[k:k + 1], scores[k:k + 1], "o", color=colour, ms=8, zorder=5)
    ax.set_xscale("log")
    if seen:
        ax.set_yscale("log")
        # a blown-up run's loss (1e20) would flatten every other line: clip at 100x the loss
        # at each grid's smallest learning rate, which barely moves from the initial loss
        firsts = [v for _, t in tuned for v in t.scores[:1] if finite(v) is not None]
        top = max(seen) if not firsts else min(max(seen), 100 * max(firsts))
        ax.set_ylim(bottom / 1.5, top * 1.5)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation loss (mean over instances)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if tuned:
        ax.legend(fontsize="small", framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over the finite values (NaN where none is finite yet): noisy
    meta-losses become a readable trend."""
    out, recent = [], []
    for value in values:
        recent.append(finite(value))
        recent = recent[-window:]
        kept = [v for v in recent if v is not None]
        out.append(sum(kept) / len(kept) if kept else math.nan)
    return out


def plot_meta_training(path: str | Path, history: Mapping[str, Sequence[float]], *,
                       title: str = "meta-training", dpi: int = 120) -> Path:
    """``history`` (:attr:`MetaTrainer.history`: ``meta_loss`` per iteration, ``val_loss`` at
    each ``val_iteration``) as a figure: the raw meta-loss faint, its moving average, and the
    validation final loss on a second axis (the two are on different scales)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    meta = [math.nan if finite(v) is None else float(v) for v in history.get("meta_loss", [])]
    val = [math.nan if finite(v) is None else float(v) for v in history.get("val_loss", [])]
    val_at = list(history.get("val_iteration", []))[:len(val)]
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    iterations = list(range(1, len(meta) + 1))
    window = max(1, len(meta) // 20)
    ax.plot(iterations, meta, color="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(iterations, smooth(meta, window), color="tab:blue", lw=1.8,
            label=f"meta-loss (moving average of {window})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("meta-loss", color="tab:blue")
    right = ax.twinx()
    right.plot(val_at, val, "o-", color="tab:red", ms=3, lw=1.4, label="validation final loss")
    right.set_ylabel("validation final loss", color="tab:red")
    finite_val = [v for v in val if math.isfinite(v)]
    if finite_val and min(finite_val) > 0:
        right.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize="small", framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


def palette():
    """Endless distinct colours for the classic optimizers (tab10 then tab20, no black)."""
    from matplotlib import colormaps

    while True:
        for name in ("tab10", "tab20b"):
            cmap = colormaps[name]
            yield from (cmap(i) for i in range(cmap.N))


# ---------------------------------------------------------------------------------------------
# The report.


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
    # last: a summary.json means a complete result (l2l.run_dir.refuse_existing_results)
    write_text(paths["summary"], dumps(summary, indent=2) + "\n")
    return paths
