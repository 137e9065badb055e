"""Parameter layouts (which segment of the flat vector is which tensor) and ``mlp_lopt``, the
per-parameter MLP optimizer with per-tensor features (small_fc_lopt) and its muLO form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import baselines
from l2l import checkpoint
from l2l.evaluation import run_optimizer
from l2l.interface import with_horizon
from l2l.layout import ParamLayout
from l2l.learned import MLPLOpt
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.objectives import build_objective
from l2l.registry import build_optimizer
from l2l.schedules import ExponentialDecay, Scheduled
from l2l.tasks import build_task
from l2l.tasks.mixture import MixtureFamily
from l2l.tasks.quadratic import QuadraticFamily
from l2l.torch_optimizer import TorchOptimizer
from l2l.truncated_step import FlatWeights, TruncatedStep, _UpdateCall
from l2l.unroll_lengths import LengthSchedule

#: a layout with every kind of tensor: a scalar, vectors, a matrix, a convolution's weight
MIXED = ParamLayout(("s", "v", "W", "conv", "b"), ((), (5,), (3, 4), (2, 3, 2, 2), (1,)))


def _perturb(opt: MLPLOpt, scale: float = 0.3, seed: int = 1) -> MLPLOpt:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return opt


def _run(opt, problems, steps):
    params = problems.init_params
    state = opt.init(params)
    losses = []
    with torch.no_grad():
        for t in range(steps):
            loss, grads = problems.loss_and_grad(params, t)
            losses.append(loss)
            update, state = opt.update(grads, state, params)
            params = params + update
    return torch.stack(losses), params


# -- layouts ------------------------------------------------------------------------------------


def test_task_layouts_split_like_the_families_own_unflatten():
    mlp = build_task("mnist_mlp", hidden_sizes=[6, 5])
    x = torch.randn(2, mlp.num_params)
    parts = mlp.layout.split(x)
    expected = [t for layer in mlp.unflatten(x) for t in layer]
    assert len(parts) == len(expected) and mlp.layout.numel == mlp.num_params
    for a, b in zip(parts, expected):
        assert torch.equal(a, b)
    assert mlp.layout.fan_ins == (784, 1, 6, 1, 5, 1)  # weights are stored (in, out)
    cnn = build_task("mnist_cnn", channels=[2, 3])
    x = torch.randn(2, cnn.num_params)
    convs, W_head, b_head = cnn.unflatten(x)
    expected = [t for conv in convs for t in conv] + [W_head, b_head]
    for a, b in zip(cnn.layout.split(x), expected):
        assert torch.equal(a, b)
    assert cnn.layout.fan_ins == (9, 1, 18, 1, cnn.features, 1)
    logreg = build_task("mnist_logreg")
    x = torch.randn(2, logreg.num_params)
    for a, b in zip(logreg.layout.split(x), logreg.unflatten(x)):
        assert torch.equal(a, b)
    assert build_task("quadratic", dim=7).layout == ParamLayout.flat(7, "theta")


def test_a_mixture_has_its_components_layouts():
    small = build_task("mnist_mlp", hidden_sizes=[4])
    wide = build_task("mnist_mlp", hidden_sizes=[8])
    mixture = MixtureFamily([small, wide])
    assert mixture.layouts() == (small.layout, wide.layout)
    with pytest.raises(ValueError, match="different parameter layouts"):
        _ = mixture.layout
    assert MixtureFamily([small, small]).layout == small.layout


def test_module_layout_matches_parameters_in_order():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 5))
    layout = ParamLayout.from_module(model)
    assert layout.names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert layout.shapes == ((3, 1, 3, 3), (3,), (5, 12), (5,))
    assert layout.fan_ins == (9, 1, 12, 1)  # torch's convention
    flat = nn.utils.parameters_to_vector(model.parameters()).view(1, -1)
    for part, p in zip(layout.split(flat), model.parameters()):
        assert torch.equal(part[0], p.detach())
    complex_layout = ParamLayout.from_tensors([torch.zeros(3, dtype=torch.complex64)])
    assert complex_layout.shapes == ((3, 2),)  # stepped as its real view


def test_per_tensor_reductions_equal_a_loop_over_tensors():
    x = torch.randn(3, MIXED.numel, 2, dtype=torch.float64)
    means = MIXED.tensor_mean(x)
    rows, cols = MIXED.row_mean(x), MIXED.col_mean(x)
    for off, size, (r, c) in zip(MIXED.offsets, MIXED.sizes, MIXED.matrix_shapes):
        seg = x[:, off:off + size]
        torch.testing.assert_close(means[:, off:off + size], seg.mean(1, keepdim=True)
                                   .expand_as(seg))
        mat = seg.reshape(3, r, c, 2)
        torch.testing.assert_close(rows[:, off:off + size].reshape(3, r, c, 2),
                                   mat.mean(2, keepdim=True).expand_as(mat))
        torch.testing.assert_close(cols[:, off:off + size].reshape(3, r, c, 2),
                                   mat.mean(1, keepdim=True).expand_as(mat))
    one = ParamLayout.flat(6)
    y = torch.randn(2, 6)
    torch.testing.assert_close(one.tensor_mean(y).expand_as(y), y.mean(1, keepdim=True)
                               .expand_as(y))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"names": ("a", "a"), "shapes": ((2,), (3,))}, "distinct strings"),
    ({"names": ("a",), "shapes": ((2,), (3,))}, "one name per shape"),
    ({"names": (), "shapes": ()}, "at least one tensor"),
    ({"names": ("a",), "shapes": ((-1,),)}, "non-negative ints"),
    ({"names": ("a",), "shapes": ((2, 2),), "fan_ins": (0,)}, "positive int"),
])
def test_bad_layouts_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ParamLayout(**kwargs)


def test_a_layout_of_another_size_is_refused_where_it_is_applied():
    with pytest.raises(ValueError,
                       match=r"describes 4 parameters \(params\) but the parameter vector has 5"):
        ParamLayout.flat(4).split(torch.zeros(1, 5))


# -- binding ------------------------------------------------------------------------------------


def test_with_layout_binds_a_copy_that_shares_the_weights():
    opt = MLPLOpt()
    bound = opt.with_layout(MIXED)
    assert bound is not opt and opt.layouts == {} and bound.layouts == {MIXED.numel: MIXED}
    assert all(a is b for a, b in zip(bound.parameters(), opt.parameters()))
    assert bound.layout_for(MIXED.numel) is MIXED
    assert bound.layout_for(3) == ParamLayout.flat(3)  # a size it was not told about
    clash = ParamLayout(("x",), ((MIXED.numel,),))
    assert opt.with_layout([MIXED, clash]).layout_for(MIXED.numel) == ParamLayout.flat(MIXED.numel)
    assert bound.with_hyperparameters(step_mult=0.01).layouts == bound.layouts
    adam = baselines.Adam()
    assert adam.with_layout(MIXED) is adam  # rules that ignore layouts are unchanged
    scheduled = Scheduled(opt, ExponentialDecay(0.5, 10))
    assert scheduled.with_layout(MIXED).optimizer.layouts == {MIXED.numel: MIXED}


class _MatrixQuadratics(QuadraticFamily):
    """Quadratics whose 12 parameters are declared a (3, 4) matrix."""

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(("W",), ((3, 4),))


def test_the_meta_trainer_binds_the_task_layouts_and_trains_the_callers_weights():
    task = _MatrixQuadratics(dim=12)
    opt = MLPLOpt()
    config = MetaConfig(iterations=1, horizon=2, unroll=2, batch_size=1, val_every=1,
                        val_instances=1)
    trainer = MetaTrainer(opt, task, config)
    assert trainer.optimizer.layouts == {12: task.layout} and opt.layouts == {}
    assert trainer.optimizer.input.weight is opt.input.weight
    before = opt.head.weight.detach().clone()  # a zero head: the only weight with a gradient
    trainer.train()
    assert not torch.equal(opt.head.weight, before)


# -- the rule -----------------------------------------------------------------------------------


def _reference_features(opt: MLPLOpt, g: torch.Tensor, p: torch.Tensor,
                        shape: tuple[int, ...]) -> torch.Tensor:
    """The first step's inputs for one tensor from a fresh state, written out plainly."""
    cfg = opt.config
    eps = cfg["eps"]
    momenta = [(1 - d) * g for d in cfg["momentum_decays"]]
    v_hat = g * g  # (1 - b2) g^2 / (1 - b2)
    inv = 1 / (v_hat.sqrt() + eps)
    r, c = (shape[0], math.prod(shape[1:])) if len(shape) >= 1 else (1, 1)
    mat = (g * g + 1e-30).reshape(r, max(c, 1))
    fd = cfg["factored_decay"]
    row = ((1 - fd) * mat.mean(1, keepdim=True)).expand_as(mat).reshape(-1)
    col = ((1 - fd) * mat.mean(0, keepdim=True)).expand_as(mat).reshape(-1)
    factored = row * col / (row.mean() + 1e-30) / (1 - fd)
    feats = [g, p, *momenta, v_hat, *(m * inv for m in momenta), inv, row, col,
             g / (factored.sqrt() + eps)]
    x = torch.stack(feats, -1)
    return x / (x.pow(2).mean(0, keepdim=True) + 1e-30).sqrt()


def test_features_are_normalised_per_tensor_like_a_reference_loop():
    opt = MLPLOpt().double()
    g = torch.randn(2, MIXED.numel, dtype=torch.float64)
    p = torch.randn(2, MIXED.numel, dtype=torch.float64)
    bound = opt.with_layout(MIXED)
    state = bound.init(p)
    new_state = {"step": state["step"] + 1}
    new_state["v"] = torch.lerp(state["v"], g * g, 1 - 0.999)
    new_state[opt.anchor_key] = torch.lerp(state[opt.anchor_key], g, 0.1)

    def bias(d):
        return torch.full((2, 1), 1 - d, dtype=torch.float64)

    x = bound._features(g, p, state, new_state, MIXED, bias, bias(0.999)).transpose(1, 2)
    for off, size, shape in zip(MIXED.offsets, MIXED.sizes, MIXED.shapes):
        for b in range(2):
            ref = _reference_features(opt, g[b, off:off + size], p[b, off:off + size], shape)
            torch.testing.assert_close(x[b, off:off + size], ref, rtol=1e-10, atol=1e-12)


def test_the_update_of_each_tensor_depends_on_that_tensor_alone():
    """The whole vector bound to its layout steps like every tensor stepped on its own."""
    opt = _perturb(MLPLOpt(hidden_size=8, mup=True)).double()
    whole = opt.with_layout(MIXED)
    g = torch.randn(3, MIXED.numel, dtype=torch.float64)
    p = torch.randn(3, MIXED.numel, dtype=torch.float64)
    state = whole.init(p)
    with torch.no_grad():
        for _ in range(3):
            update, new = whole.update(g, state, p)
            for i, (off, size) in enumerate(zip(MIXED.offsets, MIXED.sizes)):
                one = ParamLayout((MIXED.names[i],), (MIXED.shapes[i],), (MIXED.fan_ins[i],))
                part = opt.with_layout(one)
                sl = slice(off, off + size)
                sub = {k: v if k == "step" else v[:, sl] for k, v in state.items()}
                expected, _ = part.update(g[:, sl], sub, p[:, sl])
                torch.testing.assert_close(update[:, sl], expected, rtol=1e-10, atol=1e-14)
            state, p = new, p + update
            g = g + 0.1 * torch.randn_like(g)


@pytest.mark.parametrize("family", ["quadratic", pytest.param("mnist_mlp", marks=pytest.mark.slow)])
def test_untrained_mlp_lopt_is_adam_and_descends(family, request):
    if family != "quadratic":
        request.getfixturevalue("mnist_dir")  # skips without the data
    task = build_task(family)
    problems = task.sample(3, 0, "test", dtype=torch.float64)
    lr = 0.05 if family == "quadratic" else 0.01
    opt = MLPLOpt(step_mult=lr).double().with_layout(task.layouts())
    losses, params = _run(opt, problems, 40)
    adam_losses, adam_params = _run(baselines.Adam(lr=lr), problems, 40)
    assert torch.isfinite(losses).all()
    assert (losses[-1] < 0.7 * losses[0]).all()
    torch.testing.assert_close(params, adam_params, rtol=1e-9, atol=1e-12)


def test_meta_gradient_is_finite_from_a_fresh_state_with_zero_gradients():
    """Zero gradients (dead units) give zero second moments: no sqrt(0) in the meta-gradient."""
    opt = _perturb(MLPLOpt()).double().with_layout(MIXED)
    params = torch.randn(2, MIXED.numel, dtype=torch.float64)
    state = opt.init(params)
    total = 0.0
    for t in range(4):
        grads = torch.zeros_like(params) if t == 0 else params.detach() * 0.5
        grads[:, :3] = 0.0
        update, state = opt.update(grads.requires_grad_(), state, params)
        params = params + update
        total = total + params.pow(2).sum()
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in opt.parameters())


@pytest.mark.parametrize("estimator", ["autograd", "surrogate", "pes"])
def test_mlp_lopt_meta_trains_on_quadratics(estimator):
    torch.manual_seed(0)
    opt = MLPLOpt(hidden_size=8, step_mult=0.05)
    if estimator == "pes":
        config = MetaConfig(iterations=30, horizon=12, unroll=4, meta_lr=0.03, val_every=30,
                            val_instances=32, estimator="pes", particles=16, sigma=0.01)
    else:
        config = MetaConfig(iterations=16, horizon=20, unroll=10, batch_size=8, meta_lr=0.03,
                            val_every=16, val_instances=32, estimator=estimator)
    trainer = MetaTrainer(opt, build_task("quadratic"), config)
    untrained = trainer.validate()
    result = trainer.train()
    assert result["skipped"] == 0
    assert result["best_val_loss"] < 0.9 * untrained, (untrained, result["history"])


def test_particles_update_as_one_batch_like_one_by_one():
    opt = _perturb(MLPLOpt(hidden_size=6)).with_layout(MIXED)
    assert opt.particle_axis()
    weights = FlatWeights(opt)
    call = _UpdateCall(opt)
    P = 4
    w = weights.vector() + 0.1 * torch.randn(P, weights.size)
    g, p = torch.randn(P, MIXED.numel), torch.randn(P, MIXED.numel)
    state = opt.init(p)
    with torch.no_grad():
        batched, bstate = functional_call(call, weights.batched(w), (g, state, p))
        for i in range(P):
            one, ostate = functional_call(call, weights.single(w[i]), (
                g[i:i + 1], {k: v[i:i + 1] for k, v in state.items()}, p[i:i + 1]))
            torch.testing.assert_close(batched[i:i + 1], one, rtol=1e-5, atol=1e-7)
            for k in ostate:
                torch.testing.assert_close(bstate[k][i:i + 1], ostate[k])


# -- muLO ---------------------------------------------------------------------------------------


def _mlp(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10)).double()


def _update_stats(opt: MLPLOpt, width: int) -> list[float]:
    """Per-tensor RMS of the update times the tensor's fan-in (weights), after 3 steps."""
    model = _mlp(width)
    layout = ParamLayout.from_module(model)
    rule = opt.with_layout(layout)
    x, y = torch.randn(64, 32, dtype=torch.float64), torch.randint(0, 10, (64,))
    params = nn.utils.parameters_to_vector(model.parameters()).detach().view(1, -1)
    state = rule.init(params)
    with torch.no_grad():
        for _ in range(3):
            with torch.enable_grad():
                model.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
            grads = torch.cat([p.grad.flatten() for p in model.parameters()]).view(1, -1)
            update, state = rule.update(grads, state, params)
            params = params + update
            nn.utils.vector_to_parameters(params.view(-1), model.parameters())
    return [float(u.pow(2).mean().sqrt()) * f
            for u, s, f in zip(layout.split(update), layout.shapes, layout.fan_ins)
            if len(s) >= 2]


def test_mup_update_statistics_do_not_change_with_width():
    mup = _perturb(MLPLOpt(hidden_size=8, mup=True, step_mult=0.1)).double()
    plain = _perturb(MLPLOpt(hidden_size=8)).double()
    stats = {w: _update_stats(mup, w) for w in (32, 128, 512)}
    for layer in range(3):
        values = [stats[w][layer] for w in stats]
        assert max(values) < 1.5 * min(values), (layer, stats)
    # without mup the hidden layer's scaled statistic grows with the fan-in (the test can fail)
    hidden = [_update_stats(plain, w)[1] for w in (32, 512)]
    assert hidden[1] > 8 * hidden[0]


# -- checkpoints and the drop-in ----------------------------------------------------------------


def test_checkpoints_round_trip(tmp_path):
    opt = _perturb(MLPLOpt(hidden_size=5, hidden_layers=3, momentum_decays=(0.8,),
                           time_scales=(30.0,), mup=True))
    path = tmp_path / "opt.pt"
    checkpoint.save_atomic({"optimizer": opt.payload()}, path)
    loaded = checkpoint.load_learned_optimizer(path)
    assert type(loaded) is MLPLOpt and loaded.config == opt.config
    assert loaded.anchor_key == "anchor_m"  # 0.9 is not among the feature momenta
    g, p = torch.randn(2, MIXED.numel), torch.randn(2, MIXED.numel)
    a, sa = opt.with_layout(MIXED).update(g, opt.init(p), p)
    b, sb = loaded.with_layout(MIXED).update(g, loaded.init(p), p)
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def _steps(model, drop_in, count):
    torch.manual_seed(1)
    losses = []
    for _ in range(count):
        x = torch.randn(16, 1, 4, 4)
        drop_in.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        drop_in.step()
        losses.append(loss.item())
    return losses


def test_drop_in_steps_each_tensor_with_its_layout_and_descends():
    model = _model()
    opt = MLPLOpt(step_mult=0.01)
    drop_in = TorchOptimizer(model.parameters(), opt)
    assert drop_in.group_layout(0) == ParamLayout.from_tensors(list(model.parameters()))
    start = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(16, 1, 4, 4)
    drop_in.zero_grad()
    model(x).pow(2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    drop_in.step()
    with torch.no_grad():
        for p0, g, p in zip(start, grads, model.parameters()):
            rule = opt.with_layout(ParamLayout.from_tensors([p0]))
            update, _ = rule.update(g.view(1, -1), rule.init(p0.view(1, -1)), p0.view(1, -1))
            torch.testing.assert_close(p, p0 + update.view_as(p0))
    losses = _steps(model, drop_in, 30)
    assert losses[-1] < 0.5 * losses[0]


def test_drop_in_state_dict_round_trips():
    model_a, model_b = _model(), _model()
    opt = _perturb(MLPLOpt(hidden_size=4), scale=0.05)
    straight = TorchOptimizer(model_a.parameters(), opt)
    _steps(model_a, straight, 6)
    first = TorchOptimizer(model_b.parameters(), opt)
    torch.manual_seed(1)
    _steps(model_b, first, 3)
    saved = first.state_dict()
    second = TorchOptimizer(model_b.parameters(), opt)
    second.load_state_dict(saved)
    # continue with the same data as the straight run's last three steps
    torch.manual_seed(1)
    for _ in range(3):
        torch.randn(16, 1, 4, 4)
    for _ in range(3):
        x = torch.randn(16, 1, 4, 4)
        second.zero_grad()
        model_b(x).pow(2).mean().backward()
        second.step()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# -- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"hidden_size": 0}, "hidden_size must be an integer in"),
    ({"hidden_layers": 2.5}, "hidden_layers must be an integer in"),
    ({"momentum_decays": [1.0]}, r"momentum_decays\[i\] must lie in"),
    ({"time_scales": [0.0]}, r"time_scales\[i\] must lie in"),
    ({"step_mult": -1e-3}, "step_mult must lie in"),
    ({"eps": 0.0}, "eps must lie in"),
    ({"rms_decay": 1.0}, "rms_decay must lie in"),
    ({"mup": "yes"}, "mup must be true or false"),
    ({"scale_feature": 1}, "scale_feature must be true or false"),
    ({"wings": 2}, r"unknown hyperparameter\(s\) \['wings'\]"),
])
def test_bad_config_values_are_one_line_errors(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        build_optimizer("mlp_lopt", **overrides)
    assert "\n" not in str(error.value)


def test_a_frozen_step_in_chunks_equals_the_differentiable_update():
    from l2l.learned.mlp_lopt import FROZEN_CHUNK

    opt = _perturb(MLPLOpt(hidden_size=4)).double()
    layout = ParamLayout(("W",), ((FROZEN_CHUNK // 100 + 7, 100),))
    rule = opt.with_layout(layout)
    g = torch.randn(1, layout.numel, dtype=torch.float64)
    p = torch.randn(1, layout.numel, dtype=torch.float64)
    state = rule.init(p)
    differentiable, _ = rule.update(g, state, p)
    with torch.no_grad():
        frozen, _ = rule.update(g, state, p)
        stepped = p.clone()
        rule.step_(g, rule.init(p), stepped)
    torch.testing.assert_close(frozen, differentiable.detach(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(stepped, p + frozen, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kwargs", [
    {}, {"mup": True}, {"horizon_features": True}, {"scale_feature": True},
    {"momentum_decays": (0.5, 0.99)},
    {"hidden_layers": 1}, {"hidden_layers": 3, "anchor_scale": 0.0}])
def test_the_in_place_step_is_the_pure_update(kwargs, batch):
    """``step_`` (the drop-in's and evaluation's path, l2l.learned.mlp_lopt_step) computes the
    features, the per-tensor normaliser and the network its own way: step after step it must
    give the pure update's parameters and state, on every kind of tensor, with a tensor
    longer than one of its network slices between two others (slices across tensors)."""
    from l2l.learned.mlp_lopt_step import FROZEN_CHUNK

    opt = _perturb(MLPLOpt(hidden_size=4, zero_head=False, **kwargs), scale=0.5).double()
    layout = ParamLayout(("s", "v", "big", "conv", "W"),
                         ((), (5,), (FROZEN_CHUNK // 64 + 3, 64), (2, 3, 2, 2), (7, 5)))
    rule = opt.with_layout(layout)
    torch.manual_seed(0)
    pure = torch.randn(batch, layout.numel, dtype=torch.float64)
    stepped = pure.clone()
    pure_state, stepped_state = rule.init(pure), rule.init(stepped)
    if kwargs.get("horizon_features"):
        pure_state, stepped_state = with_horizon(pure_state, 5), with_horizon(stepped_state, 5)
    for _ in range(4):
        g = torch.randn_like(pure) * torch.logspace(-3, 1, layout.numel, dtype=torch.float64)
        with torch.no_grad():
            update, pure_state = rule.update(g, pure_state, pure)
        pure = pure + update
        rule.step_(g, stepped_state, stepped)
        torch.testing.assert_close(stepped, pure, rtol=1e-11, atol=1e-14)
        assert stepped_state.keys() == pure_state.keys()
        for key in pure_state:
            torch.testing.assert_close(stepped_state[key], pure_state[key], rtol=1e-12,
                                       atol=0.0, msg=key)


def test_the_in_place_step_sees_weights_changed_between_steps():
    """The in-place step keeps the network's layer matrices between calls: a weight changed in
    place, or loaded from a state dict, must be the one the next step uses."""
    opt = _perturb(MLPLOpt(hidden_size=4, zero_head=False), scale=0.5).double()
    rule = opt.with_layout(MIXED)
    other = _perturb(MLPLOpt(hidden_size=4, zero_head=False), scale=0.5).double()
    p = torch.randn(2, MIXED.numel, dtype=torch.float64)
    for change in (None, lambda: rule.head.weight.mul_(-2.0),
                   lambda: rule.hidden[0].bias.add_(1.0),
                   lambda: rule.load_state_dict(other.state_dict())):
        if change is not None:
            with torch.no_grad():
                change()
        g = torch.randn_like(p)
        with torch.no_grad():
            update, _ = rule.update(g, rule.init(p), p)
        stepped = p.clone()
        rule.step_(g, rule.init(p), stepped)
        torch.testing.assert_close(stepped, p + update, rtol=1e-11, atol=1e-14)


def test_the_in_place_step_falls_back_to_the_pure_update_for_other_dtypes():
    """float32 parameters stepped by a float64 rule take the pure update (and its casts)."""
    rule = _perturb(MLPLOpt(hidden_size=4, zero_head=False)).double().with_layout(MIXED)
    p = torch.randn(2, MIXED.numel)
    g = torch.randn(2, MIXED.numel)
    with torch.no_grad():
        update, _ = rule.update(g, rule.init(p), p)
    stepped = p.clone()
    rule.step_(g, rule.init(p), stepped)
    torch.testing.assert_close(stepped, p + update)


@pytest.mark.parametrize("tiny", [1e-3, 1e-6, 1e-9])
def test_second_moment_features_are_scale_free_for_tiny_gradients(tiny):
    """v^, r and c scale as g^2, so in the normaliser their squares go as g^4: for |g| ~ 1e-12
    is below float32's smallest number. Normalised over the tensor, the scale-free inputs
    (g, the momenta, v^, r, c) must not depend on the gradient's scale, in float32."""
    rule = MLPLOpt().with_layout(MIXED)
    torch.manual_seed(0)
    g = torch.randn(1, MIXED.numel) * 1e-2
    p = torch.randn(1, MIXED.numel)

    def features(grads):
        state = rule.init(p)
        new_state = {"v": torch.lerp(state["v"], grads * grads, 1 - 0.999),
                     rule.anchor_key: torch.lerp(state[rule.anchor_key], grads, 0.1)}

        def bias(d):
            return torch.full((1, 1), 1 - d)

        return rule._features(grads, p, state, new_state, MIXED, bias, bias(0.999))

    K = len(rule.config["momentum_decays"])
    scale_free = [0, *range(2, 3 + K), 4 + 2 * K, 5 + 2 * K]  # g, the momenta, v^, r, c
    torch.testing.assert_close(features(g * tiny)[:, scale_free], features(g)[:, scale_free],
                               rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_mlp_lopt_meta_trains_on_the_mnist_mlp(mnist_dir):
    torch.manual_seed(0)
    opt = MLPLOpt(hidden_size=8, step_mult=0.01)
    config = MetaConfig(iterations=10, horizon=20, unroll=10, batch_size=4, meta_lr=0.01,
                        val_every=10, val_instances=8, compile=False)
    trainer = MetaTrainer(opt, build_task("mnist_mlp"), config)
    untrained = trainer.validate()
    result = trainer.train()
    assert result["skipped"] == 0
    assert result["best_val_loss"] < 0.95 * untrained, (untrained, result["history"])


# -- horizon features ---------------------------------------------------------------------------


def _horizon_opt(**kwargs) -> MLPLOpt:
    return _perturb(MLPLOpt(hidden_size=6, horizon_features=True, **kwargs))


def test_horizon_features_read_the_fraction_of_the_run_done():
    opt = _horizon_opt()
    p, g = torch.randn(1, 12).repeat(3, 1), torch.randn(1, 12).repeat(3, 1)
    state = with_horizon(opt.init(p), torch.tensor([10, 10, 40]))
    with torch.no_grad():
        update, new = opt.update(g, state, p)
    torch.testing.assert_close(new["horizon"], torch.tensor([[10.0], [10.0], [40.0]]))
    torch.testing.assert_close(update[0], update[1])
    assert not torch.allclose(update[0], update[2])  # same step, another fraction of the run
    # f = t / T enters as the time features' last two columns, f and f^2, t counted from 1
    times = opt._times(torch.tensor([[5.0], [20.0]]), with_horizon(opt.init(p[:2]), 10), {})
    torch.testing.assert_close(times[:, -2:], torch.tensor([[0.5, 0.25], [1.0, 1.0]]))


def test_untrained_horizon_aware_mlp_lopt_is_still_adam():
    problems = QuadraticFamily(dim=6).sample(4, seed=0, split="train")
    plain, _ = _run(MLPLOpt(step_mult=0.05), problems, 8)
    aware = MLPLOpt(step_mult=0.05, horizon_features=True)
    aware.run_length = 8
    losses, _ = _run(aware, problems, 8)
    torch.testing.assert_close(losses, plain)


def test_an_unknown_run_length_is_refused_in_one_line():
    opt = MLPLOpt(horizon_features=True)
    p = torch.randn(2, 5)
    with pytest.raises(ValueError, match="needs its run's length") as error:
        opt.update(torch.randn(2, 5), opt.init(p), p)
    assert "\n" not in str(error.value)
    assert with_horizon({"step": torch.zeros(2, 1)}, 7).keys() == {"step"}  # others untouched


def test_every_caller_that_knows_the_length_records_it():
    opt = _horizon_opt()
    problems = QuadraticFamily(dim=4).sample(2, seed=0, split="test")
    seen = []
    times = opt._times  # read by the pure update and the in-place step alike

    def spy(t, state, new_state):
        seen.append(state["horizon"].flatten().tolist())
        return times(t, state, new_state)

    opt._times = spy
    run_optimizer(opt, problems, 5)
    assert seen[-1] == [5.0, 5.0]
    # a truncated step: the rest of each particle's episode, and a new episode's whole length
    population = TruncatedStep(build_task("quadratic", dim=4), opt, build_objective("sum"),
                               pairs=3, lengths=LengthSchedule("log_uniform", 4, 12), seed=2)
    left = population.rows(population.length - population.step).float()
    torch.testing.assert_close(population.state["horizon"].flatten(), left)
    weights = FlatWeights(opt).vector().expand(population.particles, -1).clone()
    for _ in range(6):
        out = population.unroll(weights, 4)
        if bool(out.reset.any()):
            break
    assert bool(out.reset.any())
    horizon = population.state["horizon"].flatten()
    new_lengths = population.rows(population.length).float()
    torch.testing.assert_close(horizon[out.reset], new_lengths[out.reset])


@pytest.mark.parametrize("estimator", ["pes", "surrogate"])
def test_horizon_aware_mlp_lopt_meta_trains(estimator):
    torch.manual_seed(0)
    opt = MLPLOpt(hidden_size=8, step_mult=0.05, horizon_features=True)
    extra = ({"estimator": "pes", "particles": 16, "lengths": "log_uniform",
              "min_length": 8, "max_length": 24, "iterations": 30}
             if estimator == "pes" else
             {"estimator": estimator, "batch_size": 4, "iterations": 6})
    config = MetaConfig(horizon=16, unroll=8, meta_lr=0.03, val_every=extra["iterations"],
                        val_instances=32, **extra)
    trainer = MetaTrainer(opt, build_task("quadratic"), config)
    untrained = trainer.validate()
    result = trainer.train()
    assert result["best_val_loss"] < 0.9 * untrained, (estimator, result["history"])


def test_the_drop_in_uses_the_run_length_it_is_given():
    model = _model()
    opt = _horizon_opt()
    drop_in = TorchOptimizer(model.parameters(), opt)
    with pytest.raises(ValueError, match="run_length"):
        _steps(model, drop_in, 1)
    opt.run_length = 20
    model = _model()
    drop_in = TorchOptimizer(model.parameters(), opt)
    losses = _steps(model, drop_in, 3)
    assert all(math.isfinite(v) for v in losses)
    assert drop_in.state_dict()["state"][0]["horizon"].item() == 20.0


def test_checkpoints_from_before_horizon_features_load_as_without_them(tmp_path):
    opt = _perturb(MLPLOpt(hidden_size=4))
    payload = opt.payload()
    del payload["config"]["horizon_features"]  # as written before the fields existed
    del payload["config"]["scale_feature"]
    loaded = MLPLOpt.from_config(payload["config"], complete=True)
    assert loaded.config["horizon_features"] is False
    assert loaded.config["scale_feature"] is False
    del payload["config"]["hidden_layers"]  # a field that was always there: still incomplete
    with pytest.raises(ValueError, match=r"\['hidden_layers'\] of learned optimizer 'mlp_lopt' "
                                         "are missing"):
        MLPLOpt.from_config(payload["config"], complete=True)


# -- the parameter-scale input ------------------------------------------------------------------


def test_the_scale_feature_is_each_tensors_log10_parameter_rms_unnormalised():
    opt = MLPLOpt(scale_feature=True).double()
    bound = opt.with_layout(MIXED)
    g = torch.randn(2, MIXED.numel, dtype=torch.float64)
    p = torch.randn(2, MIXED.numel, dtype=torch.float64) * torch.tensor([[3.0], [0.01]],
                                                                         dtype=torch.float64)
    p[1, MIXED.offsets[2]:MIXED.offsets[2] + MIXED.sizes[2]] = 0.0  # a tensor at zero: -3
    state = bound.init(p)
    new_state = {"v": torch.lerp(state["v"], g * g, 1 - 0.999),
                 opt.anchor_key: torch.lerp(state[opt.anchor_key], g, 0.1)}

    def bias(d):
        return torch.full((2, 1), 1 - d, dtype=torch.float64)

    x = bound._features(g, p, state, new_state, MIXED, bias, bias(0.999))
    assert x.shape[1] == opt.num_features == MLPLOpt().num_features + 1
    plain = MLPLOpt().double().with_layout(MIXED)._features(g, p, state, dict(new_state), MIXED,
                                                            bias, bias(0.999))
    torch.testing.assert_close(x[:, :-1], plain)  # the normalised inputs are the same
    for b in range(2):
        for off, size in zip(MIXED.offsets, MIXED.sizes):
            rms = p[b, off:off + size].pow(2).mean().sqrt()
            want = torch.log10(rms + 1e-3).expand(size)
            torch.testing.assert_close(x[b, -1, off:off + size], want, rtol=1e-12, atol=1e-12)
    assert x[1, -1, MIXED.offsets[2]] == pytest.approx(-3.0)


def test_only_the_scale_feature_lets_the_rule_step_by_the_parameters_scale():
    """The normalised inputs are the same for p and 10 p, so without the feature every trained
    rule takes the same step on both; with it the step can depend on the scale."""
    g = torch.randn(2, MIXED.numel, dtype=torch.float64)
    p = torch.randn(2, MIXED.numel, dtype=torch.float64)
    steps = {}
    for flag in (False, True):
        rule = _perturb(MLPLOpt(hidden_size=6, zero_head=False, scale_feature=flag),
                        scale=0.5).double().with_layout(MIXED)
        with torch.no_grad():
            steps[flag] = [rule.update(g, rule.init(q), q)[0] for q in (p, 10 * p)]
    torch.testing.assert_close(steps[False][0], steps[False][1], rtol=1e-10, atol=1e-14)
    assert not torch.allclose(steps[True][0], steps[True][1], rtol=1e-3)


def test_untrained_scale_aware_mlp_lopt_is_still_adam_and_meta_trains():
    problems = QuadraticFamily(dim=6).sample(4, seed=0, split="train")
    plain, _ = _run(MLPLOpt(step_mult=0.05), problems, 8)
    aware, _ = _run(MLPLOpt(step_mult=0.05, scale_feature=True), problems, 8)
    torch.testing.assert_close(aware, plain)
    torch.manual_seed(0)
    opt = MLPLOpt(hidden_size=8, step_mult=0.05, scale_feature=True)
    config = MetaConfig(iterations=16, horizon=20, unroll=10, batch_size=8, meta_lr=0.03,
                        val_every=16, val_instances=32, estimator="surrogate")
    trainer = MetaTrainer(opt, build_task("quadratic"), config)
    untrained = trainer.validate()
    result = trainer.train()
    assert result["skipped"] == 0
    assert result["best_val_loss"] < 0.9 * untrained, (untrained, result["history"])
