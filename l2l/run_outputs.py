"""What a run that evaluates optimizers leaves behind: ``summary.json``, ``report.md`` and
``curves.png`` in its directory, the same numbers in the run logger, and the table on the
console. Shared by the ``tune``, ``evaluate`` and ``compare`` modes."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig

from l2l.evaluation import EvaluationRecord
from l2l.report.evaluation import table_with_verdict, write_report
from l2l.tracking import RunLogger


def report(cfg: DictConfig, records: list[EvaluationRecord], run_dir: Path,
           logger: RunLogger) -> float:
    """Write summary.json, report.md and curves.png; log them; return the best final loss."""
    paths = write_report(run_dir, records, task=cfg.task.name, steps=cfg.eval.steps,
                         run={"mode": cfg.mode, "seed": cfg.seed, "eval_seed": cfg.eval.seed,
                              "eval_instances": cfg.eval.instances})
    logger.log_evaluation(records)
    print(f"\n{table_with_verdict(records)}\n\nreport: {paths['report']}", flush=True)
    finite = [r.final_loss_mean for r in records if math.isfinite(r.final_loss_mean)]
    return min(finite) if finite else math.inf
