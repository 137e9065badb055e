"""One table and one figure for a whole Hydra sweep: ``python -m l2l.aggregate <sweep dir>``.

A multirun (``python train.py -m ...``) leaves one folder per job, each with its own
``summary.json``; comparing them by hand means opening every report. This module reads every
job's ``.hydra/overrides.yaml`` and ``summary.json``, finds the *swept* settings (the overrides
whose values differ between jobs), groups the jobs by them, and averages each optimizer's final
loss over the ``seed=`` axis (the meta-training seed; the test problems, fixed by ``eval.seed``,
are the same in every job) with a 95% confidence interval (Student t over seeds). It writes
``aggregate.md``, ``aggregate.json`` and ``aggregate.png`` into the sweep directory. Jobs that
failed (``failed.json``), whose ``summary.json`` is broken, that left no result, or that never
started (from Hydra's ``multirun.yaml``) are listed, never silently left out.

The ``AggregateCallback`` (listed under ``hydra.callbacks`` in ``conf/config.yaml``) runs it
at the end of every multirun; the command reruns it by hand (e.g. after adding jobs).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2l import job_status
from l2l.atomic import save_figure, write_text
from l2l.report import DASH, cell, dumps, finite, fmt, mean_ci, verdict_line
from l2l.stats import mean_ci95

log = logging.getLogger(__name__)

SEED_KEYS = ("seed",)  #: the replicate axis: averaged over, never grouped by
#: overrides that never define a setting (names, logging, cosmetics), ignored when grouping
IGNORED = ("run_name", "progress", "threads", "logger", "hydra", "data_dir", "device")


def _ignored(key: str) -> bool:
    key = key.lstrip("+~")
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in IGNORED)


def read_overrides(job_dir: Path) -> dict[str, str]:
    """A job's command-line overrides ``{key: value}`` from ``.hydra/overrides.yaml``; a file
    that is not a YAML list of strings is a ``ValueError`` naming it (the job's settings, by
    which it is grouped, would be unknown)."""
    import yaml

    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        items = error
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        problem = (str(items).splitlines()[0] if isinstance(items, Exception)
                   else f"a {type(items).__name__}, not a list of key=value strings")
        raise ValueError(f"{path} is malformed ({problem}): restore the job's overrides (one "
                         "'- key=value' line each), or move the job folder out of the sweep")
    return dict(item.split("=", 1) for item in items if "=" in item)


def jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job folder of a sweep (any sub-folder holding ``.hydra/`` or a ``failed.json``),
    in job-number order: ``{"dir", "overrides", "summary", "status", "reason"}``. ``status``:
    ``ok`` (a summary.json), ``failed`` (its failed.json says why), ``broken`` (a summary.json
    that does not parse), or ``missing`` (no result: unfinished, killed, or meta-training
    only); ``summary`` is None unless ``ok``."""
    sweep_dir = Path(sweep_dir)
    found = []
    folders = (p for p in sweep_dir.iterdir()
               if (p / ".hydra").is_dir() or (p / job_status.FAILED_FILE).is_file())
    for job_dir in sorted(folders, key=_number):
        summary, status, reason = None, "missing", None
        failure = job_status.read_failure(job_dir)
        summary_path = job_dir / "summary.json"
        if summary_path.is_file():
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
                status = "ok" if isinstance(summary, dict) else "broken"
            except (OSError, ValueError) as error:
                status, reason = "broken", f"summary.json is unreadable ({error})"
            if status == "broken":
                summary, reason = None, reason or "summary.json holds no result"
        if status != "ok" and failure is not None:
            status = failure.get("status") or "failed"
            reason = ": ".join(x for x in (failure.get("error"), failure.get("message")) if x)
        overrides = read_overrides(job_dir)
        if not overrides and failure is not None:  # refused before its .hydra/ was written
            overrides = _as_dict(failure.get("overrides") or [])
        found.append({"dir": job_dir, "overrides": overrides, "summary": summary,
                      "status": status, "reason": reason})
    return found


def _number(path: Path) -> tuple:
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (math.inf, path.name)


def _as_dict(items: Sequence[Any]) -> dict[str, str]:
    return dict(str(item).split("=", 1) for item in items if "=" in str(item))


def planned_jobs(sweep_dir: str | Path) -> list[list[str]] | None:
    """The overrides of every job the sweep launched or meant to launch (job ``k`` is item
    ``k``), from Hydra's ``multirun.yaml`` as its basic sweeper expands it; None if that
    cannot be known (no multirun.yaml, another sweeper)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        config = OmegaConf.load(path)
        if "BasicSweeper" not in str(OmegaConf.select(config, "hydra.sweeper._target_")):
            return None
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()]
        arguments += list(OmegaConf.select(config, "hydra.overrides.task") or [])
        overrides = OverridesParser.create().parse_overrides(arguments)
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception:  # noqa: BLE001 - a plan we cannot read is only a missing hint
        return None


def swept_keys(all_overrides: Sequence[Mapping[str, str]]) -> list[str]:
    """The override keys whose value differs between jobs (or is missing in some), in the
    order they first appear; ``seed`` and :data:`IGNORED` settings excluded."""
    keys: list[str] = []
    for overrides in all_overrides:
        keys += [k for k in overrides if k not in keys]
    return [k for k in keys if k not in SEED_KEYS and not _ignored(k)
            and len({o.get(k) for o in all_overrides}) > 1]


def aggregate(sweep_dir: str | Path) -> dict[str, Any]:
    """Group a sweep's jobs by their swept settings and average each optimizer's final loss
    over seeds; write ``aggregate.{md,json,png}`` into ``sweep_dir``; return the aggregate.

    Each row: the group's settings, the optimizer, ``n`` (jobs with a finite final loss),
    ``final_loss_mean`` and ``final_loss_ci95`` (over those jobs), the seeds, the tuned lrs.
    """
    sweep_dir = Path(sweep_dir)
    found = jobs(sweep_dir)
    keys = swept_keys([job["overrides"] for job in found])
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    missing, failed = [], []
    for job in found:
        setting = tuple((k, job["overrides"].get(k)) for k in keys)
        if job["status"] == "missing":
            missing.append(job["dir"].name)
        elif job["status"] != "ok":
            failed.append({"job": job["dir"].name, "status": job["status"],
                           "reason": job["reason"]})
        if job["summary"] is None:
            continue
        seed = job["overrides"].get("seed")
        for entry in job["summary"].get("optimizers", []):
            name = entry.get("name") or entry.get("optimizer")
            groups[setting][name].append({"seed": seed, "job": job["dir"].name,
                                          "final_loss": entry.get("final_loss_mean"),
                                          "final_log10": entry.get("final_log10_loss_mean"),
                                          "tuned_lr": entry.get("tuned_lr"),
                                          "learned": bool(entry.get("learned")),
                                          "untrained": entry.get("status") == "untrained"})
    rows = []
    for setting, optimizers in groups.items():
        for name, runs in optimizers.items():
            losses = [float(r["final_loss"]) for r in runs if finite(r["final_loss"]) is not None]
            mean, ci = mean_ci95(losses) if losses else (math.nan, math.nan)
            logs = [float(r["final_log10"]) for r in runs
                    if finite(r["final_log10"]) is not None]
            log_mean, log_ci = mean_ci95(logs) if logs else (math.nan, math.nan)
            rows.append({"settings": dict(setting), "optimizer": name, "n": len(losses),
                         "jobs": len(runs), "final_loss_mean": mean, "final_loss_ci95": ci,
                         "final_log10_loss_mean": log_mean, "final_log10_loss_ci95": log_ci,
                         "learned": any(r["learned"] for r in runs),
                         "untrained": sum(r["untrained"] for r in runs),
                         "seeds": [r["seed"] for r in runs],
                         "tuned_lrs": [r["tuned_lr"] for r in runs],
                         "job_dirs": [r["job"] for r in runs]})
    plan = planned_jobs(sweep_dir)
    numbers = {_number(job["dir"])[0] for job in found}
    if math.inf in numbers:  # job folders not named <job number>_...: no way to match them
        plan = None
    never_ran = [" ".join(o for o in overrides if not _ignored(o.split("=", 1)[0]))
                 for k, overrides in enumerate(plan or []) if k not in numbers]
    result = {"sweep_dir": str(sweep_dir), "swept": keys, "jobs": len(found),
              "planned": None if plan is None else len(plan), "missing": missing,
              "failed": failed, "never_ran": never_ran, "rows": rows}
    write_text(sweep_dir / "aggregate.json", dumps(result, indent=2) + "\n")
    write_text(sweep_dir / "aggregate.md", markdown(result))
    plot(sweep_dir / "aggregate.png", result)
    return result


def _merge_shared(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict]:
    """Rows as shown: a hand-designed optimizer whose result is the same in every group (the
    swept setting did not touch it, e.g. ``optimizer=`` swept over learned ones) appears once,
    for "all" groups, instead of once per group."""
    groups = {_label(r["settings"]) for r in rows}
    by_name: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_name[row["optimizer"]].append(row)
    shown: list[dict] = []
    for same in by_name.values():
        values = {(repr(r["final_loss_mean"]), repr(r["final_loss_ci95"])) for r in same}
        if not same[0]["learned"] and len(same) == len(groups) > 1 and len(values) == 1:
            shown.append({**same[0], "settings": {}})
        else:
            shown.extend(dict(r) for r in same)
    return shown


def _label(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "all jobs"


def _counts(result: Mapping[str, Any]) -> str:
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
             f"{_counts(result)}, grouped by the swept settings "
             f"({', '.join(f'`{k}`' for k in result['swept']) or 'none'}); each optimizer's "
             "final test loss (the mean over a job's held-out instances) is averaged over the "
             "jobs of a group (the `seed=` axis) with a Student-t 95% confidence interval "
             "(— for one seed).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def order(row: Mapping) -> tuple:
        loss = finite(row["final_loss_mean"])
        group = _label({k: row["settings"].get(k, "all") for k in keys})
        return (group, not row["learned"], loss is None, loss if loss is not None else 0.0)

    for row in sorted(_merge_shared(result["rows"], keys), key=order):
        loss = mean_ci(row["final_loss_mean"], row["final_loss_ci95"])
        if row.get("untrained"):
            loss += f" (untrained in {row['untrained']}/{row['jobs']} seeds)"
        lrs = sorted({fmt(lr, 3) for lr in row["tuned_lrs"] if lr is not None})
        name = cell(str(row["optimizer"]))
        lines.append("| " + " | ".join(
            [*(cell(str(row["settings"].get(k, "all"))) for k in keys),
             f"**{name}**" if row["learned"] else name, loss,
             f"{row['n']}/{row['jobs']}", ", ".join(lrs) or DASH]) + " |")
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


def _verdicts(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    """One verdict line per group of the table (over seeds): the winner with separated 95%
    intervals, or overlap, on the mean final loss and on the mean log10 final loss."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_label({k: row["settings"].get(k) for k in keys})].append(row)
    lines = []
    for label, members in groups.items():
        line = verdict_line(
            [(str(r["optimizer"]), r["final_loss_mean"], r["final_loss_ci95"]) for r in members],
            [(str(r["optimizer"]), r.get("final_log10_loss_mean", math.nan),
              r.get("final_log10_loss_ci95", math.nan)) for r in members])
        lines.append(line if len(groups) == 1 else
                     line.replace("**Verdict**", f"**Verdict** ({label})", 1))
    return lines


def plot(path: str | Path, result: Mapping[str, Any], dpi: int = 120) -> Path:
    """Mean final loss with its 95% CI per group (x) and optimizer (one marker series each),
    log-scale y: the sweep at a glance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from l2l.report import palette

    rows = result["rows"]
    groups = list(dict.fromkeys(_label(r["settings"]) for r in rows))
    names = list(dict.fromkeys(r["optimizer"] for r in rows))
    fig = Figure(figsize=(max(6.0, 1.2 * len(groups) + 3), 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = palette()
    width = 0.8 / max(len(names), 1)
    positive = [r["final_loss_mean"] for r in rows if (finite(r["final_loss_mean"]) or 0) > 0]
    for k, name in enumerate(names):
        xs, ys, errs = [], [], []
        for r in rows:
            if r["optimizer"] == name and finite(r["final_loss_mean"]) is not None:
                xs.append(groups.index(_label(r["settings"])) - 0.4 + width * (k + 0.5))
                ys.append(r["final_loss_mean"])
                errs.append(finite(r["final_loss_ci95"]) or 0.0)
        colour = "black" if any(r["learned"] for r in rows if r["optimizer"] == name) \
            else next(colours)
        ax.errorbar(xs, ys, yerr=errs, fmt="o", color=colour, capsize=3, label=name)
    if positive and len(positive) == len([r for r in rows if finite(r["final_loss_mean"])]):
        ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 3 else 0, ha="right"
                       if len(groups) > 3 else "center", fontsize="small")
    ax.set_ylabel("final test loss (mean over seeds, 95% CI)")
    ax.set_title(f"sweep {Path(result['sweep_dir']).name}")
    ax.grid(True, axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize="small", framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


try:  # the Hydra callback; hydra is a dependency, but keep the module usable without it
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


class AggregateCallback(_HydraCallback):
    """Hydra callback: aggregate the sweep when a multirun ends (``hydra.callbacks`` in
    ``conf/config.yaml``). A failure is a warning: the jobs' own results are already safe."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            result = aggregate(sweep_dir)
        except Exception as error:  # never turn a finished sweep into a failed command
            log.warning("could not aggregate the sweep %s: %s: %s", sweep_dir,
                        type(error).__name__, error)
            return
        job_status.note_failures(len(result["failed"]))
        print(f"sweep aggregate, {_counts(result)}: {sweep_dir / 'aggregate.md'}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m l2l.aggregate", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder: runs/multirun/<name>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory")
    try:
        result = aggregate(args.sweep_dir)
    except ValueError as error:  # a job's unreadable record: one line, no traceback
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print((args.sweep_dir / "aggregate.md").read_text(encoding="utf-8"))
    print(f"({_counts(result)}; also aggregate.json and aggregate.png in {args.sweep_dir})")


if __name__ == "__main__":
    main()
