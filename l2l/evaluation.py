"""Running optimizers on sampled problems, fairly: same instances, same minibatches, fresh state.

Every optimizer is run on the *same* sampled instances (and so, step for step, the same
minibatches), each run starting from a fresh ``opt.init`` state. A diverged instance (non-finite
loss or gradient) is frozen and reported as diverged, its loss curve kept up to that point.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer
from l2l.stats import mean_ci95
from l2l.tasks.base import Instances, TaskFamily


@dataclass
class RunResult:
    """Outcome of one optimizer on a batch of ``B`` instances for ``T`` steps."""

    losses: Tensor  #: (T + 1, B) loss at theta_0 .. theta_T; NaN after an instance diverged
    final_params: Tensor  #: (B, n)
    diverged: Tensor  #: (B,) bool
    seconds_per_step: float  #: wall time per step (gradient + update), whole batch
    metrics: dict[str, Tensor] = field(default_factory=dict)  #: task metrics at the end, (B,)

    @property
    def final_loss(self) -> Tensor:
        return self.losses[-1]


def run_optimizer(
    optimizer: BatchedOptimizer, instances: Instances, steps: int, *, with_metrics: bool = True
) -> RunResult:
    """Optimize every instance for ``steps`` steps from a fresh state, recording all losses."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    params = instances.init_params
    B = params.shape[0]
    losses = torch.empty(steps + 1, B, dtype=torch.float64)
    diverged = torch.zeros(B, dtype=torch.bool, device=params.device)
    start = time.perf_counter()
    with torch.no_grad():
        state = optimizer.init(params)
        for t in range(steps + 1):
            loss, grads = instances.loss_and_grad(params, t)
            diverged |= ~torch.isfinite(loss) | ~torch.isfinite(grads).all(dim=1)
            losses[t] = torch.where(diverged, math.nan, loss.double()).cpu()
            if t == steps:
                break
            update, state = optimizer.update(grads, state, params)
            params = torch.where(diverged[:, None], params, params + update)
    if params.device.type == "cuda":
        torch.cuda.synchronize(params.device)
    seconds_per_step = (time.perf_counter() - start) / max(steps, 1)
    metrics = {}
    if with_metrics:
        with torch.no_grad():
            metrics = {k: v.detach().cpu() for k, v in instances.evaluate(params).items()}
    return RunResult(losses, params, diverged.cpu(), seconds_per_step, metrics)


def final_loss_score(result: RunResult) -> float:
    """Mean final loss, infinite if any instance diverged: the criterion for picking a winner."""
    if bool(result.diverged.any()):
        return math.inf
    return result.final_loss.mean().item()


# ---------------------------------------------------------------------------------------------
# Baseline tuning.


def lr_grid(low: float = 1e-4, high: float = 10.0, per_decade: int = 3) -> list[float]:
    """Log-spaced learning rates ``low .. high`` with ``per_decade`` values per factor of 10."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high for the lr grid, got low={low}, high={high}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1, got {per_decade}")
    count = round(math.log10(high / low) * per_decade)
    return [low * 10 ** (k / per_decade) for k in range(count + 1)]


@dataclass
class TuneResult:
    best_lr: float
    grid: list[float]
    #: (G,) mean final loss per learning rate over the validation instances; inf if any diverged
    scores: list[float]


def tune_learning_rate(
    optimizer: BatchedOptimizer,
    task: TaskFamily,
    *,
    grid: list[float],
    num_instances: int,
    steps: int,
    seed: int,
    device: str | torch.device = "cpu",
) -> TuneResult:
    """Pick the learning rate with the lowest mean final loss on validation instances.

    All ``len(grid) * num_instances`` runs go as one batch: the same ``num_instances`` validation
    instances are repeated once per learning rate, and ``lr`` is a per-instance ``(G*M, 1)``
    tensor. A learning rate under which any instance diverges scores ``inf``.
    """
    if "lr" not in optimizer.hyperparameters():
        raise ValueError(f"{optimizer.name} has no learning rate to tune")
    instances = task.sample(num_instances, seed, "valid", device=device).repeat(len(grid))
    lrs = torch.tensor(grid, dtype=instances.init_params.dtype, device=instances.init_params.device)
    lr = lrs.repeat_interleave(num_instances).unsqueeze(1)
    result = run_optimizer(optimizer.with_hyperparameters(lr=lr), instances, steps,
                           with_metrics=False)
    final = result.final_loss.view(len(grid), num_instances)
    bad = result.diverged.view(len(grid), num_instances).any(dim=1) | ~torch.isfinite(final).all(1)
    scores = torch.where(bad, math.inf, final.mean(dim=1))
    best = int(torch.argmin(scores))
    return TuneResult(best_lr=grid[best], grid=list(grid), scores=scores.tolist())


# ---------------------------------------------------------------------------------------------
# Summaries.


def steps_to_threshold(mean_curve: Tensor, threshold: float) -> int | None:
    """First step at which the mean loss curve is at or below ``threshold`` (None if never)."""
    hits = torch.nonzero(mean_curve <= threshold)
    return int(hits[0]) if hits.numel() else None


def summarize(result: RunResult, *, threshold: float | None = None) -> dict:
    """Plain-value summary of one optimizer's evaluation run (what report.md/summary.json hold).

    Final-loss statistics are over the instances that did not diverge; ``diverged`` counts the
    rest. The mean curve averages, per step, the instances still running.
    """
    mean, ci = mean_ci95(result.final_loss)
    curve = torch.nanmean(result.losses, dim=1)
    summary = {
        "final_loss_mean": mean,
        "final_loss_ci95": ci,
        "final_log10_loss_mean": mean_ci95(result.final_loss.log10())[0],
        "diverged": int(result.diverged.sum()),
        "instances": int(result.diverged.numel()),
        "seconds_per_step": result.seconds_per_step,
        "steps_to_threshold": None if threshold is None else steps_to_threshold(curve, threshold),
        "threshold": threshold,
        "mean_curve": curve.tolist(),
        "ci_curve": [mean_ci95(row)[1] for row in result.losses],
    }
    for name, values in result.metrics.items():
        summary[f"final_{name}_mean"], summary[f"final_{name}_ci95"] = mean_ci95(values)
    return summary
