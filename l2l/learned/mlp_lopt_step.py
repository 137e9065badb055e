"""``mlp_lopt``'s frozen step, in place: the path of the drop-in and of evaluation.

The pure ``MLPLOpt.update`` is written for autograd: it builds all 13 feature planes, normalises
each over its tensor through means broadcast back to every coordinate (a ``cat`` of ``n``
coordinates per statistic), adds the biases as broadcasts and returns every moment as a new
tensor, which the drop-in then copies back into its state. Those passes over memory cost far
more than the 76 multiply-adds of a width-4 network. This step computes the same update
(``tests/test_mlp_lopt.py`` holds it to ``update`` step by step, state included) with fewer:

* the moments advance in place; Adafactor's row and column means are reduced on each tensor's
  matrix view and broadcast into the state by the ``lerp_`` itself;
* the elementwise features of the whole vector are written straight into one ``(B, F + 1, n)``
  buffer (``out=``), so Python's cost per tensor is a handful of calls, not one per feature;
* the per-tensor normaliser ``x / rms(x)`` is folded into the first layer's weights,
  ``(W diag(1 / rms)) x``: an ``(H, F)`` product per tensor instead of a pass over ``F n``;
  ``scale_feature``'s input, one value per tensor, joins the first layer's bias the same way;
* every bias rides in its GEMM on a row of ones, and the network runs on slices of
  ``FROZEN_CHUNK`` coordinates, so its hidden units stay in cache; the parameter is updated by
  one ``addcmul_`` per slice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.interface import State

#: keeps the normaliser and the factored estimate finite for all-zero features; far below
#: the mean square of every (scale-free) feature while |g| > ~1e-12
TINY = 1e-30
#: what ``scale_feature`` adds to a tensor's parameter RMS: a tensor at zero reads -3, not -inf
SCALE_FLOOR = 1e-3
#: coordinates per slice of a frozen step's network: its hidden units stay in cache, and a
#: 1M-parameter tensor does not allocate 2 x 32 x 1M hidden activations at once
FROZEN_CHUNK = 1 << 15


def fusable(rule, grads: Tensor, state: State, params: Tensor) -> bool:
    """Whether :func:`frozen_step` applies: plain (not per-particle) weights, one dtype
    throughout and contiguous rows it can update in place."""
    dtype = rule.head.weight.dtype
    tensors = [grads, params, *(state[k] for k in rule._moment_keys())]
    return (rule.input.weight.dim() == 2 and all(t.dtype == dtype for t in tensors)
            and all(t.stride(-1) == 1 for t in tensors))


def _matmul(weight: Tensor, x: Tensor, out: Tensor | None = None) -> Tensor:
    """``weight (B, out, in) @ x (B, in, N)``, into ``out`` if given: one GEMM for one
    instance (faster than ``bmm`` at these shapes), ``bmm`` for several."""
    if x.shape[0] == 1:
        result = torch.mm(weight[0], x[0], out=None if out is None else out[0])
        return result.unsqueeze(0)
    return torch.bmm(weight, x, out=out)


def _constant_layers(rule, B: int) -> list[Tensor]:
    """The hidden and head layers as ``[W | b]`` matrices for :func:`_matmul`, expanded over
    ``B``: made once and kept on the rule while its weights stay the same (the drop-in steps
    many chunks a step with a frozen rule; a changed weight bumps its ``_version``)."""
    modules = (*rule.hidden, rule.head)
    key = (B, tuple((m.weight.data_ptr(), m.bias.data_ptr(), m.weight._version, m.bias._version)
                    for m in modules))
    cached = rule.__dict__.get("_frozen_layers")
    if cached is None or cached[0] != key:
        layers = [torch.cat([m.weight, m.bias.unsqueeze(1)], dim=1).expand(B, -1, -1)
                  for m in modules]
        cached = rule.__dict__["_frozen_layers"] = (key, layers)
    return cached[1]


def _sizes(layout, like: Tensor) -> tuple[Tensor, Tensor]:
    """The tensors' sizes as an index tensor and as ``like``'s dtype (at least 1), cached."""
    key = ("mlp_lopt_sizes", like.dtype, str(like.device))
    cached = layout._cache.get(key)
    if cached is None:
        sizes = torch.tensor(layout.sizes, device=like.device)
        cached = layout._cache[key] = (sizes, sizes.to(like.dtype).clamp_(min=1))
    return cached


def _pieces(layout, n: int) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """The network's slices of at most ``FROZEN_CHUNK`` coordinates, ``(lo, hi, pieces)``, each
    piece ``(tensor index, start, end)`` the part of one tensor inside the slice (cached on the
    layout: the drop-in steps the same layouts every step)."""
    key = ("mlp_lopt_pieces", FROZEN_CHUNK)
    cached = layout._cache.get(key)
    if cached is None:
        cached = []
        for lo in range(0, n, FROZEN_CHUNK):
            hi = min(n, lo + FROZEN_CHUNK)
            pieces = [(i, max(lo, off), min(hi, off + size))
                      for i, (off, size) in enumerate(zip(layout.offsets, layout.sizes))
                      if off < hi and off + size > lo]
            cached.append((lo, hi, pieces))
        layout._cache[key] = cached
    return cached


@torch.no_grad()
def frozen_step(rule, grads: Tensor, state: State, params: Tensor) -> None:
    """``params += rule.update(grads, state, params)[0]`` and ``state`` advanced, in place.

    Elementwise features are computed over the whole vector at once; only Adafactor's
    reductions, the normaliser's sums of squares and the first layer go tensor by tensor, so
    the Python cost per tensor is a handful of calls."""
    cfg = rule.config
    B, n = grads.shape
    layout = rule.layout_for(n)
    dtype = rule.head.weight.dtype
    decays = cfg["momentum_decays"]
    K = len(decays)
    b1, b2, fd, eps = cfg["anchor_beta1"], cfg["rms_decay"], cfg["factored_decay"], cfg["eps"]
    step = state["step"] + 1
    t = step.to(torch.float64)
    state["step"] = step

    def bias(decay: float) -> Tensor:
        return (1 - decay ** t).to(dtype)

    g = grads
    # the normalised planes; the scale feature is one value per tensor: a bias of the first layer
    F = rule.num_features - (1 if cfg["scale_feature"] else 0)
    x = torch.empty(B, F + 1, n, dtype=dtype, device=g.device)
    # the moments, in place, and the elementwise feature planes
    x[:, 0] = g
    x[:, 1] = params
    for k, decay in enumerate(decays):
        torch.lerp(state[f"m{k}"], g, 1 - decay, out=x[:, 2 + k])
        state[f"m{k}"].copy_(x[:, 2 + k])
    if rule.anchor_key == "anchor_m":
        state["anchor_m"].lerp_(g, 1 - b1)
    g2 = g * g
    state["v"].lerp_(g2, 1 - b2)
    g2.add_(TINY)
    v_hat, inv_rms = x[:, 2 + K], x[:, 3 + 2 * K]
    torch.div(state["v"], bias(b2), out=v_hat)
    torch.sqrt(v_hat, out=inv_rms)
    inv_rms.add_(eps).reciprocal_()
    for k in range(K):
        torch.mul(x[:, 2 + k], inv_rms, out=x[:, 3 + K + k])
    # Adafactor's row and column means, tensor by tensor, broadcast into the state by lerp_
    row_means = []
    for off, size, (rows, cols) in zip(layout.offsets, layout.sizes, layout.matrix_shapes):
        g2m = g2[:, off:off + size].view(B, rows, cols)
        row = state["v_row"][:, off:off + size].view(B, rows, cols)
        col = state["v_col"][:, off:off + size].view(B, rows, cols)
        if cols == 1:  # a vector: each row is one coordinate
            row.lerp_(g2m, 1 - fd)
        else:
            row.lerp_(g2m.mean(dim=2, keepdim=True).expand_as(row), 1 - fd)
        col.lerp_(g2m.mean(dim=1, keepdim=True).expand_as(col), 1 - fd)
        row_means.append(row.mean(dim=(1, 2)) if size else row.new_zeros(B))
    row_mean = torch.stack(row_means, dim=1).add_(TINY)  # (B, T): each tensor's mean row
    sizes_index, sizes = _sizes(layout, g)
    if len(layout) > 1:
        row_mean = row_mean.repeat_interleave(sizes_index, dim=1)
    # v^, r and c are ~g^2: over the tensor's mean row they are O(1) (see MLPLOpt._features)
    row_plane, col_plane, factored = x[:, 4 + 2 * K], x[:, 5 + 2 * K], x[:, 6 + 2 * K]
    v_hat.div_(row_mean)
    torch.div(state["v_row"], row_mean, out=row_plane)
    torch.div(state["v_col"], row_mean, out=col_plane)
    torch.mul(row_plane, state["v_col"], out=factored)
    factored.div_(bias(fd)).sqrt_().add_(eps)
    torch.div(g, factored, out=factored)
    # the normaliser x / rms(x) over each tensor, folded into the first layer's weights
    squares = torch.stack([torch.linalg.vector_norm(x[:, :F, off:off + size], dim=2)
                           for off, size in zip(layout.offsets, layout.sizes)], dim=1)
    mean_squares = squares.square_().div_(sizes.view(1, -1, 1))  # (B, T, F)
    T = len(layout)
    b_first = rule.input.bias.expand(B, -1)
    times = rule._times(t.to(dtype), state, {})
    if times is not None:  # the per-instance time inputs: a bias of the first layer
        b_first = b_first + times @ rule.time.weight.T
    b_first = b_first.view(B, 1, -1).expand(B, T, -1)  # (B, T, H)
    if cfg["scale_feature"]:  # log10 rms(p) per tensor (plane 1 is p): a per-tensor bias
        p_scale = torch.log10(mean_squares[:, :, 1].sqrt() + SCALE_FLOOR)  # (B, T)
        b_first = b_first + p_scale.unsqueeze(2) * rule.input.weight[:, F]
    scale = torch.rsqrt(mean_squares.add_(TINY))
    # every bias rides in its GEMM on a row of ones (a bias added to the output would be one
    # more pass over it): x's last plane, and a last row of each hidden buffer
    x[:, F].fill_(1.0)
    w_first = torch.cat([rule.input.weight[:, :F] * scale.unsqueeze(2),
                         b_first.unsqueeze(3)], dim=3)  # (B, T, H, F + 1)
    layers = _constant_layers(rule, B)
    anchor = (x[:, 3 + K + decays.index(b1)] if rule.anchor_key != "anchor_m"
              else state["anchor_m"] * inv_rms)
    anchor_coef = cfg["anchor_scale"] / bias(b1)  # (B, 1): Adam's term is m / bias1 * inv_rms
    step_scale = rule._step_scale(layout, x) if cfg["mup"] else None
    H = rule.input.weight.shape[0]
    width = min(n, FROZEN_CHUNK)
    hidden = [x.new_empty(B, H + 1, width) for _ in range(min(2, len(layers)))]
    for buffer in hidden:
        buffer[:, H].fill_(1.0)
    for lo, hi, pieces in _pieces(layout, n):
        h = hidden[0][..., :hi - lo]
        for i, a, b in pieces:
            _matmul(w_first[:, i], x[..., a:b], out=h[:, :H, a - lo:b - lo])
        for k, weight in enumerate(layers[:-1]):
            h[:, :H].relu_()
            nxt = hidden[(k + 1) % 2][..., :hi - lo]
            _matmul(weight, h, out=nxt[:, :H])
            h = nxt
        h[:, :H].relu_()
        out = _matmul(layers[-1], h)
        direction, size_ = out[:, 0], out[:, 1]
        direction.addcmul_(anchor[:, lo:hi], anchor_coef)
        size_.mul_(cfg["exp_mult"]).exp_()
        if step_scale is None:
            size_.mul_(-cfg["step_mult"])
        else:
            size_.mul_(step_scale[lo:hi])
        params[:, lo:hi].addcmul_(direction, size_)
