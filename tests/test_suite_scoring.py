"""The suite's statistics equal direct computations on small fixed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2l.suite.scoring import (
    final_loss_ratio,
    iqm,
    iqm_with_ci,
    performance_profile,
    profile_taus,
    speed_up,
    steps_to_reach,
    stratified_bootstrap_ci,
)


def test_iqm_drops_a_quarter_from_each_end_by_hand():
    # 8 values: drop 2 lowest (0, 1) and 2 highest (50, 100), mean of 2, 3, 4, 5 = 3.5
    assert iqm([100, 0, 3, 5, 1, 50, 2, 4]) == 3.5
    # 6 values: floor(6/4) = 1 from each end: mean of 2, 3, 4, 5 = 3.5 (scipy's trim_mean)
    assert iqm([[1, 2, 3], [4, 5, 60]]) == 3.5
    # fewer than 4: nothing trimmed, the plain mean
    assert iqm([1.0, 2.0, 6.0]) == 3.0
    assert iqm([math.inf, 1.0, 1.0, 1.0, 1.0]) == 1.0  # a diverged task is trimmed away
    assert math.isnan(iqm([]))


def test_stratified_bootstrap_resamples_runs_within_each_task():
    scores = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]])  # 2 seeds x 3 tasks
    low, high = stratified_bootstrap_ci(scores, reps=500, seed=3)
    assert (low, high) == stratified_bootstrap_ci(scores, reps=500, seed=3)  # reproducible
    # a replicate keeps one value per (run, task) drawn from that task's column: the IQM of 6
    # values (trim 1 each end) is the mean of the middle 4, bounded by the all-first-seed and
    # all-second-seed replicates
    smallest = iqm(scores[[0, 0]])  # every task resampled to seed 0
    largest = iqm(scores[[1, 1]])
    assert smallest <= low <= iqm(scores) <= high <= largest
    # the same replicates computed directly
    rng = np.random.default_rng(3)
    picks = rng.integers(0, 2, size=(500, 2, 3))
    direct = [iqm(scores[picks[r], np.arange(3)]) for r in range(500)]
    assert (low, high) == pytest.approx(tuple(np.percentile(direct, [2.5, 97.5])))


def test_all_equal_scores_give_a_zero_width_interval():
    result = iqm_with_ci(np.full((3, 5), 0.7), reps=200)
    assert result == {"iqm": pytest.approx(0.7), "ci_low": pytest.approx(0.7),
                      "ci_high": pytest.approx(0.7)}
    one_seed = np.array([[0.5, 0.9, 1.1, 2.0]])  # one run per task: no seed uncertainty
    assert stratified_bootstrap_ci(one_seed) == pytest.approx((iqm(one_seed),) * 2)


def test_bootstrap_refuses_a_score_vector():
    with pytest.raises(ValueError, match=r"\(runs, tasks\)"):
        stratified_bootstrap_ci(np.array([1.0, 2.0]))


def test_speed_up_on_hand_made_curves():
    adam = [10.0, 8.0, 6.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0]  # horizon 4, run to 2x (cap 2)
    assert steps_to_reach(adam, 4.0) == 3
    assert speed_up(adam, 4.0, horizon=4) == 0.75  # Adam gets there first: slower learned
    assert speed_up(adam, 3.0, horizon=4) == 1.0  # equal to Adam's own final loss
    assert speed_up(adam, 2.0, horizon=4) == 1.5  # Adam needs 6 steps for the learned 4
    assert speed_up(adam, 0.5, horizon=4) == 2.0  # never reached: the cap, a lower bound
    assert speed_up(adam, math.nan, horizon=4) == 0.0  # the learned optimizer diverged
    assert speed_up([10.0, math.nan, math.nan], 5.0, horizon=1) == 2.0  # NaN never reaches
    with pytest.raises(ValueError, match="horizon"):
        speed_up(adam, 1.0, horizon=0)


def test_ratio_and_profile():
    assert final_loss_ratio(0.5, 2.0) == 0.25
    assert final_loss_ratio(math.nan, 2.0) == math.inf
    assert math.isnan(final_loss_ratio(1.0, 0.0))
    ratios = np.array([[0.5, 1.0, 3.0, math.nan]])
    assert performance_profile(ratios, [0.25, 0.5, 1.0, 2.0, 4.0]) == [0, 0.25, 0.5, 0.5, 0.75]
    taus = profile_taus()
    assert taus[0] == pytest.approx(0.25) and taus[-1] == pytest.approx(4.0)
    assert pytest.approx(taus[len(taus) // 2]) == 1.0


def _rows(ratios: list[list[float]], speeds: list[list[float]]) -> list[dict]:
    """Rows as l2l.suite.report.summarize makes them: one per task, a value per seed."""
    return [{"task": f"t{k}", "ratio": float(np.mean(r)),
             "per_seed": [{"ratio": a, "speed_up": b} for a, b in zip(r, s)]}
            for k, (r, s) in enumerate(zip(ratios, speeds))]


def test_a_group_aggregate_is_the_iqm_over_seeds_and_tasks_with_the_goals_verdict():
    from types import SimpleNamespace

    from l2l.suite.report import aggregate

    plan = SimpleNamespace(bootstrap_reps=200)
    good = aggregate(_rows([[0.5, 0.6], [0.7, 0.8], [0.8, 0.9], [0.6, 0.7]],
                           [[2.0, 2.0], [1.8, 1.6], [1.5, 1.7], [3.0, 4.0]]), plan)
    # 8 ratios, trim 2 per end: mean of 0.6, 0.7, 0.7, 0.8 = 0.7; speed-ups: 1.7, 1.8, 2, 2
    assert good["ratio"]["iqm"] == pytest.approx(0.7)
    assert good["speed_up"]["iqm"] == pytest.approx(1.875)
    assert (good["tasks"], good["runs"], good["won"]) == (4, 2, 4)
    assert good["ratio"]["ci_low"] <= 0.7 <= good["ratio"]["ci_high"] < 1
    assert good["verdict"].startswith("3 of 3 goals met")
    bad = aggregate(_rows([[0.5], [3.0], [math.nan]], [[2.0], [0.5], [math.nan]]), plan)
    assert bad["left_out"] == ["t2"] and bad["worst_task"] == "t1" and bad["tasks"] == 2
    assert "no task worse than 2x (worst: t1 3x): NOT met" in bad["verdict"]
    assert bad["verdict"].startswith("0 of 3 goals met")
