"""The suite's scores, tables and figure: suite.json, suite.md and suite_profile.png."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from l2l.atomic import save_figure
from l2l.evaluation import EvaluationRecord
from l2l.report import dumps, fmt
from l2l.report.figures import write_page_figure_json
from l2l.suite.plan import SuitePlan, at_horizon
from l2l.suite.scoring import (
    final_loss_ratio,
    iqm_with_ci,
    performance_profile,
    profile_taus,
    speed_up,
)

log = logging.getLogger("l2l")
#: issue 22's goals for a learned optimizer on the held-out suite
GOALS = {"iqm_ratio": 0.9, "iqm_speed_up": 1.5, "worst_ratio": 2.0}


def learned_score(record: EvaluationRecord) -> float:
    """A learned run's final loss as scored: ``inf`` if any test problem diverged (as
    :func:`l2l.evaluation.final_loss_score` picks winners), else the mean final loss."""
    if record.diverged or not math.isfinite(record.final_loss_mean):
        return math.inf
    return record.final_loss_mean


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summarize(cfg: DictConfig, plan: SuitePlan, measured: list[dict[str, Any]],
              trained_on: Mapping[str, str]) -> dict[str, Any]:
    """Per (group, task) rows and per group the IQM aggregates (the JSON's content)."""
    groups = plan.groups
    rows, tasks = [], []
    for item in measured:
        spec, baselines = item["spec"], item["baselines"]
        ref = baselines[plan.reference]["entry"]
        ref_final, ref_ci = at_horizon(ref, spec.horizon)
        ref_curve = [math.nan if v is None else float(v) for v in ref.get("mean_curve") or []]
        tasks.append({
            "task": spec.name, "preset": spec.task, "kwargs": spec.kwargs,
            "horizon": spec.horizon, "reference_steps": len(ref_curve) - 1,
            "baselines": {name: {"status": b["entry"].get("status"),
                                 "tuned_lr": b["entry"].get("tuned_lr"),
                                 "final_loss": at_horizon(b["entry"], spec.horizon)[0],
                                 "final_loss_ci95": at_horizon(b["entry"], spec.horizon)[1],
                                 "diverged": b["entry"].get("diverged"),
                                 "notes": b["entry"].get("notes") or [],
                                 "cached": b["cached"], "tuning": b["entry"].get("tuning"),
                                 "mean_curve": b["entry"].get("mean_curve")}
                          for name, b in baselines.items()}})
        by_checkpoint = dict(zip((id(c) for c in plan.checkpoints), item["learned"]))
        for group, members in groups.items():
            per_seed = []
            for checkpoint in members:
                record = by_checkpoint[id(checkpoint)]
                score = learned_score(record)
                per_seed.append({
                    "seed": checkpoint.seed, "checkpoint": checkpoint.spec,
                    "final_loss": record.final_loss_mean,
                    "final_loss_ci95": record.final_loss_ci95, "diverged": record.diverged,
                    "ratio": final_loss_ratio(score, ref_final),
                    "speed_up": speed_up(ref_curve, score, spec.horizon) if ref_curve else
                    math.nan, "mean_curve": record.mean_curve})
            ratios = [s["ratio"] for s in per_seed]
            rows.append({
                "group": group, "task": spec.name, "horizon": spec.horizon,
                "reference": plan.reference, "reference_lr": ref.get("tuned_lr"),
                "reference_final_loss": ref_final, "reference_final_loss_ci95": ref_ci,
                "learned_final_loss": _mean([learned_score(by_checkpoint[id(c)])
                                             for c in members]),
                "ratio": _mean(ratios), "worst_seed_ratio": max(ratios),
                "speed_up": _mean([s["speed_up"] for s in per_seed]),
                "diverged": sum(s["diverged"] for s in per_seed), "per_seed": per_seed})
    aggregates = {group: aggregate([r for r in rows if r["group"] == group], plan)
                  for group in groups}
    return {"title": f"Held-out suite ({plan.name})", "suite": plan.name,
            "reference": plan.reference, "baselines": list(cfg.eval.baselines),
            "speedup_cap": plan.speedup_cap, "bootstrap_reps": plan.bootstrap_reps,
            "eval_seed": cfg.eval.seed, "instances": cfg.eval.instances,
            "tune": {k: cfg.tune[k] for k in ("low", "high", "per_decade", "instances")},
            "cache_dir": str(plan.cache_dir),
            "groups": {group: {"trained_on": trained_on.get(group, "unknown"),
                               "checkpoints": [c.describe() for c in members]}
                       for group, members in groups.items()},
            "tasks": tasks, "rows": rows, "aggregates": aggregates,
            "skipped": [{"task": s.name, "preset": s.task, "reason": why}
                        for s, why in plan.skipped],
            "goals": GOALS}


def aggregate(rows: list[dict[str, Any]], plan: SuitePlan) -> dict[str, Any]:
    """A group's IQM ratio and speed-up (runs x tasks, stratified-bootstrap 95% CIs), its
    performance profile and worst task, over the tasks that have a reference score."""
    usable = [r for r in rows if all(not math.isnan(s["ratio"]) for s in r["per_seed"])]
    left_out = [r["task"] for r in rows if r not in usable]
    if not usable:
        nan = {"iqm": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        return {"ratio": nan, "speed_up": nan, "tasks": 0, "runs": 0, "worst_ratio": math.nan,
                "worst_task": None, "profile": {"tau": [], "fraction": []},
                "left_out": left_out, "verdict": "no task has a reference score"}
    ratios = np.array([[s["ratio"] for s in r["per_seed"]] for r in usable]).T  # runs x tasks
    speeds = np.array([[s["speed_up"] for s in r["per_seed"]] for r in usable]).T
    worst = max(usable, key=lambda r: r["ratio"])
    taus = profile_taus()
    out = {"ratio": iqm_with_ci(ratios, reps=plan.bootstrap_reps),
           "speed_up": iqm_with_ci(speeds, reps=plan.bootstrap_reps),
           "tasks": len(usable), "runs": int(ratios.shape[0]),
           "worst_ratio": worst["ratio"], "worst_task": worst["task"],
           "won": sum(r["ratio"] < 1 for r in usable),
           "profile": {"tau": taus, "fraction": performance_profile(ratios, taus)},
           "left_out": left_out}
    out["verdict"] = verdict(out)
    return out


def verdict(agg: Mapping[str, Any]) -> str:
    """One line: each of issue 22's goals, met or not, with the figure that decides it."""
    ratio, speed = agg["ratio"], agg["speed_up"]
    checks = [
        (f"IQM ratio ≤ {GOALS['iqm_ratio']} with its CI below 1 (got {_ci(ratio)})",
         ratio["iqm"] <= GOALS["iqm_ratio"] and ratio["ci_high"] < 1),
        (f"IQM speed-up ≥ {GOALS['iqm_speed_up']} (got {_ci(speed)})",
         speed["iqm"] >= GOALS["iqm_speed_up"]),
        (f"no task worse than {GOALS['worst_ratio']:g}x (worst: {agg['worst_task']} "
         f"{fmt(agg['worst_ratio'], 3)}x)", agg["worst_ratio"] <= GOALS["worst_ratio"]),
    ]
    met = sum(ok for _, ok in checks)
    parts = "; ".join(f"{text}: {'met' if ok else 'NOT met'}" for text, ok in checks)
    return f"{met} of 3 goals met — {parts}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _ci(agg: Mapping[str, Any]) -> str:
    return f"{fmt(agg['iqm'], 3)} [{fmt(agg['ci_low'], 3)}, {fmt(agg['ci_high'], 3)}]"


def group_table(result: Mapping[str, Any], group: str) -> str:
    """A group's per-task table, then its IQM rows and verdict."""
    rows = [r for r in result["rows"] if r["group"] == group]
    agg = result["aggregates"][group]
    ref = result["reference"]
    seeds = len(rows[0]["per_seed"]) if rows else 0
    over = f"mean over {seeds} seeds" if seeds > 1 else "one checkpoint"
    lines = [f"| task | horizon | tuned {ref} final loss (lr) | learned final loss | "
             f"ratio ({over}) | speed-up |", "|---|---|---|---|---|---|"]
    for r in rows:
        diverged = f" ({r['diverged']} diverged)" if r["diverged"] else ""
        lines.append(f"| {_cell(r['task'])} | {r['horizon']} | "
                     f"{fmt(r['reference_final_loss'])} ({fmt(r['reference_lr'], 3)}) | "
                     f"{fmt(r['learned_final_loss'])}{diverged} | {fmt(r['ratio'], 3)} | "
                     f"{fmt(r['speed_up'], 3)} |")
    lines.append(f"| **IQM** ({agg['tasks']} tasks × {agg['runs']} runs, 95% CI) | | | | "
                 f"**{_ci(agg['ratio'])}** | **{_ci(agg['speed_up'])}** |")
    lines += ["", f"**Verdict**: {agg['verdict']}."]
    if agg["left_out"]:
        lines.append(f"Left out of the IQM (no {ref} score): {', '.join(agg['left_out'])}.")
    return "\n".join(lines)


def text_summary(result: Mapping[str, Any]) -> str:
    """What the console shows: a table per learned group."""
    out = []
    for group, info in result["groups"].items():
        out += [f"### {group}: meta-trained on {info['trained_on']}", "",
                group_table(result, group), ""]
    return "\n".join(out)


def markdown(result: Mapping[str, Any]) -> str:
    """suite.md: how to read it, a table per group, every tuned baseline, skipped tasks."""
    ref, cap = result["reference"], result["speedup_cap"]
    tune = result["tune"]
    cached = sum(b["cached"] for t in result["tasks"] for b in t["baselines"].values())
    total = sum(len(t["baselines"]) for t in result["tasks"])
    lines = [
        f"# {result['title']}", "",
        f"{len(result['tasks'])} tasks; {result['instances']} test problems per task "
        f"(eval.seed={result['eval_seed']}), the same problems and minibatches for every "
        f"optimizer, each from a fresh state. Baselines ({', '.join(result['baselines'])}) have "
        f"their learning rate tuned per task at its horizon on {tune['instances']} validation "
        f"problems (grid {fmt(tune['low'], 3)} .. {fmt(tune['high'], 3)}, {tune['per_decade']} "
        f"per decade); {cached} of {total} tuned baselines came from the cache "
        f"`{result['cache_dir']}`.", "",
        f"- **ratio**: learned mean final test loss / tuned {ref}'s at the horizon (< 1: "
        "better); a learned run with any diverged test problem scores ∞.",
        f"- **speed-up**: the first step at which tuned {ref}'s mean test-loss curve reaches the "
        f"learned optimizer's mean final loss, over the horizon (the \"steps to reach\" ratio of "
        f"VeLO and learned_optimization; > 1: {ref} needs more steps). {ref} runs {cap}x the "
        f"horizon; never reaching it there counts as {cap} (a lower bound); diverged: 0.",
        "- **IQM**: interquartile mean over tasks × meta-training seeds, with a 95% "
        f"stratified-bootstrap CI ({result['bootstrap_reps']} replicates, seeds resampled "
        "within each task, as rliable does). With one checkpoint the CI has no seed "
        "uncertainty to show and is a point.",
        f"- **goals** (issue 22): IQM ratio ≤ {GOALS['iqm_ratio']} with the CI below 1, IQM "
        f"speed-up ≥ {GOALS['iqm_speed_up']}, no task's ratio (mean over seeds) above "
        f"{GOALS['worst_ratio']:g}.", ""]
    for group, info in result["groups"].items():
        lines += [f"## {group}", "", f"Meta-trained on: {info['trained_on']}."]
        lines += [f"- `{c['spec']}` (seed {c['seed'] if c['seed'] is not None else '?'}, "
                  f"iteration {c['iteration'] if c['iteration'] is not None else '?'})"
                  for c in info["checkpoints"]]
        lines += ["", group_table(result, group), ""]
    lines += ["![performance profile](suite_profile.png)", "", "## Every tuned baseline", "",
              "Mean final test loss at the horizon (tuned lr).", ""]
    names = result["baselines"]
    lines.append("| task | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    notes = []
    for task in result["tasks"]:
        cells = []
        for name in names:
            b = task["baselines"][name]
            cells.append(_cell(b["status"]) if b["status"] != "ok" else
                         f"{fmt(b['final_loss'])} (lr {fmt(b['tuned_lr'], 3)})")
            notes += [f"{task['task']}/{name}: {n}" for n in b["notes"]]
        lines.append(f"| {_cell(task['task'])} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Notes:", "", *[f"- {_cell(n)}" for n in notes]]
    if result["skipped"]:
        lines += ["", "## Skipped tasks (data not present)", ""]
        lines += [f"- {s['task']} ({s['preset']}): {_cell(s['reason'])}"
                  for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def plot(path: str | Path, result: Mapping[str, Any], dpi: int = 110) -> Path:
    """suite_profile.png: per group, the fraction of (seed, task) pairs whose ratio is ≤ tau."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(6.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for group, agg in result["aggregates"].items():
        profile = agg["profile"]
        if profile["tau"]:
            ax.step(profile["tau"], profile["fraction"], where="post", lw=2,
                    label=f"{group} (IQM ratio {fmt(agg['ratio']['iqm'], 3)})")
    ax.axvline(1.0, color="grey", lw=1, ls="--")
    ax.set_xscale("log")
    ticks = [0.25, 0.5, 1.0, 2.0, 4.0]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"tau (learned final loss / tuned {result['reference']}'s)")
    ax.set_ylabel("fraction of tasks with ratio ≤ tau")
    ax.set_title(f"{result['title']}: performance profile", fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def write_outputs(run_dir: str | Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """suite.md, suite_profile.png, then suite.json (last: its presence means complete)."""
    return write_page_figure_json(run_dir, "suite", "suite_profile.png", markdown(result),
                                  lambda path: plot(path, result), dumps(result, indent=1) + "\n")


__all__ = ["GOALS", "aggregate", "markdown", "summarize", "verdict", "write_outputs"]
