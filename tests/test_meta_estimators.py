"""The population estimators (pes, es, full_es) estimate what they claim.

On small quadratics with ``learnable_momentum`` (two meta-parameters, smooth in both) the exact
gradient of the whole episode's meta-loss comes from autograd through the full trajectory,
second-order terms included (an ES estimator sees every order). Over many antithetic pairs:

* PES's estimates summed over an episode's truncations match it (cosine similarity above 0.99,
  magnitude within 10%: the standard error at 4,000 pairs is a few percent), also when the
  episode ends mid-truncation;
* truncated ES and TBPTT, summed the same way, do not (short-horizon bias: each credits a
  truncation's weights with that truncation's losses only);
* full-horizon ES matches it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2l.estimators import choose_estimator, estimator_classes
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.objectives import build_objective
from l2l.registry import build_optimizer
from l2l.tasks import build_task
from l2l.truncated_step import TruncatedStep
from l2l.unroll_lengths import LengthSchedule

ROOT = Path(__file__).resolve().parents[1]
PAIRS = 2000
DIM = 4


def _optimizer(name: str = "learnable_momentum", **kwargs):
    opt = build_optimizer(name, **kwargs).double()
    with torch.no_grad():  # away from the untrained point, so that no gradient is special
        for i, p in enumerate(opt.parameters()):
            p.add_(0.1 * (i + 1))
    return opt


def _task():
    return build_task("quadratic", dim=DIM)


def _exact_gradient(opt, instances, steps: int) -> torch.Tensor:
    """d (mean over instances of sum_t f(theta_t), t = 1..steps) / d weights, flat."""
    params = instances.init_params.clone().requires_grad_(True)
    state = opt.init(params)
    _, grads = instances.loss_and_grad(params, 0, create_graph=True)
    total = 0.0
    for t in range(steps):
        update, state = opt.update(grads, state, params)
        params = params + update
        loss, grads = instances.loss_and_grad(params, t + 1, create_graph=True)
        total = total + loss.mean()
    weights = list(opt.parameters())
    return torch.cat([g.flatten() for g in torch.autograd.grad(total, weights)])


def _estimator(name: str, opt, sigma: float = 1e-3):
    cls = estimator_classes()[name]
    return cls(opt.update, build_objective("sum"), optimizer=opt, sigma=sigma, seed=3)


def _population(opt, length: int, pairs: int = PAIRS, offsets: bool = False) -> TruncatedStep:
    return TruncatedStep(_task(), opt, build_objective("sum"), pairs=pairs,
                         lengths=LengthSchedule("constant", length), seed=5,
                         random_offsets=offsets, dtype=torch.float64)


def _summed_estimate(name: str, opt, population, truncations: int, steps: int) -> torch.Tensor:
    """The sum of ``truncations`` estimates at fixed weights, flat."""
    estimator = _estimator(name, opt)
    for _ in range(truncations):
        estimator.estimate_population(population, steps)
    total = torch.cat([p.grad.flatten() for p in opt.parameters()])
    opt.zero_grad(set_to_none=True)
    return total


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_pes_matches_the_whole_horizon_gradient_and_truncated_es_does_not():
    opt = _optimizer()
    exact = _exact_gradient(opt, _task().sample(PAIRS, 5, "train", dtype=torch.float64), 16)
    pes = _summed_estimate("pes", opt, _population(opt, 16), 4, 4)
    es = _summed_estimate("es", opt, _population(opt, 16), 4, 4)
    assert _cosine(pes, exact) > 0.99
    assert torch.linalg.norm(pes - exact) < 0.1 * torch.linalg.norm(exact)
    assert torch.linalg.norm(es - exact) > 0.3 * torch.linalg.norm(exact)


def test_truncated_backprop_is_biased_even_with_second_order_terms():
    """TBPTT (autograd, second order, so exact within each truncation) summed over the same four
    truncations misses the whole-horizon gradient: the truncations cut its flow."""
    from l2l.estimators.base import Unroll

    opt = _optimizer()
    instances = _task().sample(200, 5, "train", dtype=torch.float64)
    exact = _exact_gradient(opt, instances, 16)
    est = estimator_classes()["autograd"](opt.update, build_objective("sum"), second_order=True)
    params = instances.init_params
    initial, grads = instances.loss_and_grad(params, 0)
    state = opt.init(params)
    for start in range(0, 16, 4):
        out = est.estimate(Unroll(instances, params, grads, state, start, 4, initial, 16))
        params, grads, state = out.params, out.grads, out.state
    tbptt = torch.cat([p.grad.flatten() for p in opt.parameters()])
    assert torch.linalg.norm(tbptt - exact) > 0.3 * torch.linalg.norm(exact)


def test_pes_handles_an_episode_that_ends_mid_truncation():
    """Episodes of 10 steps cut into truncations of 4: the third truncation holds the old
    episode's last 2 steps and the next episode's first 2. Three PES estimates sum to the
    gradient of the first episode's 10 steps plus that of the next episodes' first 2 steps (on
    the next instances)."""
    opt, task = _optimizer(), _task()
    first = _exact_gradient(opt, task.sample(PAIRS, 5, "train", dtype=torch.float64), 10)
    second = _exact_gradient(opt, task.sample(PAIRS, 5, "train", offset=PAIRS,
                                              dtype=torch.float64), 2)
    population = _population(opt, 10)
    pes = _summed_estimate("pes", opt, population, 3, 4)
    exact = first + second
    assert _cosine(pes, exact) > 0.99
    assert torch.linalg.norm(pes - exact) < 0.1 * torch.linalg.norm(exact)
    assert population.episode.eq(1).all() and population.step.eq(2).all()


def test_full_horizon_es_matches_the_whole_horizon_gradient():
    opt = _optimizer()
    exact = _exact_gradient(opt, _task().sample(PAIRS, 5, "train", offset=PAIRS,
                                                dtype=torch.float64), 16)
    # full_es restarts every pair first: its episode is each pair's second (instances H..2H-1)
    full = _summed_estimate("full_es", opt, _population(opt, 16), 1, 4)
    assert _cosine(full, exact) > 0.99
    assert torch.linalg.norm(full - exact) < 0.1 * torch.linalg.norm(exact)


def _twins(population: TruncatedStep) -> torch.Tensor:
    theta = population.weights.vector()
    return theta.expand(population.particles, -1).clone()


@pytest.mark.parametrize("task_name", ["quadratic", "mnist_logreg"])
def test_antithetic_twins_see_the_same_problem_and_data(task_name, request):
    if task_name != "quadratic":
        request.getfixturevalue("mnist_dir")
    task = build_task(task_name)
    opt = build_optimizer("learnable_adam")
    population = TruncatedStep(task, opt, build_objective("sum"), pairs=3,
                               lengths=LengthSchedule("constant", 6), seed=1)
    for _ in range(3):  # through resets: the pairs' new instances are shared too
        out = population.unroll(_twins(population), 4)
        assert torch.equal(out.before[:3], out.before[3:]) and torch.equal(out.after[:3],
                                                                             out.after[3:])
        assert torch.equal(population.params[:3], population.params[3:])
    assert len(set(out.before[:3].tolist())) == 3  # the pairs train different problems


def test_pairs_start_at_random_offsets_not_in_lockstep():
    population = _population(_optimizer(), 20, pairs=16, offsets=True)
    assert len(set(population.step.tolist())) > 4
    first_reset = torch.full((16,), -1)
    for truncation in range(5):
        out = population.unroll(_twins(population), 4)
        first_reset[(first_reset < 0) & out.reset[:16]] = truncation
    assert (first_reset >= 0).all() and len(set(first_reset.tolist())) > 2


@pytest.mark.parametrize("name", ["learnable_adam", "learnable_momentum",
                                  "learnable_momentum-poly", "lstm", "lstm0", "lstm-rows"])
def test_batched_particles_equal_one_by_one(name, monkeypatch):
    """``lstm-rows``: the LSTM's per-row frozen path for large optimizees; ``-poly``: a
    polynomial lr schedule over a horizon the unrolls run past."""
    if name == "lstm-rows":
        monkeypatch.setattr("l2l.learned.core.PER_ROW_FROZEN", 1)
    opt = (_optimizer("lstm", num_layers=0) if name == "lstm0"
           else _optimizer("learnable_momentum", schedule_degree=2, schedule_horizon=5)
           if name.endswith("-poly") else _optimizer(name.split("-")[0]))
    assert opt.particle_axis()
    eps = 0.05 * torch.randn(3, sum(p.numel() for p in opt.parameters()),
                             generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = []
    for batched in (True, False):
        monkeypatch.setattr(type(opt), "particle_axis", lambda self, b=batched: b)
        population = _population(opt, 6, pairs=3, offsets=True)
        weights = torch.cat([population.weights.vector() + eps, population.weights.vector() - eps])
        outs.append([population.unroll(weights, 4) for _ in range(2)])
    for a, b in zip(*outs):
        torch.testing.assert_close(a.before, b.before, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.after, b.after, rtol=1e-12, atol=0)


def test_which_optimizers_batch_their_particles():
    assert not build_optimizer("learnable_adam", schedule_steps=5).particle_axis()
    assert build_optimizer("lstm").particle_axis()
    assert not build_optimizer("rnnprop").particle_axis()


def _pes_config(**overrides) -> MetaConfig:
    base = dict(iterations=8, horizon=12, unroll=4, meta_lr=0.01, val_every=4, val_instances=4,
                checkpoint_every=1, estimator="pes", particles=4, lengths="log_uniform",
                min_length=5, max_length=12)
    return MetaConfig(**{**base, **overrides})


@pytest.mark.parametrize("estimator", ["pes", "full_es"])
def test_a_killed_population_run_resumes_bit_for_bit(tmp_path, estimator):
    task = build_task("quadratic")
    config = _pes_config(estimator=estimator)
    straight = MetaTrainer(build_optimizer("learnable_momentum"), task, config,
                           run_dir=tmp_path / "a")
    straight.train()
    first = MetaTrainer(build_optimizer("learnable_momentum"), task, config,
                        run_dir=tmp_path / "b")
    first.train(stop_after=3)
    resumed = MetaTrainer(build_optimizer("learnable_momentum"), task, config,
                          run_dir=tmp_path / "b")
    assert resumed.iteration == 3
    resumed.train()
    for (k, a), b in zip(straight.optimizer.state_dict().items(),
                         resumed.optimizer.state_dict().values()):
        assert torch.equal(a, b), k
    assert straight.history == resumed.history
    assert torch.equal(straight.population.params, resumed.population.params)
    if estimator == "pes":
        assert torch.equal(straight.estimator.accumulator, resumed.estimator.accumulator)
        assert straight.population.episode.sum() > 0  # resets happened along the way


def test_pes_meta_training_improves_the_meta_loss():
    config = _pes_config(iterations=30, val_every=30, lengths="constant", meta_lr=0.05,
                         particles=8)
    trainer = MetaTrainer(build_optimizer("learnable_momentum"), build_task("quadratic"), config)
    result = trainer.train()
    assert result["best_val_loss"] < result["untrained_val_loss"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"sigma": 0.0}, "meta.sigma"),
    ({"sigma": -1.0}, "meta.sigma"),
    ({"particles": 3}, "meta.particles=3 must be an even integer >= 2"),
    ({"particles": 0}, "meta.particles=0 must be an even integer >= 2"),
    ({"lengths": "log_uniform", "min_length": 10, "max_length": 100, "unroll": 20},
     "meta.unroll=20 is longer than the shortest unroll length meta.min_length=10"),
    ({"lengths": "log_uniform", "min_length": 50, "max_length": 20},
     "meta.min_length=50 exceeds meta.max_length=20"),
    ({"lengths": "geometric"}, "unknown meta.lengths 'geometric'"),
    ({"min_length": 0}, "meta.min_length must be a positive integer"),
])
def test_bad_population_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message):
        MetaConfig(**{"unroll": 10, "horizon": 100, **settings})


def test_population_estimators_refuse_second_order_and_tbptt_is_the_default():
    opt = build_optimizer("learnable_adam")
    for name in ("pes", "es", "full_es"):
        with pytest.raises(ValueError, match=f"meta.estimator={name} cannot be used here: it is "
                                             "forward-only"):
            choose_estimator(name, opt, second_order=True)
        assert choose_estimator(name, opt, second_order=False).name == name
    assert choose_estimator("tbptt", opt, second_order=False) is choose_estimator(
        "auto", opt, second_order=False)
    population = _population(_optimizer(), 6, pairs=1)
    with pytest.raises(ValueError, match="longer than the shortest unroll length 6"):
        population.unroll(_twins(population), 7)


README_COMMAND = ["mode=meta_train", "optimizer=learnable_adam", "task=quadratic",
                  "meta.estimator=pes", "meta.particles=8", "meta.unroll=10",
                  "meta.lengths=log_uniform", "meta.min_length=20", "meta.max_length=200",
                  "meta.iterations=20", "meta.val_every=10", "threads=1", "logger=none",
                  "progress=false"]


def _train(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_the_readme_pes_command_meta_trains_and_bad_settings_fail_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train([*README_COMMAND, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "with the pes estimator" in proc.stderr
    saved = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert saved["iteration"] == 20 and saved["estimator"]["accumulator"].shape == (4, 4)
    assert saved["population"]["params"].shape == (8, 10)
    bad = _train([*README_COMMAND, "meta.particles=3", f"hydra.run.dir={tmp_path / 'bad'}"],
                 tmp_path)
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "meta.particles=3 must be an even integer" in errors[0]
    assert "Traceback" not in bad.stderr


def test_instances_concatenate_into_one_batch_or_stack_part_by_part(request):
    from l2l.tasks.scaled import random_scale
    from l2l.truncated_step import _PartsInstances, concat_instances

    quad = build_task("quadratic", dim=3)
    parts = [quad.sample(1, 0, "train", offset=i) for i in range(3)]
    whole = quad.sample(3, 0, "train")
    merged = concat_instances(parts)
    params = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(merged.loss(params, 0), whole.loss(params, 0))
    mixed = [parts[0], random_scale(parts[1], 0.5, 0, "train", 1), parts[2]]
    stacked = concat_instances(mixed)
    assert isinstance(stacked, _PartsInstances)
    expected = torch.cat([p.loss(params[i:i + 1], 0) for i, p in enumerate(mixed)])
    assert torch.equal(stacked.loss(params, 0), expected)
    scaled = concat_instances([random_scale(p, 0.5, 0, "train", i) for i, p in enumerate(parts)])
    assert torch.equal(scaled.loss(params, 0), random_scale(whole, 0.5, 0, "train", 0).loss(
        params, 0))
    request.getfixturevalue("mnist_dir")
    mnist = build_task("mnist_logreg")
    rows = concat_instances([mnist.sample(1, 0, "train", offset=i) for i in range(3)])
    together = mnist.sample(3, 0, "train")
    assert torch.equal(rows.ids, together.ids) and torch.equal(rows.init_params,
                                                                together.init_params)


def test_population_estimators_take_the_other_meta_options():
    """log_relative (per-particle horizons), scale_range and clipping go through the population
    path; several processes own equal shares of the pairs."""
    from l2l.env.distributed import Synchronizer

    config = _pes_config(iterations=3, val_every=3, objective="log_relative", scale_range=0.5,
                         clip_grad_norm=0.1)
    trainer = MetaTrainer(build_optimizer("learnable_adam"), build_task("quadratic"), config)
    result = trainer.train()
    assert result["skipped"] == 0 and all(map(torch.isfinite, map(torch.tensor,
                                                                  result["history"]["meta_loss"])))

    with pytest.raises(ValueError, match=r"meta.particles=6 \(3 antithetic pairs\) cannot be "
                                         "split over 2 processes: choose a multiple of 4"):
        MetaTrainer(build_optimizer("learnable_adam"), build_task("quadratic"),
                    _pes_config(particles=6), sync=Synchronizer(rank=1, world_size=2))
    second_of_two = Synchronizer(rank=1, world_size=2)
    share = MetaTrainer(build_optimizer("learnable_adam"), build_task("quadratic"),
                        _pes_config(particles=8), sync=second_of_two).population
    assert (share.pairs, share.first_pair, share.total_pairs) == (2, 2, 4)


@pytest.mark.parametrize("name", ["pes", "es", "full_es"])
def test_two_shares_of_a_population_estimate_what_the_whole_does(name):
    """A population split over two processes (pairs 0-1 and 2-3 of 4): the same particles, and
    the mean of the two shares' estimates (what the processes' all-reduce takes) is the whole
    population's estimate."""
    opt = _optimizer()
    whole_running: list[bool] = []  # full_es: whether the whole population ran on, per truncation

    def estimate(pairs: int, first: int):
        population = TruncatedStep(_task(), opt, build_objective("sum"), pairs=pairs,
                                   lengths=LengthSchedule("log_uniform", 4, 9), seed=5,
                                   first_pair=first, total_pairs=4, dtype=torch.float64)
        gradients, estimator = [], _estimator(name, opt, sigma=0.01)
        agreed = iter(list(whole_running))
        if pairs == 4:  # record the whole population's answers
            estimator.any = lambda flag: whole_running.append(flag) or flag
        else:  # what Synchronizer.any answers: true if any share (the whole) still runs
            estimator.any = lambda flag: next(agreed)
        for _ in range(3):
            estimator.estimate_population(population, 4)
            gradients.append(torch.cat([p.grad.flatten() for p in opt.parameters()]))
            opt.zero_grad(set_to_none=True)
        return population, torch.stack(gradients)

    whole, expected = estimate(4, 0)
    first, a = estimate(2, 0)
    second, b = estimate(2, 2)
    torch.testing.assert_close((a + b) / 2, expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(torch.cat([first.params[:2], second.params[:2]]),
                               whole.params[:4], rtol=0, atol=0)
    assert torch.equal(torch.cat([first.length, second.length]), whole.length)


def test_log_uniform_lengths_are_deterministic_in_range_and_spread_over_decades():
    schedule = LengthSchedule("log_uniform", 10, 1000)
    draws = [schedule.draw(0, i) for i in range(2000)]
    assert draws == [schedule.draw(0, i) for i in range(2000)]
    assert min(draws) >= 10 and max(draws) <= 1000 and schedule.shortest == 10
    per_decade = [sum(lo <= d < 10 * lo for d in draws) for lo in (10, 100)]
    assert all(800 < n < 1200 for n in per_decade)  # about half of the draws per decade
    assert LengthSchedule("constant", 50).draw(0, 7) == 50
    with pytest.raises(ValueError, match="unknown meta.lengths"):
        LengthSchedule("linear", 5)


def test_a_mixture_of_differently_sized_tasks_is_refused_by_one_batch_in_one_line():
    """One ``TruncatedStep`` steps its particles in one batch; a mixture of a 3- and a
    5-dimensional quadratic has no one layout, and the error names the population that takes it
    (``build_population``: tests/test_mixture_population.py)."""
    mixed = build_task("mixture", components=[{"family": "quadratic", "kwargs": {"dim": 3}},
                                              {"family": "quadratic", "kwargs": {"dim": 5}}])
    same = build_task("mixture", components=[{"family": "quadratic", "kwargs": {"dim": 3}},
                                             {"family": "quadratic", "kwargs": {"dim": 3}}])
    opt = _optimizer()
    with pytest.raises(ValueError, match="one parameter layout.*build_population"):
        TruncatedStep(mixed, opt, build_objective("sum"), pairs=2,
                      lengths=LengthSchedule("constant", 4), dtype=torch.float64)
    population = TruncatedStep(same, opt, build_objective("sum"), pairs=2,
                               lengths=LengthSchedule("constant", 4), dtype=torch.float64)
    assert population.params.shape == (4, 3)
