"""Every figure l2l draws, and the one way it draws them: :func:`new_figure` and :func:`save`.

matplotlib is imported only when a figure is drawn, with the Agg canvas directly, never pyplot,
so it works headless and leaves pyplot's global state alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2l.atomic import save_figure, write_text
from l2l.report.cells import all_diverged, display_name, finite, sort_entries

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from l2l.evaluation import EvaluationRecord


def new_figure(width: float = 7.5, height: float = 4.8) -> Figure:
    """A matplotlib figure on the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Lay ``fig`` out and write it to ``path`` atomically (:func:`l2l.atomic.save_figure`)."""
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


def plot_curves(path: str | Path, entries: Sequence[EvaluationRecord], *, title: str,
                dpi: int = 120) -> Path:
    """Mean loss vs step per optimizer with its 95% CI band, log-scale y, learned on top."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    def array(values: Any) -> np.ndarray:
        return np.array([np.nan if finite(v) is None else float(v) for v in values or []])

    ordered = sort_entries(entries)
    curves = [array(e.mean_curve) for e in ordered]
    seen = np.concatenate([c[np.isfinite(c)] for c in curves] or [np.empty(0)])
    log_scale = seen.size > 0 and bool((seen > 0).all())
    floor = float(seen.min()) * 1e-2 if log_scale else None

    fig = new_figure(7.5, 4.8)
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
    return save(fig, path, dpi)


def plot_tuning(path: str | Path, entries: Sequence[EvaluationRecord], *, title: str,
                dpi: int = 120) -> Path:
    """Final validation loss vs learning rate, log-log, one line per tuned optimizer; a
    diverged learning rate is a gap in its line (marked ``x`` at the bottom), the tuned lr a
    filled dot. Shows at a glance whether each grid brackets its optimum."""
    import numpy as np

    fig = new_figure(7.5, 4.8)
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
    return save(fig, path, dpi)


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

    meta = [math.nan if finite(v) is None else float(v) for v in history.get("meta_loss", [])]
    val = [math.nan if finite(v) is None else float(v) for v in history.get("val_loss", [])]
    val_at = list(history.get("val_iteration", []))[:len(val)]
    fig = new_figure(7.5, 4.8)
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
    return save(fig, path, dpi)


def write_page_figure_json(run_dir: str | Path, stem: str, figure: str, markdown: str,
                           draw: Callable[[Path], Any], json_text: str) -> dict[str, Path]:
    """Write ``<stem>.md``, the figure, then ``<stem>.json`` into ``run_dir``, each whole or not
    at all. The JSON comes last because its presence marks a complete result (a rerun refuses
    to overwrite it); a figure that fails to draw is a warning, since the numbers matter more
    than the picture."""
    run_dir = Path(run_dir)
    paths = {"json": run_dir / f"{stem}.json", "md": run_dir / f"{stem}.md",
             "png": run_dir / figure}
    write_text(paths["md"], markdown)
    try:
        draw(paths["png"])
    except Exception as error:  # never lose a finished result to matplotlib
        logging.getLogger("l2l").warning("could not draw %s: %s", figure, error)
    write_text(paths["json"], json_text)
    return paths
