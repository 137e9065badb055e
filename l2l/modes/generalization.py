"""The generalization study in one command (``mode=generalization``).

    python train.py experiment=generalization checkpoints=[a.pt,b.pt,lstm-quadratic]

A learned optimizer is only interesting if it works beyond the problems it was meta-trained on,
and that claim is only fair against baselines tuned for each problem. So every checkpoint (a
path or a :mod:`l2l.pretrained` zoo name) is evaluated on the base task and on each held-out
*variant* (``generalization.variants``: a ``conf/task`` preset plus optional ``eval_steps`` and
task ``kwargs`` overrides), and every baseline of ``eval.baselines`` has its learning rate tuned
on validation problems *of that variant* (:func:`l2l.protocol.tune_and_evaluate`).

Meta-training seeds are an axis of the study: checkpoints of the same optimizer (same name, or
the same ``label`` given as ``{path: ..., label: ...}``) from different ``seed=`` runs are one
group, and each variant reports the mean over seeds of their final losses with a Student-t 95%
CI across seeds, plus the worst seed. With a single checkpoint the CI is across test instances.
All learned optimizers and baselines meet the same test problems (``eval.seed``).

Writes ``generalization.md``, ``generalization.json`` and ``generalization.png`` (a panel per
variant: mean loss curves with CI bands, log-scale y, as in the paper's generalization figure).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from l2l.evaluation import EvaluationRecord
from l2l.presets import Variant, parse_variants, variant_config
from l2l.progress import progress_bar
from l2l.protocol import check_task_data, evaluate, tune_and_evaluate
from l2l.records import StudyRow
from l2l.report.cells import DASH, finite
from l2l.report.study import markdown_tables, write_outputs
from l2l.run_config import in_mixture, plain, task_identity
from l2l.stats import mean_ci95, separated_winner
from l2l.study_checkpoints import (
    Checkpoint,
    Prefixed,
    by_group,
    checkpoint_name,
    load_checkpoints,
    trained_on_text,
)
from l2l.tasks import build_task
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")


# ---- what the study runs on --------------------------------------------------------------------


@dataclass
class Study:
    """Everything the study needs, checked before any work starts (:func:`prepare`)."""

    variants: list[tuple[Variant, DictConfig, TaskFamily]]
    checkpoints: list[Checkpoint]

    @property
    def groups(self) -> dict[str, list[Checkpoint]]:
        return by_group(self.checkpoints)


def prepare(cfg: DictConfig, device: torch.device) -> Study:
    """Check the whole study before any work (every checkpoint loads, every variant's task
    builds and has its data), so that a typo fails in a second, not after hours of tuning."""
    checkpoints = load_checkpoints(cfg, device)
    variants = []
    for variant in parse_variants(cfg):
        vcfg = variant_config(cfg, variant)
        task = build_task(vcfg.task.family, **plain(vcfg.task.kwargs))
        task.name = vcfg.task.name
        check_task_data(task, device)
        variants.append((variant, vcfg, task))
    return Study(variants, checkpoints)


# ---- running it --------------------------------------------------------------------------------


def run_study(cfg: DictConfig, study: Study, device: torch.device, run_dir: Path,
              logger: RunLogger) -> dict[str, Any]:
    """Tune every baseline and evaluate every checkpoint on every variant; write the table,
    the JSON and the figure into ``run_dir``; return the JSON's content."""
    results: dict[str, dict[str, Any]] = {}
    with progress_bar(len(study.variants), "variants", enabled=cfg.progress) as bar:
        for variant, vcfg, task in study.variants:
            log.info("variant %s: task %s, %d steps", variant.name, vcfg.task.name,
                     vcfg.eval.steps)
            prefixed = Prefixed(logger, f"generalization/{variant.name}")
            baselines = [tune_and_evaluate(vcfg, name, task, device, prefixed)
                         for name in cfg.eval.baselines]
            learned = [evaluate(vcfg, c.optimizer, task, device,
                                            name=checkpoint_name(c, i), tuned_lr=None)
                       for i, c in enumerate(study.checkpoints)]
            results[variant.name] = {"variant": variant, "cfg": vcfg, "baselines": baselines,
                                     "learned": learned}
            bar.update(1)
    result = summarize_study(cfg, study, results)
    write_outputs(run_dir, result)
    for row in result["rows"]:
        logger.summary({f"generalization/{row.variant}/{row.group}/final_loss": row.learned_mean,
                        f"generalization/{row.variant}/{row.group}/ratio": row.ratio})
    print(f"\n{markdown_tables(result)}\nstudy: {run_dir / 'generalization.md'}", flush=True)
    return result


def seen_in_training(checkpoints: Sequence[Checkpoint], vcfg: DictConfig) -> str:
    """Did the learned optimizer meet this variant's task in meta-training? ``yes`` (same task
    and horizon), ``task only`` (same task, other horizon), ``component of the mixture`` (it
    was one of the tasks of a mixture), ``no``, or ``unknown`` (the checkpoint does not record
    its task)."""
    answers = set()
    target = task_identity(plain(vcfg.task))
    for checkpoint in checkpoints:
        if checkpoint.trained_on is None:
            answers.add("unknown")
        elif task_identity(checkpoint.trained_on) != target:
            answers.add("component of the mixture" if in_mixture(checkpoint.trained_on, target)
                        else "no")
        elif checkpoint.horizon is not None and checkpoint.horizon != vcfg.eval.steps:
            answers.add(f"task only ({checkpoint.horizon} steps)")
        else:
            answers.add("yes")
    return " / ".join(sorted(answers))


def winner(learned: tuple[float, float], baseline: tuple[float, float], name: str) -> str:
    """Who has the lower final loss with separated 95% intervals: ``learned``, the baseline's
    name, or ``overlap`` (including when an interval is unknown)."""
    (lm, lc), (bm, bc) = learned, baseline
    if finite(lm) is None or finite(bm) is None:
        return DASH
    if finite(lc) is None or finite(bc) is None:
        return "overlap (no CI)"
    found, _ = separated_winner([("learned", lm, lc), (name, bm, bc)])
    return found or "overlap"


def _seed_curves(records: Sequence[EvaluationRecord]) -> tuple[list[float], list[float]]:
    """Mean over seeds of the per-seed mean curves, with the across-seed CI per step (one seed:
    its own across-instance CI)."""
    if len(records) == 1:
        return list(records[0].mean_curve), list(records[0].ci_curve)
    length = min(len(r.mean_curve) for r in records)
    mean, ci = [], []
    for t in range(length):
        m, c = mean_ci95([r.mean_curve[t] for r in records])
        mean.append(m)
        ci.append(c)
    return mean, ci


def summarize_study(cfg: DictConfig, study: Study, results: Mapping[str, Mapping[str, Any]],
                    ) -> dict[str, Any]:
    """The combined table's rows (one per variant and learned group) and everything behind
    them: per-seed losses, every baseline's record, the curves for the figure."""
    groups = study.groups
    group_index = {c.group: [i for i, d in enumerate(study.checkpoints) if d.group == c.group]
                   for c in study.checkpoints}
    rows, variants = [], []
    for name, result in results.items():
        variant, vcfg = result["variant"], result["cfg"]
        baselines: list[EvaluationRecord] = result["baselines"]
        ok = [b for b in baselines if finite(b.final_loss_mean) is not None]
        best = min(ok, key=lambda b: b.final_loss_mean) if ok else None
        ok_log = [b for b in baselines if finite(b.final_log10_loss_mean) is not None]
        best_log = min(ok_log, key=lambda b: b.final_log10_loss_mean) if ok_log else None
        variants.append({"name": name, "task": vcfg.task.name, "preset": variant.task,
                         "kwargs": variant.kwargs, "steps": vcfg.eval.steps,
                         "baselines": list(baselines), "learned": list(result["learned"])})
        for group, members in groups.items():
            records = [result["learned"][i] for i in group_index[group]]
            finals = [r.final_loss_mean for r in records]
            if len(records) == 1:
                mean, ci, over = records[0].final_loss_mean, records[0].final_loss_ci95, \
                    "instances"
                log_mean, log_ci = (records[0].final_log10_loss_mean,
                                    records[0].final_log10_loss_ci95)
            else:
                mean, ci = mean_ci95(finals)
                log_mean, log_ci = mean_ci95([r.final_log10_loss_mean for r in records])
                over = "seeds"
            ok = [(f, c) for f, c in zip(finals, members) if finite(f) is not None]
            worst = max(ok, key=lambda fc: fc[0]) if ok else None
            if len(ok) < len(finals):  # a seed without any finite loss is the worst
                worst = next((f, c) for f, c in zip(finals, members) if finite(f) is None)
            curve, ci_curve = _seed_curves(records)
            best_pair = (best.final_loss_mean, best.final_loss_ci95) if best else (math.nan,
                                                                                   math.nan)
            rows.append(StudyRow(
                variant=name, task=vcfg.task.name, steps=vcfg.eval.steps,
                group=group, optimizer=members[0].optimizer.name,
                seen_in_training=seen_in_training(members, vcfg),
                learned_mean=mean, learned_ci95=ci, ci_over=over,
                n_seeds=len(records),
                per_seed=[{"seed": c.seed, "checkpoint": c.spec, "final_loss": f,
                           "diverged": r.diverged} for f, c, r in zip(finals, members, records)],
                worst_seed=None if worst is None else {"seed": worst[1].seed,
                                                       "checkpoint": worst[1].spec,
                                                       "final_loss": worst[0]},
                diverged=sum(r.diverged for r in records),
                best_baseline=best.name if best else None,
                best_baseline_lr=best.tuned_lr if best else None,
                best_baseline_mean=best_pair[0], best_baseline_ci95=best_pair[1],
                ratio=mean / best_pair[0] if finite(mean) is not None and best
                and best_pair[0] > 0 else math.nan,
                winner=winner((mean, ci), best_pair, best.name if best else DASH),
                learned_log10_mean=log_mean, learned_log10_ci95=log_ci,
                best_log10_baseline=best_log.name if best_log else None,
                best_log10_mean=best_log.final_log10_loss_mean if best_log else math.nan,
                best_log10_ci95=best_log.final_log10_loss_ci95 if best_log else math.nan,
                winner_log10=winner(
                    (log_mean, log_ci),
                    (best_log.final_log10_loss_mean, best_log.final_log10_loss_ci95)
                    if best_log else (math.nan, math.nan), best_log.name if best_log else DASH),
                mean_curve=curve, ci_curve=ci_curve))
    trained_on = {group: trained_on_text(members) for group, members in groups.items()}
    return {"title": f"Generalization study ({cfg.task.name} base)",
            "base_task": cfg.task.name, "eval_seed": cfg.eval.seed,
            "instances": cfg.eval.instances, "baselines": list(cfg.eval.baselines),
            "groups": {group: {"trained_on": trained_on[group],
                               "checkpoints": [c.describe() for c in members]}
                       for group, members in groups.items()},
            "variants": variants, "rows": rows}


def check(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path) -> Study:
    """The whole study checked before any work (:func:`prepare`): passed on to :func:`run`."""
    return prepare(cfg, device)


def run(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
        logger: RunLogger, checked: Study) -> None:
    run_study(cfg, checked, device, run_dir, logger)
    return None
