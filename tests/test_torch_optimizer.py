"""The drop-in torch.optim.Optimizer wrapper against torch.optim itself."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import baselines
from l2l import flat_group
from l2l.learned.lstm import LSTMOptimizer
from l2l.torch_optimizer import TorchOptimizer

# (ours, torch's twin, hyperparameters, torch-only settings): every baseline, options switched on
CASES = [
    (baselines.SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.01}, {}),
    (baselines.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}, {}),
    (baselines.NAG, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, {"nesterov": True}),
    (baselines.AdaGrad, torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01}, {}),
    (baselines.RMSProp, torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5}, {}),
    (baselines.AdaDelta, torch.optim.Adadelta, {"lr": 0.5, "weight_decay": 0.01}, {}),
    (baselines.Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True}, {}),
    (baselines.Nadam, torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 0.01}, {}),
]
IDS = [c[0].__name__ for c in CASES]


def _pair(case, seed=0):
    """(model, our drop-in) and (model, torch.optim) for one case, from the same weights."""
    ours, theirs, hp, extra = case
    a, b = _model(seed), _model(seed)
    return (
        (a, TorchOptimizer(a.parameters(), ours(**hp))),
        (b, theirs(b.parameters(), **hp, **extra)),
    )


def _assert_same(m1, m2, exact=True):
    for pa, pb in zip(m1.parameters(), m2.parameters()):
        if exact:
            assert torch.equal(pa, pb), (pa - pb).abs().max()
        else:
            torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-12)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(
        16, 2, generator=g, dtype=torch.float64)


def _train(model, opt, steps, scheduler=None):
    x, y = _data()
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch_optim_on_a_module_bit_for_bit(case):
    """The drop-in runs the rule's in-place ``step_``: torch.optim's arithmetic, op for op."""
    (a, oa), (b, ob) = _pair(case)
    _train(a, oa, 30)
    _train(b, ob, 30)
    _assert_same(a, b)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_and_param_groups_look_like_torch_optims(case):
    """Same state keys, shapes, dtypes (``step``: a 0-dim float tensor) and group values."""
    (a, oa), (b, ob) = _pair(case)
    _train(a, oa, 3)
    _train(b, ob, 3)
    ours, theirs = oa.state_dict(), ob.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for pid, state in theirs["state"].items():
        assert ours["state"][pid].keys() == state.keys()
        for key, value in state.items():
            mine = ours["state"][pid][key]
            assert (mine.shape, mine.dtype) == (value.shape, value.dtype), key
            assert torch.equal(mine, value), key
    for g_ours, g_theirs in zip(ours["param_groups"], theirs["param_groups"]):
        for key, value in g_ours.items():
            assert key in g_theirs, f"{key!r} is not a torch param-group name"
            assert value == g_theirs[key], key


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("direction", ["torch->l2l", "l2l->torch"])
def test_state_dicts_move_between_torch_and_l2l(case, direction):
    """Train 7 steps with one, load its state dict into the other, train 8 more: bit for bit
    what torch.optim does when it loads the same state dict, and (to rounding) the same as 8
    more steps without the interruption. (Not bit for bit there: torch's ``load_state_dict``
    casts NAdam's float32 ``mu_product`` to the parameters' float64, for torch itself too.)"""
    (ours_model, ours), (torch_model, theirs) = _pair(case)
    _train(ours_model, ours, 7)
    _train(torch_model, theirs, 7)
    to_l2l = direction == "torch->l2l"
    source, source_model = (theirs, torch_model) if to_l2l else (ours, ours_model)
    saved = _roundtrip(source.state_dict())

    (loaded_model, loaded), (reference_model, reference) = _pair(case, seed=3)
    if not to_l2l:
        loaded_model, loaded = reference_model, reference
        (reference_model, reference) = _pair(case, seed=3)[1]
    for model, opt, state in [(loaded_model, loaded, saved),
                              (reference_model, reference, _roundtrip(theirs.state_dict()))]:
        model.load_state_dict(source_model.state_dict())
        opt.load_state_dict(state)
        _train(model, opt, 8)
    _assert_same(loaded_model, reference_model)
    _train(source_model, source, 8)
    _assert_same(loaded_model, source_model, exact=False)


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda o: torch.optim.lr_scheduler.StepLR(o, 4, gamma=0.5),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    ],
    ids=["StepLR", "ExponentialLR", "CosineAnnealingLR"],
)
def test_lr_schedulers_drive_every_baseline_as_torch(case, make_scheduler):
    (a, oa), (b, ob) = _pair(case)
    _train(a, oa, 15, make_scheduler(oa))
    _train(b, ob, 15, make_scheduler(ob))
    _assert_same(a, b)


def test_lr_scheduler_and_param_groups_drive_the_rule():
    a, b = _model(), _model()
    groups = lambda m: [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.003}]  # noqa: E731
    oa = TorchOptimizer(groups(a), baselines.Adam(lr=0.01))
    ob = torch.optim.Adam(groups(b), lr=0.01)
    _train(a, oa, 20, torch.optim.lr_scheduler.StepLR(oa, 5, gamma=0.5))
    _train(b, ob, 20, torch.optim.lr_scheduler.StepLR(ob, 5, gamma=0.5))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", [baselines.Adam(lr=0.01), LSTMOptimizer().double()],
                         ids=["adam", "lstm"])
def test_state_dict_round_trip(rule):
    """Interrupting after 10 steps, saving and restoring gives the same as 20 straight steps."""
    straight = _model()
    _train(straight, TorchOptimizer(straight.parameters(), rule), 20)

    first = _model()
    opt = TorchOptimizer(first.parameters(), rule)
    _train(first, opt, 10)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    second = _model(seed=5)
    second.load_state_dict(saved["model"])
    opt2 = TorchOptimizer(second.parameters(), rule)
    opt2.load_state_dict(saved["opt"])
    _train(second, opt2, 10)
    for pa, pb in zip(straight.parameters(), second.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_learned_optimizer_is_frozen_and_moves_parameters():
    model = _model()
    lstm = LSTMOptimizer(zero_head=False).double()  # untrained but not the no-op
    before = [p.clone() for p in model.parameters()]
    _train(model, TorchOptimizer(model.parameters(), lstm), 3)
    assert all(p.grad is None for p in lstm.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_a_changing_lr_keeps_one_rule_per_group():
    """200 ExponentialLR steps give 200 learning rates; only the latest rule is kept."""
    model = _model()
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.003}]
    opt = TorchOptimizer(groups, baselines.Adam(lr=0.01))
    _train(model, opt, 200, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99))
    assert len(opt._cache) == len(opt.param_groups) == 2
    lrs = [rule.lr for _, rule in opt._cache.values()]
    assert lrs == pytest.approx([0.01 * 0.99**199, 0.003 * 0.99**199])


def _one_step(opt, model, x):
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before)], before


def test_a_scheduler_scales_a_learned_optimizers_step():
    """lr is a multiplier of the learned step (1: the rule as trained); schedulers drive it."""
    x = torch.randn(8, 4, dtype=torch.float64)
    lstm = LSTMOptimizer(zero_head=False).double()
    reference = _model()
    plain = TorchOptimizer(reference.parameters(), lstm)
    assert plain.param_groups[0]["lr"] == 1.0 and plain.param_groups[0]["weight_decay"] == 0.0
    full, _ = _one_step(plain, reference, x)
    model = _model()
    opt = TorchOptimizer(model.parameters(), lstm)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.25)  # lr 1 -> 0.25 at once
    assert opt.param_groups[0]["lr"] == 0.25
    quarter, _ = _one_step(opt, model, x)
    for a, b in zip(quarter, full):
        torch.testing.assert_close(a, 0.25 * b, rtol=1e-12, atol=1e-15)
    # the setting survives a state-dict round trip
    opt.load_state_dict(_roundtrip(opt.state_dict()))
    assert opt.param_groups[0]["lr"] == 0.25


def test_decoupled_weight_decay_for_a_learned_optimizer():
    x = torch.randn(8, 4, dtype=torch.float64)
    lstm = LSTMOptimizer(zero_head=False).double()
    reference = _model()
    full, _ = _one_step(TorchOptimizer(reference.parameters(), lstm), reference, x)
    model = _model()
    opt = TorchOptimizer([{"params": model.parameters(), "lr": 0.5, "weight_decay": 0.1}],
                         lstm)
    steps, before = _one_step(opt, model, x)
    for a, b, p in zip(steps, full, before):
        torch.testing.assert_close(a, 0.5 * b - 0.5 * 0.1 * p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("group", "message"), [
    ({"lr": -0.1}, r"param_group\['lr'\] of TorchOptimizer\(LSTMOptimizer\) must lie in"),
    ({"weight_decay": "big"}, r"param_group\['weight_decay'\].* must be a number"),
])
def test_bad_step_scale_or_decay_of_a_learned_optimizer_is_a_value_error(group, message):
    model = _model()
    opt = TorchOptimizer([{"params": model.parameters(), **group}], LSTMOptimizer().double())
    model(torch.randn(2, 4, dtype=torch.float64)).sum().backward()
    with pytest.raises(ValueError, match=message):
        opt.step()


@pytest.mark.parametrize(
    ("saved", "target", "names"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), baselines.Adam(), ["Adam", "SGD"]),
        (lambda p: TorchOptimizer(p, baselines.SGD()), baselines.Adam(), ["Adam", "SGD"]),
        (lambda p: torch.optim.Adam(p), baselines.Nadam(), ["Nadam", "Adam"]),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
         baselines.Momentum(), ["Momentum", "NAG"]),
        (lambda p: torch.optim.Adam(p, decoupled_weight_decay=True, weight_decay=0.1),
         baselines.Adam(), ["Adam", "decoupled_weight_decay"]),
        (lambda p: torch.optim.Adagrad(p), baselines.RMSProp(), ["RMSProp", "Adagrad"]),
        (lambda p: torch.optim.Adam(p), LSTMOptimizer(), ["LSTMOptimizer", "Adam"]),
    ],
    ids=["sgd->adam", "l2l-sgd->adam", "adam->nadam", "nag->momentum", "adamw->adam",
         "adagrad->rmsprop", "adam->lstm"],
)
def test_loading_another_optimizers_state_is_a_clear_error(saved, target, names):
    model = _model()
    source = saved(model.parameters())
    _train(model, source, 2)
    opt = TorchOptimizer(model.parameters(), target)
    with pytest.raises(ValueError, match="cannot load this state dict") as error:
        opt.load_state_dict(source.state_dict())
    for name in names:
        assert name in str(error.value)


def test_rejects_something_that_is_not_an_l2l_optimizer():
    with pytest.raises(TypeError, match="BatchedOptimizer"):
        TorchOptimizer(_model().parameters(), torch.optim.SGD)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_contiguous_parameters_and_gradients(case):
    """A transposed parameter (and gradient) is stepped through a copy and written back."""
    ours, theirs, hp, extra = case
    torch.manual_seed(0)
    base = torch.randn(5, 3, dtype=torch.float64)
    a, b = nn.Parameter(base.t().contiguous().t()), nn.Parameter(base.clone())
    assert not a.is_contiguous()
    oa, ob = TorchOptimizer([a], ours(**hp)), theirs([b], **hp, **extra)
    for _ in range(10):
        grad = torch.randn(3, 5, dtype=torch.float64).t()  # (5, 3), not contiguous
        a.grad, b.grad = grad, grad.contiguous()
        oa.step()
        ob.step()
    assert torch.equal(a, b)


def test_optimizer_survives_deepcopy_and_pickle():
    """torch.optim pickles defaults, state and groups; the drop-in's rule comes along."""
    import copy
    import pickle

    model = _model()
    opt = TorchOptimizer(model.parameters(), baselines.Adam(lr=0.01))
    _train(model, opt, 3)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.rule == opt.rule
        assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


#: torch.optim does these rules' weight decay and parameter update in complex arithmetic, whose
#: ``add(x, alpha=c)`` rounds ``c * x`` before adding where the real view's kernel fuses the
#: two: the same algorithm, one rounding apart per step (float32: about 1e-7)
COMPLEX_ROUNDED = (baselines.SGD, baselines.Momentum, baselines.NAG, baselines.AdaDelta)


def _assert_close_complex(a, b, exact):
    if exact:
        assert torch.equal(a, b), (a - b).abs().max()
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _complex_problem(seed=0):
    """A complex parameter (non-contiguous, to exercise the write-back) and its loss."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 4, dtype=torch.complex64, generator=g)
    b = torch.randn(6, dtype=torch.complex64, generator=g)
    start = torch.randn(2, 4, dtype=torch.complex64, generator=g)
    return start, lambda z: ((a @ z[0] - b).abs() ** 2).sum() + (z[1].abs() ** 2).sum()


def _complex_steps(opt, z, loss_fn, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(z).backward()
        opt.step()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_complex_parameters_step_as_torch_optim_step_by_step(case):
    """torch.optim steps a complex parameter as its real view; so does the drop-in: the same
    parameter and the same complex state (keys, shapes, dtypes, values) after every step. Bit
    for bit, except where torch adds in complex arithmetic (see COMPLEX_ROUNDED)."""
    ours, theirs, hp, extra = case
    start, loss_fn = _complex_problem()
    za, zb = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    oa, ob = TorchOptimizer([za], ours(**hp)), theirs([zb], **hp, **extra)
    exact = ours not in COMPLEX_ROUNDED
    for _ in range(25):
        _complex_steps(oa, za, loss_fn, 1)
        _complex_steps(ob, zb, loss_fn, 1)
        _assert_close_complex(za, zb, exact)
        mine, torchs = oa.state_dict()["state"], ob.state_dict()["state"]
        assert mine.keys() == torchs.keys()
        for key, value in torchs.get(0, {}).items():
            assert (mine[0][key].shape, mine[0][key].dtype) == (value.shape, value.dtype), key
            _assert_close_complex(mine[0][key], value, exact)
    assert torch.is_complex(za) and not torch.equal(za.imag, start.imag)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_complex_state_dicts_move_from_torch_optim(case):
    ours, theirs, hp, extra = case
    start, loss_fn = _complex_problem()
    zb = nn.Parameter(start.clone())
    ob = theirs([zb], **hp, **extra)
    _complex_steps(ob, zb, loss_fn, 5)
    za = nn.Parameter(zb.detach().clone())
    oa = TorchOptimizer([za], ours(**hp))
    oa.load_state_dict(_roundtrip(ob.state_dict()))
    _complex_steps(oa, za, loss_fn, 5)
    _complex_steps(ob, zb, loss_fn, 5)
    _assert_close_complex(za, zb, ours not in COMPLEX_ROUNDED)


def test_adam_converges_on_a_complex_parameter_like_torch():
    """The issue's reproduction: 200 steps of Adam(lr=0.1) on |z|^2 reach ~1e-9, as torch's."""
    results = []
    for make in (lambda z: TorchOptimizer([z], baselines.Adam(lr=0.1)),
                 lambda z: torch.optim.Adam([z], lr=0.1)):
        torch.manual_seed(0)
        z = nn.Parameter(torch.randn(5, dtype=torch.complex64))
        _complex_steps(make(z), z, lambda z: (z.abs() ** 2).sum(), 200)
        results.append((z.abs() ** 2).sum().item())
    assert results[0] == results[1] < 1e-6


def test_a_learned_optimizer_steps_a_complex_parameter_as_its_real_view():
    """Re z and Im z are two coordinates, exactly as for a real parameter holding them."""
    lstm = LSTMOptimizer(zero_head=False)
    start, loss_fn = _complex_problem()
    z = nn.Parameter(start.clone())
    r = nn.Parameter(torch.view_as_real(start).clone())
    oz, orr = TorchOptimizer([z], lstm), TorchOptimizer([r], lstm)
    for _ in range(5):
        _complex_steps(oz, z, loss_fn, 1)
        _complex_steps(orr, r, lambda x: loss_fn(torch.view_as_complex(x)), 1)
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())
    assert not torch.equal(z.imag, start.imag)
    # its saved state loads back and continues identically
    z2 = nn.Parameter(z.detach().clone())
    again = TorchOptimizer([z2], lstm)
    again.load_state_dict(_roundtrip(oz.state_dict()))
    _complex_steps(again, z2, loss_fn, 3)
    _complex_steps(oz, z, loss_fn, 3)
    assert torch.equal(z2, z)


@pytest.mark.parametrize("rule", [baselines.Adam(lr=0.01), LSTMOptimizer()], ids=["adam", "lstm"])
@pytest.mark.parametrize("shape", [(3, 2), (7,)], ids=["same-size", "other-size"])
def test_state_of_another_shape_is_refused_at_load(rule, shape):
    """torch.optim fails at the first step; the drop-in refuses at load_state_dict, naming the
    parameter and both shapes (a same-size state would otherwise step silently)."""
    source = nn.Parameter(torch.randn(2, 3))
    opt = TorchOptimizer([source], rule)
    source.grad = torch.randn(2, 3)
    opt.step()
    target = nn.Parameter(torch.randn(*shape))
    fresh = TorchOptimizer([target], rule)
    with pytest.raises(ValueError, match=r"parameter 0 has shape \(.*\) but its saved state"):
        fresh.load_state_dict(opt.state_dict())
    fresh_ok = TorchOptimizer([nn.Parameter(torch.randn(2, 3))], rule)
    fresh_ok.load_state_dict(opt.state_dict())  # the right shape still loads


# -- many tensors, several groups, parameters without gradients --------------------------------


class _ManyTensors(nn.Module):
    """Tensors of many shapes (conv, norm, linear, embedding, a scalar), float32, as a real
    model's: the flat step concatenates them, so offsets fall anywhere in SIMD lanes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 5, 3)
        self.norm = nn.LayerNorm(5)
        self.fc1 = nn.Linear(5 * 2, 7)
        self.fc2 = nn.Linear(7, 3, bias=False)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.unused = nn.Parameter(torch.randn(4, 3))  # never gets a gradient

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)  # (B, 6, 4)
        x = self.norm(self.conv(x).transpose(1, 2)).flatten(1)  # (B, 10)
        return self.fc2(torch.tanh(self.fc1(x))) * self.scale


def _groups(model, rule_kind: str, hp: dict) -> list[dict]:
    """Three groups: the embedding and conv, the norm and head (another lr), the rest."""
    first = [*model.embed.parameters(), *model.conv.parameters()]
    second = [*model.norm.parameters(), *model.fc2.parameters()]
    rest = [p for p in model.parameters() if all(p is not q for q in first + second)]
    return [{"params": first}, {"params": second, "lr": hp.get("lr", 1e-3) * 0.5},
            {"params": rest}]


def _train_sparse(model, opt, steps: int) -> None:
    """Steps in which some parameters have no gradient (``grad is None``), changing which."""
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 11, (8, 4), generator=g)
    target = torch.randn(8, 3, generator=g)
    params = [p for p in model.parameters() if p is not model.unused]
    for step in range(steps):
        opt.zero_grad()
        ((model(tokens) - target) ** 2).mean().backward()
        for i, p in enumerate(params):
            if (i + step) % 4 == 0 and step % 3 != 2:  # every third step: all of them
                p.grad = None
        opt.step()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("list_chunk", [None, 12], ids=["one-call", "cache-groups"])
def test_many_tensors_several_groups_and_missing_grads_match_torch_bit_for_bit(
        case, list_chunk, monkeypatch):
    """float32 tensors of many shapes in three groups, some without a gradient at some steps:
    the flat step is torch.optim's step bit for bit, parameters and state (a parameter without
    a gradient is not moved and its state is not advanced, as in torch). Also when a baseline's
    group steps in several calls of a few tensors each (``flat_group.LIST_CHUNK``; 12 here),
    which must advance its step count once."""
    if list_chunk is not None:
        monkeypatch.setattr(flat_group, "LIST_CHUNK", list_chunk)
    ours, theirs, hp, extra = case
    torch.manual_seed(0)
    a = _ManyTensors()
    b = _ManyTensors()
    b.load_state_dict(a.state_dict())
    oa = TorchOptimizer(_groups(a, "l2l", hp), ours(**hp))
    ob = theirs(_groups(b, "torch", hp), **hp, **extra)
    _train_sparse(a, oa, 7)
    _train_sparse(b, ob, 7)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), (name, (pa - pb).abs().max())
    assert torch.equal(a.unused, b.unused)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"].keys() <= sb["state"].keys()
    for pid in sb["state"].keys() - sa["state"].keys():  # torch.optim.Adagrad's eager init
        assert float(sb["state"][pid]["step"]) == 0, pid
    for pid, state in sa["state"].items():
        state = sb["state"][pid]
        assert sa["state"][pid].keys() == state.keys(), pid
        for key, value in state.items():
            assert torch.equal(sa["state"][pid][key], value), (pid, key)
    # both go on identically after exchanging state dicts
    oa2 = TorchOptimizer(_groups(a, "l2l", hp), ours(**hp))
    oa2.load_state_dict(ob.state_dict())
    ob.load_state_dict(sa)
    _train_sparse(a, oa2, 3)
    _train_sparse(b, ob, 3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_a_parameter_without_a_gradient_keeps_its_state():
    """Its step count stays behind; the others' advance (torch.optim's behaviour)."""
    model = _ManyTensors()
    opt = TorchOptimizer(model.parameters(), baselines.Adam(lr=0.01))
    _train_sparse(model, opt, 2)
    steps = {name: float(opt.state[p]["step"]) for name, p in model.named_parameters()
             if p in opt.state}
    assert "unused" not in steps
    assert sorted(set(steps.values())) == [1.0, 2.0], steps
    before = model.fc1.weight.detach().clone()
    state = {k: v.clone() for k, v in opt.state[model.fc1.weight].items()}
    opt.zero_grad()
    model(torch.zeros(2, 4, dtype=torch.long)).sum().backward()
    model.fc1.weight.grad = None
    opt.step()
    assert torch.equal(model.fc1.weight, before)
    for key, value in opt.state[model.fc1.weight].items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("rule", [baselines.Adam(), LSTMOptimizer()], ids=["Adam", "LSTM"])
def test_a_gradient_of_another_shape_or_a_sparse_one_is_refused(rule):
    """A flat copy would broadcast a wrong-shaped gradient silently: named instead."""
    weight, bias = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(3))
    opt = TorchOptimizer([weight, bias], rule)
    weight.grad, bias.grad = torch.ones(3, 2), torch.ones(3)
    bias.data = torch.randn(4)  # torch checks shapes when .grad is set, not when .data is
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\) for a parameter of shape "
                                         r"\(4,\)"):
        opt.step()
    bias.data = torch.randn(3)
    bias.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="do not support sparse gradients"):
        opt.step()
    assert not opt.state  # nothing stepped
