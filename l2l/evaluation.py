"""Running optimizers on sampled problems, fairly: same instances, same minibatches, fresh state.

Every optimizer is run on the *same* sampled instances (and so, step for step, the same
minibatches), each run starting from a fresh ``opt.init`` state. A diverged instance (non-finite
loss or gradient) is frozen and reported as diverged, its loss curve kept up to that point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer, with_horizon
from l2l.records import record_fields
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
    optimizer: BatchedOptimizer, instances: Instances, steps: int, *, with_metrics: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> RunResult:
    """Optimize every instance for ``steps`` steps from a fresh state, recording all losses.

    ``progress`` (e.g. a progress bar's ``step``) is called with the step number after each of
    the ``steps`` updates, so that long evaluations show where they are.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    params = instances.init_params.clone()  # stepped in place; the instances keep their start
    B = params.shape[0]
    losses = torch.empty(steps + 1, B, dtype=torch.float64)
    diverged = torch.zeros(B, dtype=torch.bool, device=params.device)
    start = time.perf_counter()
    with torch.no_grad():
        state = with_horizon(optimizer.init(params), steps)
        for t in range(steps + 1):
            loss, grads = instances.loss_and_grad(params, t)
            diverged |= ~torch.isfinite(loss) | ~torch.isfinite(grads).all(dim=1)
            losses[t] = torch.where(diverged, math.nan, loss.double()).cpu()
            if t == steps:
                break
            # the frozen in-place step (for LSTM cores: chunked and fused, ~3x their pure update);
            # an instance that diverged keeps its last parameters
            frozen = params[diverged].clone() if bool(diverged.any()) else None
            optimizer.step_(grads, state, params)
            if frozen is not None:
                params[diverged] = frozen
            if progress is not None:
                progress(t + 1)
    if params.device.type == "cuda":
        torch.cuda.synchronize(params.device)
    seconds_per_step = (time.perf_counter() - start) / max(steps, 1)
    metrics = {}
    if with_metrics:
        with torch.no_grad():
            metrics = {k: v.detach().cpu() for k, v in instances.evaluate(params).items()}
    return RunResult(losses, params, diverged.cpu(), seconds_per_step, metrics)


def evaluate_optimizer(
    optimizer: BatchedOptimizer, task: TaskFamily, *, instances: int, seed: int, steps: int,
    name: str, learned: bool, tuned_lr: float | None, threshold: float | None,
    device: str | torch.device = "cpu", progress: Callable[[int], Any] | None = None,
) -> EvaluationRecord:
    """``optimizer`` on ``instances`` test problems of ``task`` (split ``"test"`` of ``seed``:
    the same problems for every optimizer given the same seed), summarised as its record.

    The rule is bound to the task's layouts first, for rules that read tensor structure; the
    record keeps its plain hyperparameters (tensors, e.g. a learned rule's weights, left out)."""
    problems = task.sample(instances, seed, "test", device=device)
    optimizer = optimizer.with_layout(task.layouts())
    result = run_optimizer(optimizer, problems, steps, progress=progress)
    hyper = {k: (list(v) if isinstance(v, tuple) else v)
             for k, v in optimizer.hyperparameters().items() if not isinstance(v, Tensor)}
    return evaluation_record(result, name=name, optimizer=optimizer, learned=learned,
                             tuned_lr=tuned_lr, threshold=threshold, hyperparameters=hyper)


def final_loss_score(result: RunResult) -> float:
    """Mean final loss, infinite if any instance diverged: the criterion for picking a winner."""
    if bool(result.diverged.any()):
        return math.inf
    return result.final_loss.mean().item()


# ---------------------------------------------------------------------------------------------
# Baseline tuning.


@dataclass(slots=True)
class TuneResult:
    """A learning-rate search: the grid, its validation scores, the best learning rate."""

    best_lr: float
    grid: list[float]
    #: (G,) mean final loss per learning rate over the validation instances; inf if any diverged
    scores: list[float]

    #: ``"low"``/``"high"`` when the best learning rate is the grid's lowest/highest value:
    #: the true optimum may then lie outside the grid, so the tuning is not to be trusted
    edge: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.edge = None
        if len(self.grid) >= 2 and any(math.isfinite(s) for s in self.scores):
            best = self.grid.index(self.best_lr)
            self.edge = "low" if best == 0 else "high" if best == len(self.grid) - 1 else None

    def to_json(self) -> dict[str, Any]:
        """The whole grid for reports and metrics.jsonl: ``scores`` keep ``inf`` for diverged
        learning rates (``None`` once in JSON), and ``diverged`` and ``edge`` say so
        explicitly (derived: :meth:`from_json` computes them again)."""
        return {"grid": list(self.grid), "scores": list(self.scores),
                "diverged": [not math.isfinite(s) for s in self.scores], "best_lr": self.best_lr,
                "edge": self.edge}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TuneResult:
        """The inverse of :meth:`to_json` (a ``None`` score is a diverged one: ``inf``);
        an unknown or missing key is a ValueError."""
        values = record_fields(cls, data, derived=("diverged", "edge"))
        values["scores"] = [math.inf if v is None else float(v) for v in values["scores"]]
        return cls(**values)


def tune_learning_rate(
    optimizer: BatchedOptimizer,
    task: TaskFamily,
    *,
    grid: list[float],
    num_instances: int,
    steps: int,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Callable[[int], Any] | None = None,
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
                           with_metrics=False, progress=progress)
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


@dataclass(slots=True)
class EvaluationRecord:
    """One optimizer's evaluation on a run's test problems: what reports, summaries and wandb
    show. ``metrics`` holds the task's end-of-run metrics as ``{name: (mean, ci95)}``.

    Slotted, so that a misspelled attribute is an AttributeError rather than a new field;
    written and read by :meth:`to_json` / :meth:`from_json` alone."""

    name: str  #: the row's label (the optimizer's registered name)
    optimizer: str
    learned: bool
    tuned_lr: float | None
    hyperparameters: dict[str, Any]
    final_loss_mean: float
    final_loss_ci95: float
    final_log10_loss_mean: float
    diverged: int
    instances: int
    seconds_per_step: float
    steps_to_threshold: int | None
    threshold: float | None
    mean_curve: list[float]
    ci_curve: list[float]
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    status: str = "ok"  #: "ok", or why the row holds no result (e.g. "failed to tune: ...")
    notes: list[str] = field(default_factory=list)  #: caveats shown beside the row
    #: the learning-rate search behind ``tuned_lr``, or None
    tuning: TuneResult | None = None
    #: the 95% CI of ``final_log10_loss_mean`` (the verdicts compare geometric means too)
    final_log10_loss_ci95: float = math.nan

    def to_json(self) -> dict[str, Any]:
        """The flat form of summary.json (``final_<metric>_mean``/``_ci95`` per metric)."""
        tuning = self.tuning
        self.tuning = None  # asdict would flatten it without its derived keys
        try:
            out = asdict(self)
        finally:
            self.tuning = tuning
        out["tuning"] = None if tuning is None else tuning.to_json()
        for name, (mean, ci) in out.pop("metrics").items():
            out[f"final_{name}_mean"], out[f"final_{name}_ci95"] = mean, ci
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvaluationRecord:
        """A record from its :meth:`to_json` form (a summary.json row), strictly: a key that is
        neither a field nor a ``final_<metric>_mean``/``_ci95`` pair, or a missing field, is a
        ValueError naming it. JSON's ``null`` for a non-finite number is NaN again."""
        metric_keys = {k for k in data if k.startswith("final_")
                       and (k.endswith("_mean") or k.endswith("_ci95"))
                       and k not in _RECORD_FIELDS}
        metrics = {}
        for key in sorted(metric_keys):
            stem, _, kind = key.rpartition("_")
            other = f"{stem}_{'ci95' if kind == 'mean' else 'mean'}"
            if other not in metric_keys:
                metric_keys.discard(key)  # unpaired: reported as an unknown key below
                continue
            metrics[stem[len("final_"):]] = (_number(data[f"{stem}_mean"]),
                                             _number(data[f"{stem}_ci95"]))
        values = record_fields(cls, data, extra=metric_keys)
        for key in _FLOAT_FIELDS:
            if key in values:
                values[key] = _number(values[key])
        if values.get("tuning") is not None:
            values["tuning"] = TuneResult.from_json(values["tuning"])
        values["mean_curve"] = [_number(v) for v in values["mean_curve"]]
        values["ci_curve"] = [_number(v) for v in values["ci_curve"]]
        values.pop("metrics", None)  # never written: metrics are the flat pairs above
        return cls(**values, metrics=metrics)

    @classmethod
    def failed(cls, name: str, optimizer: str, learned: bool, reason: str) -> EvaluationRecord:
        """A row for an optimizer that produced no result (kept in the report, never dropped)."""
        nan = math.nan
        return cls(name, optimizer, learned, None, {}, nan, nan, nan, 0, 0, nan, None, None,
                   [], [], {}, status=reason)


_FLOAT_FIELDS = ("final_loss_mean", "final_loss_ci95", "final_log10_loss_mean",
                 "final_log10_loss_ci95", "seconds_per_step")
_RECORD_FIELDS = {"final_loss_mean", "final_loss_ci95", "final_log10_loss_mean",
                  "final_log10_loss_ci95"}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def evaluation_record(result: RunResult, *, name: str, optimizer: BatchedOptimizer,
                      learned: bool, tuned_lr: float | None, threshold: float | None,
                      hyperparameters: dict[str, Any]) -> EvaluationRecord:
    """Summarise a run as a record (statistics as in :func:`summarize`)."""
    summary = summarize(result, threshold=threshold)
    metrics = {key[len("final_"):-len("_mean")]: (summary[key], summary[key[:-5] + "_ci95"])
               for key in summary if key.startswith("final_") and key.endswith("_mean")
               and key not in ("final_loss_mean", "final_log10_loss_mean")}
    return EvaluationRecord(
        name=name, optimizer=optimizer.name, learned=learned, tuned_lr=tuned_lr,
        hyperparameters=hyperparameters, final_loss_mean=summary["final_loss_mean"],
        final_loss_ci95=summary["final_loss_ci95"],
        final_log10_loss_mean=summary["final_log10_loss_mean"],
        final_log10_loss_ci95=summary["final_log10_loss_ci95"], diverged=summary["diverged"],
        instances=summary["instances"], seconds_per_step=summary["seconds_per_step"],
        steps_to_threshold=summary["steps_to_threshold"], threshold=threshold,
        mean_curve=summary["mean_curve"], ci_curve=summary["ci_curve"], metrics=metrics)


def summarize(result: RunResult, *, threshold: float | None = None) -> dict:
    """Plain-value summary of one optimizer's evaluation run (what report.md/summary.json hold).

    Final-loss statistics are over the instances that did not diverge; ``diverged`` counts the
    rest. The mean curve averages, per step, the instances still running.
    """
    mean, ci = mean_ci95(result.final_loss)
    log_mean, log_ci = mean_ci95(result.final_loss.log10())
    curve = torch.nanmean(result.losses, dim=1)
    summary = {
        "final_loss_mean": mean,
        "final_loss_ci95": ci,
        "final_log10_loss_mean": log_mean,
        "final_log10_loss_ci95": log_ci,
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
