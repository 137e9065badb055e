"""The final-loss meta-objective (``meta.objective=final``) for every estimator.

* the existing objectives give bit-identical numbers whether or not the step is passed;
* under TBPTT over a horizon of several unrolls (surrogate, autograd, sequence), the meta-loss is
  the loss at the horizon's last step, computed directly, and only the unroll holding that step
  has a nonzero meta-gradient (the three estimators agree on it);
* in a population whose episodes end mid-truncation, each truncation's meta-loss of a particle is
  the loss where its episode ended (a direct re-run of each episode), 0 if none ended in it;
* a learnable optimizer meta-trains with it under TBPTT and the population estimators: finite,
  and a nonzero meta-gradient exactly from the truncations that hold an episode's last step.
"""

from __future__ import annotations

import pytest
import torch

from l2l.estimators import estimator_classes
from l2l.estimators.base import Unroll
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.objectives import OBJECTIVES, build_objective
from l2l.registry import build_optimizer
from l2l.tasks import build_task
from l2l.truncated_step import TruncatedStep
from l2l.unroll_lengths import LengthSchedule


def _perturbed(name: str, **kwargs):
    torch.manual_seed(0)
    opt = build_optimizer(name, **kwargs).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the untrained point, so that every weight matters
        for p in opt.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return opt


def _grad(opt) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in opt.parameters()])


@pytest.mark.parametrize("name", ["sum", "mean", "log_relative"])
def test_the_other_objectives_ignore_the_step_bit_for_bit(name):
    objective = build_objective(name)
    losses = torch.tensor([[0.5, 2.0], [0.25, 3.0]], dtype=torch.float64)
    initial = torch.tensor([1.0, 4.0], dtype=torch.float64)
    step = torch.tensor([[3], [4]])
    assert torch.equal(objective(losses, initial, 4), objective(losses, initial, 4, step=step))
    assert torch.equal(objective.derivative(losses, initial, 4),
                       objective.derivative(losses, initial, 4, step=step))


def test_final_reads_the_last_step_only_and_needs_the_step():
    objective = build_objective("final")
    assert "final" in OBJECTIVES
    losses = torch.tensor([[0.5, 2.0], [0.25, float("inf")]])
    value = objective(losses[:1], torch.ones(2), 4, step=torch.tensor([[4]]))
    assert torch.equal(value, losses[:1])
    assert torch.equal(objective(losses[:1], torch.ones(2), 4, step=3), torch.zeros(1, 2))
    assert torch.equal(objective.derivative(losses[:1], torch.ones(2), torch.tensor([4.0, 5.0]),
                                            step=torch.tensor([4.0, 4.0])),
                       torch.tensor([[1.0, 0.0]]))
    # a diverged step before the end still makes the meta-loss non-finite (the step is skipped)
    assert not objective(losses, torch.ones(2), 4, step=torch.tensor([[2], [3]])).isfinite().all()
    with pytest.raises(ValueError, match="meta.objective=final needs the step of the episode"):
        objective(losses, torch.ones(2), 4)


def _direct_final_loss(opt, problems, horizon: int) -> float:
    """The mean loss after ``horizon`` steps of the frozen optimizer."""
    with torch.no_grad():
        params = problems.init_params
        _, grads = problems.loss_and_grad(params, 0)
        state = opt.init(params)
        for t in range(horizon):
            update, state = opt.update(grads, state, params)
            params = params + update
            _, grads = problems.loss_and_grad(params, t + 1)
        return float(problems.loss(params, horizon).mean())


def _tbptt(estimator: str, opt, problems, horizon: int, unroll: int):
    """Meta-losses and meta-gradients of the unrolls of one horizon (weights fixed)."""
    est = estimator_classes()[estimator](opt.update, build_objective("final"), optimizer=opt)
    params = problems.init_params
    initial, grads = problems.loss_and_grad(params, 0)
    state = opt.init(params)
    losses, gradients = [], []
    for start in range(0, horizon, unroll):
        opt.zero_grad(set_to_none=True)
        out = est.estimate(Unroll(problems, params, grads, state, start,
                                  min(unroll, horizon - start), initial, horizon))
        assert out.finite
        losses.append(out.meta_loss)
        gradients.append(_grad(opt))
        params, grads, state = out.params, out.grads, out.state
    return losses, gradients


def test_final_under_tbptt_is_the_loss_at_the_horizon_for_every_estimator():
    """A horizon of 10 in unrolls of 4, 4 and 2: the first two see no last step."""
    problems = build_task("quadratic").sample(3, 0, "train", dtype=torch.float64)
    opt = _perturbed("lstm", hidden_size=4, num_layers=1)
    direct = _direct_final_loss(opt, problems, 10)
    reference = None
    for estimator in ("autograd", "surrogate", "sequence"):
        losses, gradients = _tbptt(estimator, opt, problems, 10, 4)
        assert losses[:2] == [0.0, 0.0]
        assert losses[2] == pytest.approx(direct, rel=1e-10)
        assert [bool(g.abs().sum() > 0) for g in gradients] == [False, False, True]
        if reference is None:
            reference = gradients[2]
        torch.testing.assert_close(gradients[2], reference, rtol=1e-8, atol=1e-14)


def test_final_in_a_population_is_the_loss_where_each_episode_ends():
    """Episodes of 6 steps from random offsets, truncations of 4: most episodes end
    mid-truncation. Each pair's episodes are re-run directly from their instances."""
    length, steps, truncations, pairs = 6, 4, 5, 3
    task = build_task("quadratic", dim=4)
    opt = _perturbed("learnable_adam")
    population = TruncatedStep(task, opt, build_objective("final"), pairs=pairs,
                               lengths=LengthSchedule("constant", length), seed=5,
                               dtype=torch.float64)
    offsets = population.step.clone()
    weights = population.weights.vector().expand(2 * pairs, -1).clone()
    got = [population.unroll(weights, steps) for _ in range(truncations)]
    expected = torch.zeros(truncations, pairs, dtype=torch.float64)
    ends = []
    for j in range(pairs):
        clock, episode = 0, 0
        while True:
            todo = length - int(offsets[j]) if episode == 0 else length
            if clock + todo > steps * truncations:
                break
            inst = task.sample(1, 5, "train", offset=episode * pairs + j, dtype=torch.float64)
            with torch.no_grad():
                params = inst.init_params
                _, grads = inst.loss_and_grad(params, clock)
                state = opt.init(params)
                for _ in range(todo):
                    update, state = opt.update(grads, state, params)
                    params = params + update
                    clock += 1
                    loss, grads = inst.loss_and_grad(params, clock)
            expected[(clock - 1) // steps, j] = loss[0]
            ends.append(clock)
            episode += 1
    assert any(end % steps for end in ends)  # resets mid-truncation happened
    for t, truncation in enumerate(got):
        torch.testing.assert_close(truncation.before, torch.cat([expected[t], expected[t]]),
                                   rtol=1e-10, atol=0.0)
        assert torch.equal(truncation.after, torch.zeros(2 * pairs, dtype=torch.float64))
        assert torch.equal(truncation.reset[:pairs], expected[t] != 0)


def _record(trainer: MetaTrainer, method: str, log: list) -> None:
    """After every call of the estimator's ``method``: (|meta-gradient| > 0, an episode ended)."""
    inner = getattr(trainer.estimator, method)

    def call(*args, **kwargs):
        before = None if trainer.population is None else trainer.population.episode.clone()
        out = inner(*args, **kwargs)
        ended = (args[0].start + args[0].steps == args[0].horizon if before is None
                 else bool((trainer.population.episode != before).any()))
        log.append((bool(_grad(trainer.optimizer).abs().sum() > 0), ended))
        return out

    setattr(trainer.estimator, method, call)


@pytest.mark.parametrize("estimator", ["auto", "pes", "es", "full_es"])
def test_a_learnable_optimizer_meta_trains_with_the_final_objective(estimator):
    """TBPTT: horizon 8 in unrolls of 4; the population: one pair, episodes of 8 from a random
    offset, truncations of 4, so every other truncation holds an episode's end."""
    config = MetaConfig(iterations=6, horizon=8, unroll=4, batch_size=2, meta_lr=0.01,
                        val_every=6, val_instances=4, objective="final", estimator=estimator,
                        particles=2, sigma=0.01)
    trainer = MetaTrainer(build_optimizer("learnable_adam"), build_task("quadratic", dim=4),
                          config)
    start = [p.detach().clone() for p in trainer.optimizer.parameters()]
    log: list[tuple[bool, bool]] = []
    population = trainer.population is not None
    _record(trainer, "estimate_population" if population else "estimate", log)
    result = trainer.train()
    assert result["skipped"] == 0
    assert all(torch.isfinite(torch.tensor(result["history"]["meta_loss"])))
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.optimizer.parameters()))
    if estimator == "full_es":  # every estimate runs whole episodes to their ends
        assert all(nonzero for nonzero, _ in log)
        return
    assert all(nonzero == ended for nonzero, ended in log), log
    assert {ended for _, ended in log} == {True, False}
