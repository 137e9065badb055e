"""The drop-in's flat step (``l2l.flat_group``) against the per-tensor loop it replaces.

The drop-in steps every param group as one flat vector, bound to the group's layout; before, it
called the rule once per parameter tensor, bound to that tensor's layout. For every learned
optimizer (each zoo entry and ``mlp_lopt``, whose features are normalised per tensor) both give
the same steps on a model of many tensors, with several param groups (a step scale and weight
decay among them) and parameters that have no gradient at some steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import l2l.pretrained as zoo
from l2l import flat_group
from l2l.layout import ParamLayout
from l2l.learned.mlp_lopt import MLPLOpt
from l2l.torch_optimizer import TorchOptimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 5), nn.LayerNorm(5), nn.Linear(5, 2, bias=False))


def _scaled(rule) -> bool:
    """Whether the drop-in gives ``rule`` a step scale and weight decay (no ``lr`` of its own:
    adam_anchored's ``lr`` is its own hyperparameter)."""
    return "lr" not in rule.hyperparameters()


def _groups(params: list[nn.Parameter], scaled: bool) -> list[dict]:
    middle = {"lr": 0.5, "weight_decay": 0.1} if scaled else {}
    return [{"params": params[:3]}, {"params": params[3:6], **middle}, {"params": params[6:]}]


def _grads(model: nn.Module, step: int) -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(4, 1, 6, 6, generator=g)
    model.zero_grad()
    model(x).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    if step == 1:  # the norm weight and the last weight have no gradient at this step
        grads[1] = grads[-1] = None
    return grads


def _per_tensor_loop(rule, model: nn.Module, steps: int) -> None:
    """The former drop-in step: each tensor on its own, bound to its own layout, its own state;
    group 2 (parameters 3 to 5) with step scale 0.5 and decoupled weight decay 0.1 where the
    drop-in adds those."""
    params = list(model.parameters())
    states: dict[int, dict] = {}
    for step in range(steps):
        grads = _grads(model, step)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                if g is None:
                    continue
                bound = rule.with_layout(ParamLayout.from_tensors([p]))
                flat = p.view(1, -1)
                state = states.setdefault(i, bound.init(flat))
                before = flat.clone()
                bound.step_(g.reshape(1, -1), state, flat)
                if 3 <= i < 6 and _scaled(rule):
                    flat.copy_(before + 0.5 * (flat - before) - 0.5 * 0.1 * before)


def _drop_in(rule, model: nn.Module, steps: int) -> TorchOptimizer:
    opt = TorchOptimizer(_groups(list(model.parameters()), _scaled(rule)), rule)
    for step in range(steps):
        for p, g in zip(model.parameters(), _grads(model, step)):
            p.grad = g
        opt.step()
    return opt


RULES = [*zoo.names(), "mlp_lopt w4", "mlp_lopt w8 mup"]


def _rule(name: str):
    if name.startswith("mlp_lopt"):
        torch.manual_seed(1)
        opt = MLPLOpt(hidden_size=int(name.split()[1][1:]), mup=name.endswith("mup"),
                      zero_head=False, step_mult=0.01)
        return opt
    return zoo.load(name)


#: the chunked path for one of each kind (the other zoo entries share their classes)
CHUNKED = ["lstm-mnist", "rnnprop-mnist", "adam-anchored-mnist", "learnable-adam-mnist",
           "mlp_lopt w4", "mlp_lopt w8 mup"]


@pytest.mark.parametrize(("name", "chunk"), [(n, None) for n in RULES] + [
    (n, 40) for n in CHUNKED])
def test_the_flat_step_equals_the_per_tensor_loop(name, chunk, monkeypatch):
    """Also when a group steps in chunks of whole tensors (``flat_group.CHUNK``; 40 here: the
    model's 3x1x3x3 + 3 + 3, then 80, 5, ... stand alone or together)."""
    if chunk is not None:
        monkeypatch.setattr(flat_group, "CHUNK", chunk)
    rule = _rule(name)
    reference, flat = _model(), _model()
    _per_tensor_loop(rule, reference, 3)
    opt = _drop_in(rule, flat, 3)
    start = list(_model().parameters())
    for (key, a), b, p0 in zip(flat.named_parameters(), reference.parameters(), start):
        moved = (b - p0).abs().max().item()
        assert moved > 0, (name, key)
        torch.testing.assert_close(a - p0, b - p0, rtol=1e-4, atol=1e-5 * moved,
                                   msg=f"{name}: {key}")
    # each bucket is bound to the layout of its tensors; the buckets cover the group
    for index, (count, buckets) in opt._flat.items():
        assert count == len(opt.param_groups[index]["params"])
        assert sorted(i for _, members in buckets for i in members) == list(range(count))
        for bucket, _ in buckets:
            assert bucket.layout == ParamLayout.from_tensors(bucket.params)
            assert [hi - lo for lo, hi, _ in bucket.chunks] == [
                lay.numel for _, _, lay in bucket.chunks]
            if chunk is not None and bucket.n > chunk and len(bucket.params) > 1:
                assert len(bucket.chunks) > 1
            if rule.uses_layout:
                for lo, hi, bound in bucket._bound_chunks(
                        opt._rule_for(index, opt.param_groups[index])):
                    inside = [p for p, off in zip(bucket.params, bucket.layout.offsets)
                              if lo <= off < hi]
                    assert bound.layout_for(hi - lo).shapes == tuple(
                        tuple(p.shape) for p in inside)


def test_a_group_steps_as_one_rule_call():
    """One ``_step_`` per bucket, not one per tensor; a parameter that skipped a step (no
    gradient) has its own step count from then on, so it steps in a bucket of its own."""
    calls = []
    rule = MLPLOpt(hidden_size=4)

    class Counting(type(rule)):
        def _step_(self, grads, state, params):
            calls.append(params.shape[1])
            super()._step_(grads, state, params)

    counting = Counting(hidden_size=4)
    model = _model()
    opt = _drop_in(counting, model, 1)
    n = [sum(p.numel() for p in g["params"]) for g in opt.param_groups]
    assert calls == n
    calls.clear()
    for p, g in zip(model.parameters(), _grads(model, 1)):
        p.grad = g
    opt.step()  # two parameters without gradients
    assert len(calls) == 3
    calls.clear()
    for p, g in zip(model.parameters(), _grads(model, 2)):
        p.grad = g
    opt.step()  # those two are one step behind now: a bucket each in their groups
    assert len(calls) == 5 and sum(calls) == sum(n)
