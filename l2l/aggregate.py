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
from l2l.atomic import write_text
from l2l.evaluation import EvaluationRecord
from l2l.records import SweepRow
from l2l.report.cells import dumps, finite
from l2l.report.sweep import counts, markdown, plot
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
    in job-number order: ``{"dir", "overrides", "summary", "status", "reason"}`` (``summary``:
    the job's :class:`EvaluationRecord` list). ``status``:
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
                summary = read_summary(summary_path)
                status = "ok" if summary is not None else "broken"
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


def read_summary(path: Path) -> list[EvaluationRecord] | None:
    """The evaluation records of a job's summary.json (None: it holds no result object); a
    row that is not a record (a misspelled or missing field) is a ValueError naming it."""
    summary = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        return None
    return [EvaluationRecord.from_json(entry) for entry in summary.get("optimizers", [])]


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
        for entry in job["summary"]:
            groups[setting][entry.name or entry.optimizer].append(
                {"seed": seed, "job": job["dir"].name, "final_loss": entry.final_loss_mean,
                 "final_log10": entry.final_log10_loss_mean, "tuned_lr": entry.tuned_lr,
                 "learned": entry.learned, "untrained": entry.status == "untrained"})
    rows = []
    for setting, optimizers in groups.items():
        for name, runs in optimizers.items():
            losses = [float(r["final_loss"]) for r in runs if finite(r["final_loss"]) is not None]
            mean, ci = mean_ci95(losses) if losses else (math.nan, math.nan)
            logs = [float(r["final_log10"]) for r in runs
                    if finite(r["final_log10"]) is not None]
            log_mean, log_ci = mean_ci95(logs) if logs else (math.nan, math.nan)
            rows.append(SweepRow(settings=dict(setting), optimizer=name, n=len(losses),
                                 jobs=len(runs), final_loss_mean=mean, final_loss_ci95=ci,
                                 final_log10_loss_mean=log_mean, final_log10_loss_ci95=log_ci,
                                 learned=any(r["learned"] for r in runs),
                                 untrained=sum(r["untrained"] for r in runs),
                                 seeds=[r["seed"] for r in runs],
                                 tuned_lrs=[r["tuned_lr"] for r in runs],
                                 job_dirs=[r["job"] for r in runs]))
    plan = planned_jobs(sweep_dir)
    numbers = {_number(job["dir"])[0] for job in found}
    if math.inf in numbers:  # job folders not named <job number>_...: no way to match them
        plan = None
    never_ran = [" ".join(o for o in overrides if not _ignored(o.split("=", 1)[0]))
                 for k, overrides in enumerate(plan or []) if k not in numbers]
    result = {"sweep_dir": str(sweep_dir), "swept": keys, "jobs": len(found),
              "planned": None if plan is None else len(plan), "missing": missing,
              "failed": failed, "never_ran": never_ran, "rows": rows}
    write_text(sweep_dir / "aggregate.json",
               dumps({**result, "rows": [row.to_json() for row in rows]}, indent=2) + "\n")
    write_text(sweep_dir / "aggregate.md", markdown(result))
    plot(sweep_dir / "aggregate.png", result)
    return result


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
        print(f"sweep aggregate, {counts(result)}: {sweep_dir / 'aggregate.md'}", flush=True)


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
    print(f"({counts(result)}; also aggregate.json and aggregate.png in {args.sweep_dir})")


if __name__ == "__main__":
    main()
