"""The held-out suite's statistics: loss ratios, speed-ups, IQM with stratified-bootstrap CIs
and performance profiles, as small pure functions of plain numbers.

Conventions (those of the learned-optimizer literature, stated so a reader can check them):

* **final-loss ratio** of a task: the learned optimizer's mean final test loss over the tuned
  baseline's, both at the task's horizon ``T`` on the same test problems; below 1 is better.
* **speed-up** (the "steps to reach" ratio VeLO and ``learned_optimization`` report): the
  first step at which tuned Adam's *mean* loss curve over the test problems is at or below the
  learned optimizer's mean final loss, divided by ``T``. Above 1: Adam needs more steps than
  the learned optimizer had. Adam is run for ``cap * T`` steps (its first ``T`` steps are the
  ``T``-step run, as every run is deterministic); never reaching it there gives ``cap`` (a
  lower bound, so the cap can only understate the learned optimizer). A learned optimizer
  that diverged gets speed-up 0 and ratio ``inf``. Mean curves, not per-problem ones, because
  the ratio compares means too and a per-problem crossing is undefined for noisy minibatches.
* **IQM** (interquartile mean, Agarwal et al. 2021, as ``rliable`` computes it: scipy's
  ``trim_mean(x, 0.25)``): sort the ``runs x tasks`` scores, drop ``floor(n / 4)`` from each
  end, average the rest. Robust to a task or seed that fails outright, unlike the mean, and
  more efficient than the median.
* **stratified bootstrap** (rliable's ``StratifiedBootstrap``): each replicate resamples, for
  every task independently, its runs (meta-training seeds) with replacement, then takes the
  IQM; the 95% CI is the 2.5 and 97.5 percentiles of the replicates (percentile method).

Why hand-written rather than ``rliable``: rliable installs ``arch``, ``statsmodels``, ``scipy``,
``pandas`` and ``seaborn`` (about 100 MB) for the 40 lines below; its definitions are followed
exactly, and ``tests/test_suite_scoring.py`` checks these against direct computations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def final_loss_ratio(learned: float, baseline: float) -> float:
    """``learned / baseline``: ``inf`` if the learned optimizer diverged (non-finite loss),
    ``nan`` if the baseline has no positive finite loss (no comparison possible)."""
    if not math.isfinite(baseline) or baseline <= 0:
        return math.nan
    if not math.isfinite(learned):
        return math.inf
    return learned / baseline


def steps_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first step (index) at which ``curve`` is at or below ``target``; None if never.
    NaN entries (a diverged run) never count as reaching."""
    for step, value in enumerate(curve):
        if value is not None and math.isfinite(value) and value <= target:
            return step
    return None


def speed_up(baseline_curve: Sequence[float], learned_final: float, horizon: int) -> float:
    """Steps the baseline's mean curve needs to reach ``learned_final``, over ``horizon``.

    ``baseline_curve`` holds steps ``0 .. cap * horizon``; not reaching the target within it
    gives ``cap = (len(curve) - 1) / horizon`` (a lower bound). A non-finite ``learned_final``
    (diverged) gives 0."""
    if horizon < 1:
        raise ValueError(f"horizon must be a positive number of steps, got {horizon}")
    if not math.isfinite(learned_final):
        return 0.0
    reached = steps_to_reach(baseline_curve, learned_final)
    if reached is None:
        return (len(baseline_curve) - 1) / horizon
    return reached / horizon


def iqm(scores: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean of all values (flattened): the mean of the middle half after
    dropping ``floor(n / 4)`` from each end (``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        return math.nan
    cut = int(0.25 * x.size)
    return float(np.mean(x[cut:x.size - cut]))


def stratified_bootstrap_ci(scores: np.ndarray, *, reps: int = 2000, seed: int = 0,
                            confidence: float = 0.95) -> tuple[float, float]:
    """Percentile ``confidence`` interval of the IQM of ``scores`` (``runs x tasks``) under the
    stratified bootstrap: every replicate resamples each task's runs (a column) with
    replacement. Deterministic from ``seed``. One run per task: every replicate is the data
    itself, so the interval is the point (no seeds, no seed uncertainty to show)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores must be a non-empty (runs, tasks) array, got shape {x.shape}")
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = np.take_along_axis(np.broadcast_to(x, (reps, runs, tasks)), picks, axis=1)
    flat = np.sort(resampled.reshape(reps, -1), axis=1)
    cut = int(0.25 * flat.shape[1])
    stats = flat[:, cut:flat.shape[1] - cut].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def iqm_with_ci(scores: np.ndarray, *, reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """``{"iqm", "ci_low", "ci_high"}`` of a ``runs x tasks`` score matrix."""
    low, high = stratified_bootstrap_ci(scores, reps=reps, seed=seed)
    return {"iqm": iqm(scores), "ci_low": low, "ci_high": high}


def performance_profile(ratios: np.ndarray | Sequence[float], taus: Sequence[float]
                        ) -> list[float]:
    """For each ``tau``, the fraction of (run, task) ratios ``<= tau``: the share of the suite
    on which the learned optimizer is within a factor ``tau`` of the tuned baseline (lower
    ratios are better, so the curve rises; at ``tau = 1`` it is the share of tasks won). NaN
    ratios (no comparison) count as not within any ``tau``."""
    x = np.asarray(ratios, dtype=np.float64).ravel()
    if x.size == 0:
        return [math.nan for _ in taus]
    return [float(np.mean(x <= tau)) for tau in taus]


def profile_taus(low: float = 0.25, high: float = 4.0, count: int = 81) -> list[float]:
    """Log-spaced ``tau`` values for :func:`performance_profile` (1 is among them for the
    default odd count, the middle of a range symmetric in log)."""
    return [float(t) for t in np.geomspace(low, high, count)]


__all__ = ["final_loss_ratio", "iqm", "iqm_with_ci", "performance_profile", "profile_taus",
           "speed_up", "steps_to_reach", "stratified_bootstrap_ci"]
