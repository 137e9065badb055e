"""A sweep's aggregate as ``aggregate.md`` and ``aggregate.png``: a row per (swept settings,
optimizer), averaged over seeds, with a verdict per group (from :func:`l2l.aggregate.aggregate`,
whose rows are :class:`l2l.records.SweepRow`)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2l.records import SweepRow
from l2l.report.cells import DASH, cell, finite, fmt, mean_ci, verdict_line
from l2l.report.figures import new_figure, palette, save


def _merge_shared(rows: Sequence[SweepRow], keys: Sequence[str]) -> list[SweepRow]:
    """Rows as shown: a hand-designed optimizer whose result is the same in every group (the
    swept setting did not touch it, e.g. ``optimizer=`` swept over learned ones) appears once,
    for "all" groups, instead of once per group."""
    groups = {_label(r.settings) for r in rows}
    by_name: dict[str, list[SweepRow]] = defaultdict(list)
    for row in rows:
        by_name[row.optimizer].append(row)
    shown: list[SweepRow] = []
    for same in by_name.values():
        values = {(repr(r.final_loss_mean), repr(r.final_loss_ci95)) for r in same}
        if not same[0].learned and len(same) == len(groups) > 1 and len(values) == 1:
            shown.append(dataclasses.replace(same[0], settings={}))
        else:
            shown.extend(same)
    return shown


def _label(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "all jobs"


def counts(result: Mapping[str, Any]) -> str:
    """"3 jobs (1 failed)": how many jobs, and how many of them gave no result."""
    parts = [f"{len(result.get('failed', []))} failed" if result.get("failed") else "",
             f"{len(result['missing'])} without a result" if result["missing"] else "",
             f"{len(result['never_ran'])} never started" if result.get("never_ran") else ""]
    shown = ", ".join(p for p in parts if p)
    return f"{result['jobs']} jobs" + (f" ({shown})" if shown else "")


def markdown(result: Mapping[str, Any]) -> str:
    """``aggregate.md``: one row per (swept settings, optimizer), best mean first per group."""
    keys = [k for k in result["swept"] if k != "optimizer"]  # the optimizer column shows it
    header = [*keys, "optimizer", "final loss (mean ± 95% CI over seeds)", "seeds", "tuned lr"]
    lines = [f"# Sweep {Path(result['sweep_dir']).name}", "",
             f"{counts(result)}, grouped by the swept settings "
             f"({', '.join(f'`{k}`' for k in result['swept']) or 'none'}); each optimizer's "
             "final test loss (the mean over a job's held-out instances) is averaged over the "
             "jobs of a group (the `seed=` axis) with a Student-t 95% confidence interval "
             "(— for one seed).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def order(row: SweepRow) -> tuple:
        loss = finite(row.final_loss_mean)
        group = _label({k: row.settings.get(k, "all") for k in keys})
        return (group, not row.learned, loss is None, loss if loss is not None else 0.0)

    for row in sorted(_merge_shared(result["rows"], keys), key=order):
        loss = mean_ci(row.final_loss_mean, row.final_loss_ci95)
        if row.untrained:
            loss += f" (untrained in {row.untrained}/{row.jobs} seeds)"
        lrs = sorted({fmt(lr, 3) for lr in row.tuned_lrs if lr is not None})
        name = cell(str(row.optimizer))
        lines.append("| " + " | ".join(
            [*(cell(str(row.settings.get(k, "all"))) for k in keys),
             f"**{name}**" if row.learned else name, loss,
             f"{row.n}/{row.jobs}", ", ".join(lrs) or DASH]) + " |")
    lines += ["", *_verdicts(result["rows"], keys)]
    for failure in result.get("failed", []):
        lines += ["", f"**{failure['status']}**: `{failure['job']}`: "
                  + cell(failure["reason"] or "no reason recorded")]
    if result["missing"]:
        lines += ["", "Jobs without a summary.json (unfinished, killed, or meta-training only): "
                  + ", ".join(f"`{m}`" for m in result["missing"])]
    if result.get("never_ran"):
        lines += ["", f"Jobs of the sweep that never started ({len(result['never_ran'])} of "
                  f"{result['planned']}): " + ", ".join(f"`{m}`" for m in result["never_ran"])]
    lines += ["", "![sweep](aggregate.png)"]
    return "\n".join(lines) + "\n"


def _verdicts(rows: Sequence[SweepRow], keys: Sequence[str]) -> list[str]:
    """One verdict line per group of the table (over seeds): the winner with separated 95%
    intervals, or overlap, on the mean final loss and on the mean log10 final loss."""
    groups: dict[str, list[SweepRow]] = defaultdict(list)
    for row in rows:
        groups[_label({k: row.settings.get(k) for k in keys})].append(row)
    lines = []
    for label, members in groups.items():
        line = verdict_line(
            [(str(r.optimizer), r.final_loss_mean, r.final_loss_ci95) for r in members],
            [(str(r.optimizer), r.final_log10_loss_mean,
              r.final_log10_loss_ci95) for r in members])
        lines.append(line if len(groups) == 1 else
                     line.replace("**Verdict**", f"**Verdict** ({label})", 1))
    return lines


def plot(path: str | Path, result: Mapping[str, Any], dpi: int = 120) -> Path:
    """Mean final loss with its 95% CI per group (x) and optimizer (one marker series each),
    log-scale y: the sweep at a glance."""

    rows = result["rows"]
    groups = list(dict.fromkeys(_label(r.settings) for r in rows))
    names = list(dict.fromkeys(r.optimizer for r in rows))
    fig = new_figure(max(6.0, 1.2 * len(groups) + 3), 4.8)
    ax = fig.add_subplot()
    colours = palette()
    width = 0.8 / max(len(names), 1)
    positive = [r.final_loss_mean for r in rows if (finite(r.final_loss_mean) or 0) > 0]
    for k, name in enumerate(names):
        xs, ys, errs = [], [], []
        for r in rows:
            if r.optimizer == name and finite(r.final_loss_mean) is not None:
                xs.append(groups.index(_label(r.settings)) - 0.4 + width * (k + 0.5))
                ys.append(r.final_loss_mean)
                errs.append(finite(r.final_loss_ci95) or 0.0)
        colour = "black" if any(r.learned for r in rows if r.optimizer == name) \
            else next(colours)
        ax.errorbar(xs, ys, yerr=errs, fmt="o", color=colour, capsize=3, label=name)
    if positive and len(positive) == len([r for r in rows if finite(r.final_loss_mean)]):
        ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 3 else 0, ha="right"
                       if len(groups) > 3 else "center", fontsize="small")
    ax.set_ylabel("final test loss (mean over seeds, 95% CI)")
    ax.set_title(f"sweep {Path(result['sweep_dir']).name}")
    ax.grid(True, axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize="small", framealpha=0.9)
    return save(fig, path, dpi)
