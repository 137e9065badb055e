"""The generalization study's outputs: ``generalization.md`` (a table per learned group, the
groups side by side, every tuned baseline), ``generalization.png`` (a panel per variant) and
``generalization.json``, from the result :func:`l2l.modes.generalization.summarize_study`
builds."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2l.report.cells import DASH, cell, dumps, finite, fmt, mean_ci, verdict_text
from l2l.report.figures import new_figure, palette, save, write_page_figure_json

log = logging.getLogger("l2l")


def pm(mean: Any, ci: Any) -> str:
    """A study table's cell: :func:`l2l.report.mean_ci` with a two-digit CI."""
    return mean_ci(mean, ci, ci_digits=2)


def markdown_tables(result: Mapping[str, Any]) -> str:
    """One table per learned group: a row per variant (what the console and the .md show)."""
    out = []
    for group, info in result["groups"].items():
        rows = [r for r in result["rows"] if r.group == group]
        seeds = rows[0].n_seeds if rows else 0
        out.append(f"### {group}: {seeds} checkpoint(s), meta-trained on {info['trained_on']}\n")
        ci_head = "mean ± 95% CI over seeds" if seeds > 1 else "± 95% CI over test instances"
        out.append(f"| variant | task | steps | seen in training | learned final loss "
                   f"({ci_head}) | worst seed | best tuned baseline (lr) | its final loss | "
                   "learned / best | winner | winner (log10) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            worst = r.worst_seed
            worst_text = DASH if worst is None or seeds < 2 else \
                f"{fmt(worst['final_loss'])} (seed {worst['seed']})"
            base = DASH if r.best_baseline is None else \
                f"{r.best_baseline} ({fmt(r.best_baseline_lr, 3)})"
            diverged = f" ({r.diverged} diverged)" if r.diverged else ""
            out.append(f"| {cell(r.variant)} | {cell(r.task)} | {r.steps} | "
                       f"{cell(r.seen_in_training)} | "
                       f"{pm(r.learned_mean, r.learned_ci95)}{diverged} | {worst_text} | "
                       f"{cell(base)} | {pm(r.best_baseline_mean, r.best_baseline_ci95)}"
                       f" | {fmt(r.ratio, 3)} | {cell(r.winner)} | "
                       f"{cell(r.winner_log10)} |")
        out += ["", study_verdict(rows), ""]
    return "\n".join(out)


def study_verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """The one-line verdict of a group's table: per variant, the learned optimizer against the
    best tuned baseline (:func:`l2l.report.verdict_text`), on the mean final loss and on the
    mean log10 final loss."""
    def one(r: Mapping[str, Any], log: bool) -> str:
        if log:
            base = r.best_log10_baseline or DASH
            pairs = [("learned", r.learned_log10_mean, r.learned_log10_ci95),
                     (base, r.best_log10_mean, r.best_log10_ci95)]
            found = r.winner_log10
        else:
            pairs = [("learned", r.learned_mean, r.learned_ci95),
                     (r.best_baseline or DASH, r.best_baseline_mean,
                      r.best_baseline_ci95)]
            found = r.winner
        text = (f"{found} wins" if found not in ("overlap", "overlap (no CI)", DASH)
                else verdict_text(pairs) if found != DASH else "no result")
        return f"{r.variant} {text}"

    loss = "; ".join(one(r, False) for r in rows)
    log = "; ".join(one(r, True) for r in rows)
    return (f"**Verdict** (learned vs the best tuned baseline, separated 95% intervals) — "
            f"mean final loss: {loss}. Mean log10 final loss: {log}.")


def summary_matrix(result: Mapping[str, Any]) -> str:
    """Every learned group side by side: a row per variant, a column per group, then the best
    tuned baseline. A winner with separated intervals is marked (learned **bold** ✓, baseline
    ✗), so several optimizers can be compared at a glance; the per-group tables say the rest."""
    groups = list(result["groups"])
    by_variant: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in result["rows"]:
        by_variant.setdefault(r.variant, {})[r.group] = r
    lines = ["| variant | " + " | ".join(cell(g) for g in groups) + " | best tuned baseline |",
             "|---|" + "---|" * (len(groups) + 1)]
    for variant, rows in by_variant.items():
        cells = []
        for group in groups:
            r = rows.get(group)
            text = DASH if r is None else pm(r.learned_mean, r.learned_ci95)
            if r is not None and r.winner == "learned":
                text = f"**{text}** ✓"
            elif r is not None and r.best_baseline and r.winner == r.best_baseline:
                text = f"{text} ✗"
            cells.append(text)
        first = next(iter(rows.values()))
        base = DASH if first.best_baseline is None else (
            f"{first.best_baseline} "
            f"{pm(first.best_baseline_mean, first.best_baseline_ci95)} "
            f"(lr {fmt(first.best_baseline_lr, 3)})")
        lines.append(f"| {cell(variant)} | " + " | ".join(cells) + f" | {cell(base)} |")
    return "\n".join(lines) + "\n"


def markdown(result: Mapping[str, Any]) -> str:
    """generalization.md: the combined table, how to read it, and every tuned baseline."""
    lines = [f"# {result['title']}", "",
             f"Test problems: {result['instances']} instances per variant (eval.seed="
             f"{result['eval_seed']}), the same for every optimizer. Baselines "
             f"({', '.join(result['baselines'])}) have their learning rate tuned on validation "
             "problems of each variant.", "", "## Learned optimizers", ""]
    for group, info in result["groups"].items():
        lines.append(f"- **{group}** — meta-trained on: {info['trained_on']}")
        for c in info["checkpoints"]:
            lines.append(f"  - `{c['spec']}` (seed {c['seed'] if c['seed'] is not None else '?'}"
                         f", best iteration {c['iteration'] if c['iteration'] is not None else '?'}"
                         ")")
    if len(result["groups"]) > 1:
        lines += ["", "## All learned optimizers side by side", "",
                  "Final test loss (mean ± 95% CI, over seeds where there are several).", "",
                  summary_matrix(result)]
    lines += ["", "## Final test loss per variant", "", markdown_tables(result),
              "Learned final loss: with several checkpoints (meta-training seeds), the mean over "
              "seeds of each seed's mean final loss, with a Student-t 95% CI across seeds; with "
              "one, the mean over test instances and its 95% CI. *Winner*: the lower final loss "
              "when the two 95% intervals do not overlap, else `overlap`. *Seen in training*: "
              "whether the variant's task is the one the checkpoints were meta-trained on.", "",
              "![generalization](generalization.png)", "", "## Every tuned baseline", ""]
    names = result["baselines"]
    lines.append("| variant | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for variant in result["variants"]:
        cells = []
        for entry in variant["baselines"]:
            text = pm(entry.final_loss_mean, entry.final_loss_ci95)
            if entry.tuned_lr is not None:
                text += f" (lr {fmt(entry.tuned_lr, 3)})"
            elif entry.status != "ok":
                text = cell(entry.status)
            cells.append(text)
        lines.append(f"| {cell(variant['name'])} | " + " | ".join(cells) + " |")
    notes = [f"{v['name']}/{e.name}: {n}" for v in result["variants"] for e in v["baselines"]
             for n in e.notes]
    if notes:
        lines += ["", "Notes:", "", *[f"- {cell(n)}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot(path: str | Path, result: Mapping[str, Any], dpi: int = 110) -> Path:
    """generalization.png: a panel per variant, mean loss vs step with 95% CI bands for each
    learned group (dark, thick) and every tuned baseline, log-scale y."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    def array(values: Any) -> np.ndarray:
        return np.array([np.nan if finite(v) is None else float(v) for v in values or []])

    variants = result["variants"]
    cols = min(3, len(variants))
    rows_n = math.ceil(len(variants) / cols)
    fig = new_figure(4.6 * cols, 3.6 * rows_n)
    colours = palette()
    colours = {name: next(colours) for name in result["baselines"]}
    learned_colours = ["black", "tab:red", "tab:purple", "tab:brown"]
    groups = list(result["groups"])
    for k, variant in enumerate(variants):
        ax = fig.add_subplot(rows_n, cols, k + 1)
        curves = [(e.name, colours.get(e.name, "grey"), 1.2, e.mean_curve,
                   e.ci_curve) for e in variant["baselines"]]
        for g, group in enumerate(groups):
            row = next(r for r in result["rows"] if r.variant == variant["name"]
                       and r.group == group)
            curves.append((f"{group} (learned)", learned_colours[g % len(learned_colours)], 2.4,
                           row.mean_curve, row.ci_curve))
        seen = np.concatenate([array(c[3])[np.isfinite(array(c[3]))] for c in curves]
                              or [np.empty(0)])
        log_scale = seen.size > 0 and bool((seen > 0).all())
        floor = float(seen.min()) * 1e-2 if log_scale else None
        for label, colour, width, mean_values, ci_values in curves:
            mean, ci = array(mean_values), array(ci_values)
            steps = np.arange(mean.size)
            ax.plot(steps, mean, color=colour, lw=width, label=label)
            if ci.size == mean.size and np.isfinite(ci).any():
                low = mean - ci if floor is None else np.maximum(mean - ci, floor)
                ax.fill_between(steps, low, mean + ci, color=colour, alpha=0.13, lw=0)
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(f"{variant['name']} ({variant['task']}, {variant['steps']} steps)",
                     fontsize="medium")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if k % cols == 0:
            ax.set_ylabel("loss" + (" (log scale)" if log_scale else ""))
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize="x-small", framealpha=0.9)
    fig.suptitle(result["title"] + ": mean loss, 95% CI bands")
    return save(fig, path, dpi)


def write_outputs(run_dir: str | Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """generalization.md, generalization.png, then generalization.json (its presence: complete)."""
    return write_page_figure_json(run_dir, "generalization", "generalization.png",
                                  markdown(result), lambda path: plot(path, result),
                                  dumps(result, indent=2) + "\n")
