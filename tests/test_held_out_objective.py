"""The meta-objective on held-out data (``meta.objective_split=valid``) and the population
estimators' shaped differences (``meta.es_difference``).

* every estimator computes the held-out meta-gradient exactly (surrogate and sequence equal
  autograd through the unroll, which reads the held-out losses directly), and it differs from the
  training-loss one;
* the population's meta-losses are the held-out losses along the trajectory its training
  minibatches drive;
* a held-out PES run resumes bit for bit;
* sign-ES points along the whole-horizon gradient, normalised ES is plain ES over the RMS of the
  differences;
* a task without a data split, and unknown settings, are refused in one line.
"""

from __future__ import annotations

import pytest
import torch

from l2l.estimators import estimator_classes
from l2l.estimators.base import Unroll
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.objectives import build_objective
from l2l.registry import build_optimizer
from l2l.tasks import build_task
from l2l.truncated_step import TruncatedStep
from l2l.unroll_lengths import LengthSchedule


def _meta_gradient(estimator: str, problems, held_out, objective: str = "log_relative"):
    torch.manual_seed(0)
    opt = build_optimizer("lstm", hidden_size=4, num_layers=1).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    est = estimator_classes()[estimator](opt.update, build_objective(objective), optimizer=opt)
    params = problems.init_params
    _, grads = problems.loss_and_grad(params, 0)
    initial = (held_out or problems).loss(params, 0)
    state = opt.init(params)
    out = est.estimate(Unroll(problems, params, grads, state, 0, 3, initial, 6, held_out))
    out = est.estimate(Unroll(problems, out.params, out.grads, out.state, 3, 3, initial, 6,
                              held_out))
    return torch.cat([p.grad.flatten() for p in opt.parameters()]), out.meta_loss


def test_every_estimator_gives_the_exact_held_out_meta_gradient(mnist_dir):
    problems = build_task("mnist_mlp", hidden_sizes=(4,), resolution=4,
                          batch_size=16).sample(2, 0, "train", dtype=torch.float64)
    held = problems.held_out()
    assert held.images.shape[0] == 10_000 and held.key != problems.key
    exact, exact_loss = _meta_gradient("autograd", problems, held)
    for name in ("surrogate", "sequence"):
        grad, loss = _meta_gradient(name, problems, held)
        assert loss == pytest.approx(exact_loss, rel=1e-10)
        torch.testing.assert_close(grad, exact, rtol=1e-7, atol=1e-12)
    train, train_loss = _meta_gradient("surrogate", problems, None)
    assert train_loss != pytest.approx(exact_loss, rel=1e-3)
    assert torch.linalg.norm(train - exact) > 1e-3 * torch.linalg.norm(exact)


def test_the_population_meta_loss_is_the_held_out_loss_of_its_trajectory(mnist_dir):
    task, opt = build_task("mnist_logreg"), build_optimizer("learnable_adam").double()
    population = TruncatedStep(task, opt, build_objective("sum"), pairs=2,
                               lengths=LengthSchedule("constant", 10), seed=1,
                               random_offsets=False, held_out=True, dtype=torch.float64)
    instances, held = population.instances, population.instances.held_out()
    params, state = instances.init_params, opt.init(instances.init_params)
    theta = population.weights.vector().expand(4, -1).clone()
    out = population.unroll(theta, 4)
    expected = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        _, grads = instances.loss_and_grad(params, 0)
        for t in range(4):
            update, state = opt.update(grads, state, params)
            params = params + update
            expected += held.loss(params, t + 1)
            _, grads = instances.loss_and_grad(params, t + 1)
    torch.testing.assert_close(out.before, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(population.params, params, rtol=1e-12, atol=0)


def test_a_killed_held_out_pes_run_resumes_bit_for_bit(tmp_path, mnist_dir):
    config = MetaConfig(iterations=4, horizon=6, unroll=3, val_every=4, val_instances=2,
                        checkpoint_every=1, estimator="pes", particles=2, meta_lr=0.01,
                        objective_split="valid", objective="log_relative")
    task = build_task("mnist_logreg")
    straight = MetaTrainer(build_optimizer("learnable_adam"), task, config, run_dir=tmp_path / "a")
    straight.train()
    MetaTrainer(build_optimizer("learnable_adam"), task, config,
                run_dir=tmp_path / "b").train(stop_after=2)
    resumed = MetaTrainer(build_optimizer("learnable_adam"), task, config, run_dir=tmp_path / "b")
    assert resumed.iteration == 2
    resumed.train()
    for a, b in zip(straight.optimizer.parameters(), resumed.optimizer.parameters()):
        assert torch.equal(a, b)
    assert straight.history == resumed.history
    assert torch.equal(straight.estimator.accumulator, resumed.estimator.accumulator)


def _full_es(difference: str, pairs: int = 2000):
    opt = build_optimizer("learnable_momentum").double()
    with torch.no_grad():
        for i, p in enumerate(opt.parameters()):
            p.add_(0.1 * (i + 1))
    est = estimator_classes()["full_es"](opt.update, build_objective("sum"), optimizer=opt,
                                         sigma=1e-3, seed=3, difference=difference)
    population = TruncatedStep(build_task("quadratic", dim=4), opt, build_objective("sum"),
                               pairs=pairs, lengths=LengthSchedule("constant", 8), seed=5,
                               random_offsets=False, dtype=torch.float64)
    est.estimate_population(population, 4)
    return torch.cat([p.grad.flatten() for p in opt.parameters()])


def test_sign_and_normalized_differences_keep_the_direction():
    plain, sign, normalized = (_full_es(d) for d in ("plain", "sign", "normalized"))
    cosine = torch.nn.functional.cosine_similarity
    assert float(cosine(sign, plain, dim=0)) > 0.98  # E[eps sign(eps . g)] is along g
    assert not torch.allclose(sign, plain)
    assert float(cosine(normalized, plain, dim=0)) > 1 - 1e-12
    assert float(torch.linalg.norm(normalized) / torch.linalg.norm(plain)) != pytest.approx(1.0)


def test_a_task_without_a_data_split_is_refused_for_the_held_out_objective():
    for estimator in ("auto", "pes"):
        config = MetaConfig(iterations=1, horizon=4, unroll=2, objective_split="valid",
                            estimator=estimator, particles=2)
        with pytest.raises(ValueError, match="meta.objective_split=valid needs held-out data, "
                                             "and task quadratic has no data split"):
            MetaTrainer(build_optimizer("learnable_adam"), build_task("quadratic"), config)


@pytest.mark.parametrize(("settings", "message"), [
    ({"objective_split": "test"}, "unknown meta.objective_split 'test': choose train or valid"),
    ({"es_difference": "rank"}, "unknown meta.es_difference 'rank': choose one of plain, sign"),
    ({"objective": "last"}, "unknown meta.objective 'last': choose one of sum, mean, "
                            "log_relative, final"),
])
def test_bad_objective_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message):
        MetaConfig(**settings)
