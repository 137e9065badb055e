"""A population over a mixture of differently sized tasks (``l2l/mixture_population.py``).

The pairs are stratified over the mixture's layouts; each group is an ordinary
``TruncatedStep``. What must hold: the allotment follows the weights; every row of the mixed
population is exactly what its group's population alone gives (so the estimators' row
convention, twins at ``k`` and ``k + H``, carries over); a process's share equals its rows of
the whole; and PES meta-trains on such a mixture and resumes bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from l2l.estimators.pes import PESEstimator
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.mixture_population import MixturePopulation, allot_pairs, build_population, layout_groups
from l2l.objectives import build_objective
from l2l.registry import build_optimizer
from l2l.tasks import build_task
from l2l.truncated_step import TruncatedStep
from l2l.unroll_lengths import LengthSchedule


def _mixed(weights=(1.0, 1.0, 2.0)):
    return build_task("mixture", components=[
        {"family": "quadratic", "kwargs": {"dim": 3}},
        {"family": "quadratic", "kwargs": {"dim": 5}},
        {"family": "quadratic", "kwargs": {"dim": 3}}], weights=list(weights))


def _optimizer():
    opt = build_optimizer("learnable_momentum").double()
    with torch.no_grad():
        for i, p in enumerate(opt.parameters()):
            p.add_(0.1 * (i + 1))
    return opt


def _lengths():
    return LengthSchedule("log_uniform", 3, 9)


def test_the_pairs_follow_the_mixture_weights_with_one_pair_per_group_at_least():
    assert allot_pairs([0.5, 0.5], 4) == [2, 2]
    assert allot_pairs([0.75, 0.25], 4) == [3, 1]
    assert allot_pairs([0.2] * 5, 10) == [2] * 5
    assert allot_pairs([0.98, 0.01, 0.01], 4) == [2, 1, 1]  # the floor of one each
    assert sum(allot_pairs([0.3, 0.3, 0.4], 7)) == 7
    with pytest.raises(ValueError, match=r"4 antithetic pairs cannot cover.*meta.particles >= 10"):
        allot_pairs([0.2] * 5, 4)


def test_components_of_one_layout_form_one_group_with_their_summed_weight():
    groups = layout_groups(_mixed())
    assert groups == [([0, 2], 0.75), ([1], 0.25)]


def test_every_row_is_what_its_group_alone_gives():
    task, opt, objective = _mixed(), _optimizer(), build_objective("sum")
    mixed = build_population(task, opt, objective, pairs=4, lengths=_lengths(), seed=3,
                             dtype=torch.float64)
    assert isinstance(mixed, MixturePopulation) and mixed.effective_weights == [0.75, 0.25]
    # the 3-dimensional group holds pairs 0-2 of the population, the 5-dimensional pair 3
    three = TruncatedStep(build_task("mixture", components=[
        {"family": "quadratic", "kwargs": {"dim": 3}},
        {"family": "quadratic", "kwargs": {"dim": 3}}], weights=[1.0, 2.0]), opt, objective,
        pairs=3, first_pair=0, total_pairs=4, lengths=_lengths(), seed=3, dtype=torch.float64)
    five = TruncatedStep(build_task("quadratic", dim=5), opt, objective, pairs=1, first_pair=3,
                         total_pairs=4, lengths=_lengths(), seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    theta = mixed.groups[0][1].weights.vector()
    for _ in range(4):  # several truncations: resets happen (lengths 3..9, truncations of 3)
        eps = 0.05 * torch.randn(4, theta.numel(), generator=g, dtype=torch.float64)
        weights = torch.cat([theta + eps, theta - eps])
        out = mixed.unroll(weights, 3)
        a = three.unroll(torch.cat([weights[0:3], weights[4:7]]), 3)
        b = five.unroll(torch.cat([weights[3:4], weights[7:8]]), 3)
        for field in ("before", "after", "reset"):
            want = torch.cat([getattr(a, field)[:3], getattr(b, field)[:1],
                              getattr(a, field)[3:], getattr(b, field)[1:]])
            assert torch.equal(getattr(out, field), want), field
    assert int(three.episode.sum() + five.episode.sum()) > 0  # resets were exercised


def test_a_processes_share_is_its_rows_of_the_whole_population():
    task, opt, objective = _mixed(), _optimizer(), build_objective("sum")
    whole = build_population(task, opt, objective, pairs=4, lengths=_lengths(), seed=1,
                             dtype=torch.float64)
    shares = [build_population(task, opt, objective, pairs=2, first_pair=r * 2, total_pairs=4,
                               lengths=_lengths(), seed=1, dtype=torch.float64) for r in (0, 1)]
    theta = whole.groups[0][1].weights.vector()
    eps = 0.05 * torch.randn(4, theta.numel(), generator=torch.Generator().manual_seed(2),
                             dtype=torch.float64)
    for _ in range(3):
        out = whole.unroll(torch.cat([theta + eps, theta - eps]), 3)
        parts = [s.unroll(torch.cat([theta + eps[2 * r:2 * r + 2], theta - eps[2 * r:2 * r + 2]]),
                          3) for r, s in enumerate(shares)]
        plus = torch.cat([p.before[:2] for p in parts])
        minus = torch.cat([p.before[2:] for p in parts])
        assert torch.equal(out.before, torch.cat([plus, minus]))


def test_a_population_smaller_than_the_mixtures_layouts_is_refused_in_one_line():
    with pytest.raises(ValueError, match="1 antithetic pairs cannot cover.*meta.particles >= 4"):
        build_population(_mixed(), _optimizer(), build_objective("sum"), pairs=1,
                         lengths=_lengths())


def _config(**overrides) -> MetaConfig:
    base = dict(iterations=6, horizon=9, unroll=3, meta_lr=0.01, val_every=3, val_instances=2,
                checkpoint_every=1, estimator="pes", particles=8, lengths="log_uniform",
                min_length=3, max_length=9)
    return MetaConfig(**{**base, **overrides})


def test_pes_meta_trains_on_a_mixed_mixture_and_resumes_bit_for_bit(tmp_path):
    task = _mixed()
    straight = MetaTrainer(build_optimizer("learnable_momentum"), task, _config(),
                           run_dir=tmp_path / "a")
    assert isinstance(straight.population, MixturePopulation)
    assert isinstance(straight.estimator, PESEstimator)
    straight.train()
    first = MetaTrainer(build_optimizer("learnable_momentum"), task, _config(),
                        run_dir=tmp_path / "b")
    first.train(stop_after=2)
    resumed = MetaTrainer(build_optimizer("learnable_momentum"), task, _config(),
                          run_dir=tmp_path / "b")
    assert resumed.iteration == 2
    resumed.train()
    for (k, a), b in zip(straight.optimizer.state_dict().items(),
                         resumed.optimizer.state_dict().values()):
        assert torch.equal(a, b), k
    assert straight.history == resumed.history
    assert len(straight.history["meta_loss"]) == 6
    assert all(torch.isfinite(torch.tensor(straight.history["meta_loss"])))
    start = build_optimizer("learnable_momentum").state_dict()
    assert any(not torch.equal(a, start[k]) for k, a in straight.optimizer.state_dict().items())

