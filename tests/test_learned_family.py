"""Every learned optimizer: differentiable from a fresh state, checkpointable, a drop-in, and
meta-trainable; the anchored and learnable-hyperparameter ones start as their classic rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import baselines
from l2l import checkpoint
from l2l.layout import ParamLayout
from l2l.learned import AdamAnchored, LearnableAdam, LearnableMomentum, RNNprop
from l2l.learned.base import LearnedOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.registry import build_optimizer, learned_names
from l2l.tasks import build_task
from l2l.torch_optimizer import TorchOptimizer

#: settings under which each learned optimizer suits the quadratic family (raw-gradient LSTM)
QUADRATIC = {"lstm": {"preprocessing": "none", "output_scale": 1.0},
             "adam_anchored": {"lr": 0.05}, "learnable_adam": {"lr": 0.01},
             "learnable_momentum": {"lr": 0.001}, "mlp_lopt": {"step_mult": 0.05}}


def _build(name: str, seed: int = 0, **overrides) -> LearnedOptimizer:
    torch.manual_seed(seed)
    return build_optimizer(name, **{**QUADRATIC.get(name, {}), **overrides})


def _perturb(opt: LearnedOptimizer, scale: float = 0.1, seed: int = 1) -> LearnedOptimizer:
    """Random non-zero weights everywhere (zero heads would hide most of the network)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return opt


@pytest.mark.parametrize("name", learned_names())
def test_meta_gradient_is_finite_from_a_fresh_state(name):
    opt = _perturb(_build(name))
    problems = build_task("quadratic").sample(4, 0, "train")
    params = problems.init_params.clone().requires_grad_(False)
    state = opt.init(params)
    total = 0.0
    for t in range(6):
        _, grads = problems.loss_and_grad(params.detach(), t)
        update, state = opt.update(grads, state, params)
        params = params + update
        total = total + problems.loss(params, t + 1).mean()
    total.backward()
    grads = [p.grad for p in opt.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert any(g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("name", learned_names())
def test_checkpoint_round_trip_rebuilds_the_same_optimizer(name, tmp_path):
    opt = _perturb(_build(name))
    path = tmp_path / "opt.pt"
    checkpoint.save_atomic({"optimizer": opt.payload()}, path)
    loaded = checkpoint.load_learned_optimizer(path)
    assert type(loaded) is type(opt) and loaded.config == opt.config
    problems = build_task("quadratic").sample(3, 0, "test")
    params = problems.init_params
    _, grads = problems.loss_and_grad(params, 0)
    with torch.no_grad():
        a, _ = opt.update(grads, opt.init(params), params)
        b, _ = loaded.update(grads, loaded.init(params), params)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", learned_names())
def test_drop_in_torch_optimizer_applies_the_batched_rule(name):
    opt = _perturb(_build(name)).double()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    start = [p.detach().clone() for p in model.parameters()]
    drop_in = TorchOptimizer(model.parameters(), opt)
    x = torch.randn(8, 3, dtype=torch.float64)
    drop_in.zero_grad()
    model(x).pow(2).mean().backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    drop_in.step()
    with torch.no_grad():
        for p0, g, p in zip(start, grads, model.parameters()):
            flat = p0.reshape(1, -1)
            rule = opt.with_layout(ParamLayout.from_tensors([p0]))  # opt unless it uses_layout
            update, _ = rule.update(g.reshape(1, -1), rule.init(flat), flat)
            torch.testing.assert_close(p, p0 + update.view_as(p0), rtol=1e-12, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("name", learned_names())
def test_short_meta_training_lowers_the_validation_loss(name):
    config = MetaConfig(iterations=12, horizon=20, unroll=10, batch_size=8, meta_lr=0.03,
                        val_every=12, val_instances=32, seed=0)
    trainer = MetaTrainer(_build(name), build_task("quadratic"), config)
    untrained = trainer.validate()
    result = trainer.train()
    trained = result["history"]["val_loss"][-1]
    assert result["skipped"] == 0
    assert math.isfinite(trained) and trained < 0.9 * untrained, (name, untrained, trained)


def _run(opt, problems, steps):
    params = problems.init_params
    state = opt.init(params)
    out = []
    with torch.no_grad():
        for t in range(steps):
            _, grads = problems.loss_and_grad(params, t)
            update, state = opt.update(grads, state, params)
            params = params + update
            out.append(params)
    return torch.stack(out)


@pytest.mark.parametrize("core", ["mlp", "lstm"])
def test_untrained_adam_anchored_is_adam(core):
    problems = build_task("quadratic").sample(4, 0, "test", dtype=torch.float64)
    anchored = AdamAnchored(lr=0.03, betas=(0.8, 0.99), eps=1e-7, core=core).double()
    adam = baselines.Adam(lr=0.03, betas=(0.8, 0.99), eps=1e-7)
    torch.testing.assert_close(_run(anchored, problems, 50), _run(adam, problems, 50),
                               rtol=1e-12, atol=1e-14)


def test_untrained_learnable_baselines_are_their_rules():
    problems = build_task("quadratic").sample(4, 0, "test", dtype=torch.float64)
    torch.testing.assert_close(
        _run(LearnableAdam(lr=0.05, betas=(0.8, 0.99), eps=1e-6, schedule_steps=10).double(),
             problems, 40),
        _run(baselines.Adam(lr=0.05, betas=(0.8, 0.99), eps=1e-6), problems, 40),
        rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        _run(LearnableMomentum(lr=0.002, momentum=0.8).double(), problems, 40),
        _run(baselines.Momentum(lr=0.002, momentum=0.8), problems, 40), rtol=1e-12, atol=1e-14)


def _backward_through_unroll(opt: LearnedOptimizer, steps: int = 8) -> None:
    """The summed loss of ``steps`` steps on quadratics, back-propagated into ``opt``."""
    problems = build_task("quadratic").sample(3, 0, "train", dtype=torch.float64)
    params, state, total = problems.init_params, opt.init(problems.init_params), 0.0
    for t in range(steps):
        _, grads = problems.loss_and_grad(params.detach(), t)
        update, state = opt.update(grads, state, params)
        params = params + update
        total = total + problems.loss(params, t).mean()
    total.backward()


def test_learnable_schedule_and_hyperparameters_get_meta_gradients():
    opt = LearnableAdam(lr=0.01, schedule_steps=5).double()
    _backward_through_unroll(opt)
    assert opt.log_schedule.grad.abs().min() > 0  # every scheduled step is reached
    assert opt.beta_deltas.grad.abs().min() > 0 and opt.log_eps_delta.grad != 0


@pytest.mark.parametrize("kind", ["adam", "momentum"])
def test_a_polynomial_schedule_is_its_formula_and_gets_meta_gradients(kind):
    """``log lr = log lr0 + c_1 f + c_2 f^2`` with ``f = min(t / T, 1)``: at zero coefficients
    the rule itself, else the formula at every step (held past ``T``), and every coefficient
    gets a meta-gradient through an unroll."""
    cls = LearnableAdam if kind == "adam" else LearnableMomentum
    problems = build_task("quadratic").sample(3, 0, "train", dtype=torch.float64)
    plain = cls(lr=0.02).double()
    scheduled = cls(lr=0.02, schedule_degree=2, schedule_horizon=6).double()
    torch.testing.assert_close(_run(scheduled, problems, 10), _run(plain, problems, 10),
                               rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        scheduled.schedule_coefs.copy_(torch.tensor([0.7, -1.9]))
    steps = torch.arange(10, dtype=torch.float64).view(-1, 1)
    f = (steps / 6).clamp(max=1.0)
    torch.testing.assert_close(scheduled.learning_rate(steps),
                               0.02 * torch.exp(0.7 * f - 1.9 * f * f))
    _backward_through_unroll(scheduled)
    assert (scheduled.schedule_coefs.grad.abs() > 0).all()
    assert scheduled.particle_axis()  # a few scalars: PES batches its particles


@pytest.mark.parametrize(("settings", "message"), [
    ({"schedule_degree": 2}, "schedule_degree=2 needs schedule_horizon"),
    ({"schedule_degree": 2, "schedule_horizon": 9, "schedule_steps": 4},
     "are two schedules: choose one"),
    ({"schedule_degree": 1.5, "schedule_horizon": 9}, "schedule_degree must be an integer"),
    ({"schedule_degree": 1, "schedule_horizon": -1}, "schedule_horizon must be an integer")])
def test_bad_schedule_settings_are_one_line_errors(settings, message):
    for name in ("learnable_adam", "learnable_momentum"):
        with pytest.raises(ValueError, match=message) as error:
            build_optimizer(name, **settings)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["learnable_adam", "learnable_momentum"])
def test_learnable_rules_compile_without_graph_breaks(name):
    """meta.compile traces the rule built from tensors at every step: its range checks must not
    break the graph (fullgraph raises on a break; the eager backend needs no C++ compiler)."""
    opt = _build(name, schedule_steps=4)
    problems = build_task("quadratic").sample(2, 0, "train")
    params = problems.init_params
    state = opt.init(params)
    _, grads = problems.loss_and_grad(params, 0)
    compiled = torch.compile(opt.update, backend="eager", fullgraph=True)
    update, _ = compiled(grads, state, params)
    torch.testing.assert_close(update, opt.update(grads, state, params)[0])


def test_rnnprop_is_invariant_to_the_gradient_scale():
    """Scale-free inputs: multiplying every gradient by 1000 changes nothing (up to eps)."""
    opt = _perturb(RNNprop(eps=1e-30)).double()
    problems = build_task("quadratic").sample(3, 0, "test", dtype=torch.float64)
    params = problems.init_params
    state_a = state_b = opt.init(params)
    with torch.no_grad():
        for t in range(5):
            _, grads = problems.loss_and_grad(params, t)
            a, state_a = opt.update(grads, state_a, params)
            b, state_b = opt.update(1000 * grads, state_b, params)
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
            params = params + a


def test_loading_one_architecture_as_another_is_refused(tmp_path):
    task = build_task("quadratic")
    config = MetaConfig(iterations=1, horizon=10, unroll=5, batch_size=2, val_every=1,
                        val_instances=2)
    MetaTrainer(_build("rnnprop"), task, config, run_dir=tmp_path).train()
    with pytest.raises(checkpoint.CheckpointError, match="holds a 'rnnprop' optimizer but the "
                                                         "config asks for 'lstm'"):
        MetaTrainer(_build("lstm"), task, config, run_dir=tmp_path)


def test_stored_config_with_unknown_or_missing_fields_is_refused(tmp_path):
    payload = _build("rnnprop").payload()
    bad = {**payload, "config": {**payload["config"], "wings": 2}}
    with pytest.raises(checkpoint.CheckpointError, match=r"unknown field\(s\) \['wings'\]"):
        checkpoint.optimizer_from_payload(bad)
    config = dict(payload["config"])
    del config["alpha"]
    with pytest.raises(checkpoint.CheckpointError, match=r"\['alpha'\].*missing"):
        checkpoint.optimizer_from_payload({**payload, "config": config})
    with pytest.raises(checkpoint.CheckpointError, match="'wizard'.*does not know"):
        checkpoint.optimizer_from_payload({**payload, "name": "wizard"})


def test_changing_a_trained_architecture_is_refused():
    opt = _build("rnnprop")
    assert opt.with_hyperparameters(alpha=0.2).config["alpha"] == 0.2
    with pytest.raises(ValueError, match="learned weights would not fit"):
        opt.with_hyperparameters(hidden_size=7)


@pytest.mark.parametrize(("name", "schedule"), [
    ("learnable_adam", {"schedule_steps": 3}), ("learnable_momentum", {}),
    ("learnable_momentum", {"schedule_degree": 2, "schedule_horizon": 4})])
def test_learnable_frozen_step_is_their_update_and_follows_weight_changes(name, schedule):
    """The drop-in's in-place step runs the baseline's float kernels on cached hyperparameters
    (so it costs what Adam costs): it must still be the pure ``update``, schedule included (a
    polynomial one past its horizon too), and a change of the learned weights must reach it."""
    opt = _build(name, **schedule).double()
    with torch.no_grad():
        for p in opt.parameters():
            p.copy_(torch.linspace(-0.3, 0.2, p.numel(), dtype=p.dtype).view_as(p))
    problems = build_task("quadratic").sample(1, 0, "test", dtype=torch.float64)
    pure, frozen = problems.init_params, problems.init_params.clone()
    pure_state, frozen_state = opt.init(pure), opt.init(frozen)
    for t in range(6):
        if t == 4:  # the learned weights change between steps (a meta-step)
            with torch.no_grad():
                opt.log_lr_delta.add_(0.5)
        _, grads = problems.loss_and_grad(pure, t)
        with torch.no_grad():
            update, pure_state = opt.update(grads, pure_state, pure)
            pure = pure + update
            opt.step_(grads, frozen_state, frozen)
        torch.testing.assert_close(frozen, pure, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_get_the_mode_a_new_file_gets(tmp_path, umask):
    """Readable by the group and others (0644) under the usual umask, as any new file is;
    a private umask keeps them private."""
    import os
    import stat

    from l2l import checkpoint

    old = os.umask(umask)
    try:
        checkpoint.save_atomic({"optimizer": {"x": 1}}, tmp_path / "best.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "best.pt").stat().st_mode) == 0o666 & ~umask
