"""A multi-layer LSTM over a whole sequence with a hand-written backward, for meta-training.

In the first-order setting the coordinatewise optimizer's inputs ``x_t`` are constants w.r.t.
its weights, so the K steps of an unroll are one sequence-model evaluation over stored inputs
``(K, N, F)``. The rollout runs the frozen ``torch.lstm`` kernel step by step and keeps every
``h``/``c`` (they are the state anyway); the meta-gradient then needs no second forward pass:

* the gate pre-activations of all K steps come from the stored ``h``: one matmul per layer over
  ``K*N`` rows, instead of K small ones;
* back-propagation through time only runs the recurrence ``dh_{t-1} = dgates_t W_hh``, with the
  gate derivatives (activation recomputed) fused into one pointwise function per step, which is
  ``torch.compile``-d when a C++ compiler is available (eager otherwise, same numbers);
* each weight gradient is one matmul over all steps: ``dW_ih = dG^T X``, ``dW_hh = dG^T H``.

Gate order is PyTorch's ``(input, forget, cell, output)``; weights are ``nn.LSTM``'s flat list
``[W_ih, W_hh, b_ih, b_hh] * num_layers``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from l2l.env.runtime import COMPILE_MIN_COORDS  # (a module attribute here too: benchmarks patch it)

#: "auto" (compile the pointwise steps if possible, else eager), "1" (same) or "0" (eager)
COMPILE_ENV = "L2L_FUSED_COMPILE"
#: coordinates per chunk in the frozen step: the gate buffer ``(chunk, 4H)`` then stays ~5 MB
#: (cache- and allocator-friendly) instead of ``4H`` floats per coordinate of a million-parameter
#: model, freshly page-faulted at every step; memory stays proportional to the state. Measured
#: on a 1M-parameter step (1 thread): 4k 0.75 s, 8k 0.71, 16k 0.69, 32k 0.71, 64k 0.95.
FROZEN_CHUNK = 16384


def _cell_forward(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM cell's pointwise part: pre-activations ``(N, 4H)`` and ``c`` -> ``(h, c')``."""
    H = c.shape[-1]
    i = torch.sigmoid(gates[:, :H])
    f = torch.sigmoid(gates[:, H:2 * H])
    g = torch.tanh(gates[:, 2 * H:3 * H])
    o = torch.sigmoid(gates[:, 3 * H:])
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def _cell_backward(pre: Tensor, c_prev: Tensor, c: Tensor, dout: Tensor, dh_rec: Tensor,
                   dc: Tensor) -> Tensor:
    """One step back: the gate pre-activations ``pre (N, 4H)`` are *overwritten* by their
    gradient (no new ``(K, N, 4H)`` buffer: fresh large allocations cost page faults that were a
    third of the time); returns ``dc_{t-1}``. ``dh = dout + dh_rec`` is the gradient at ``h_t``."""
    H = c.shape[-1]
    i = torch.sigmoid(pre[:, :H])
    f = torch.sigmoid(pre[:, H:2 * H])
    g = torch.tanh(pre[:, 2 * H:3 * H])
    o = torch.sigmoid(pre[:, 3 * H:])
    tc = torch.tanh(c)
    dh = dout + dh_rec
    dcc = dc + dh * o * (1 - tc * tc)
    pre.copy_(torch.cat([dcc * g * i * (1 - i), dcc * c_prev * f * (1 - f),
                         dcc * i * (1 - g * g), dh * tc * o * (1 - o)], dim=1))
    return dcc * f


def compile_enabled() -> bool:
    """Whether the fused kernels may be compiled (``$L2L_FUSED_COMPILE``, default on)."""
    return os.environ.get(COMPILE_ENV, "auto").lower() not in ("0", "false", "no", "off")


class _Kernel:
    """A pointwise function, ``torch.compile``-d on first use for large inputs (one fused loop
    instead of ~15 passes over memory); eager for small ones, under autograd, when disabled,
    and after a compile failure (e.g. no C++ compiler: one warning, then eager for good)."""

    failed = False  #: shared: one failure (no compiler) switches every kernel to eager

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.compiled: Callable | None = None

    def available(self, coords: int) -> bool:
        return not _Kernel.failed and coords >= COMPILE_MIN_COORDS and compile_enabled()

    def __call__(self, *args: Tensor):
        if not self.available(args[0].shape[0]) or torch.is_grad_enabled() and any(
                a.requires_grad for a in args):
            return self.fn(*args)
        if self.compiled is None:
            from l2l.env.runtime_cache import enable_compile_cache

            enable_compile_cache()
            self.compiled = torch.compile(self.fn)  # static, then dynamic on a new shape
        try:
            return self.compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
            warnings.warn(f"torch.compile of l2l's fused LSTM kernels failed "
                          f"({type(error).__name__}: {str(error)[:200]}); running them eagerly",
                          RuntimeWarning, stacklevel=2)
            _Kernel.failed = True
            return self.fn(*args)


cell_backward = _Kernel(_cell_backward)
cell_forward = _Kernel(_cell_forward)


def frozen_lstm_step(x: Tensor, h0: Tensor, c0: Tensor,
                     weights: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the multi-layer LSTM without autograd: ``x (N, F)``, ``h0, c0 (L, N, H)`` ->
    top output ``(N, H)`` and the new ``h, c (L, N, H)`` (the output is a view of ``h``).

    With the compiled cell (large N): per chunk of :data:`FROZEN_CHUNK` coordinates and layer,
    one ``addmm`` for the gates and one fused pointwise kernel, about 2x faster than
    ``torch.lstm``'s CPU kernel; otherwise (and on GPUs) ``torch.lstm`` itself, the same
    numbers to rounding."""
    L, N, H = h0.shape
    if x.device.type != "cpu" or not cell_forward.available(min(N, FROZEN_CHUNK)):
        # (on GPUs cuDNN's fused LSTM is the fast path; the chunking is for CPU caches)
        _, h, c = torch.lstm(x[None], (h0, c0), list(weights), True, L, 0.0, False, False,
                             False)
        return h[-1], h, c
    h, c = torch.empty_like(h0), torch.empty_like(c0)
    gates = x.new_empty(min(N, FROZEN_CHUNK), 4 * H)
    biases = [weights[4 * layer + 2] + weights[4 * layer + 3] for layer in range(L)]
    for lo in range(0, N, FROZEN_CHUNK):
        hi = min(N, lo + FROZEN_CHUNK)
        inp = x[lo:hi]
        for layer in range(L):
            w_ih, w_hh = weights[4 * layer], weights[4 * layer + 1]
            g = torch.addmm(biases[layer], inp, w_ih.t(), out=gates[:hi - lo])
            g.addmm_(h0[layer, lo:hi], w_hh.t())
            h_new, c_new = cell_forward(g, c0[layer, lo:hi])
            h[layer, lo:hi] = h_new
            c[layer, lo:hi] = c_new
            inp = h_new
    return h[-1], h, c


_WORKSPACE: dict[tuple, Tensor] = {}


def _workspace(name: str, rows: int, cols: int, like: Tensor) -> Tensor:
    return _buffer(name, (rows, cols), like)


def _buffer(name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A reused ``(rows, cols)`` scratch buffer (one per shape): meta-training asks for the same
    shape every unroll, and a fresh 100 MB tensor costs more in page faults than its matmul.
    Not thread-safe, like the rest of meta-training; its contents never outlive one backward."""
    buffer = _WORKSPACE.get(name)
    if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype \
            or buffer.device != like.device:
        buffer = _WORKSPACE[name] = like.new_empty(shape)
    return buffer


_TRAJECTORY_FILLS = [0]  #: how often the shared trajectory buffers were refilled


def stack_trajectory(hs: Sequence[Sequence[Tensor]],
                     cs: Sequence[Sequence[Tensor]]) -> tuple[Tensor, Tensor]:
    """``hs[layer][t]`` (each ``(N, H)``) stacked into ``(L, T, N, H)`` (and ``cs`` alike) in
    reused buffers: two ~50 MB fresh stacks per unroll cost more in page faults than the
    matmuls that read them. A backward whose buffers were refilled since its forward (a second
    ``lstm_sequence`` over a rollout before the first one's backward) raises instead of using
    them."""
    like = hs[0][0]
    shape = (len(hs), len(hs[0]), *like.shape)
    h_buf, c_buf = _buffer("traj_h", shape, like), _buffer("traj_c", shape, like)
    for layer in range(len(hs)):
        torch.stack(list(hs[layer]), out=h_buf[layer])
        torch.stack(list(cs[layer]), out=c_buf[layer])
    _TRAJECTORY_FILLS[0] += 1
    return h_buf, c_buf


def lstm_trajectory(x: Tensor, h0: Tensor, c0: Tensor,
                    weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Every layer's ``h`` and ``c`` at every step, ``(L, K+1, N, H)`` each (index 0: the
    initial state), by the frozen ``torch.lstm`` kernel one step at a time (as the rollout)."""
    L = h0.shape[0]
    hs, cs = [h0], [c0]
    h, c = h0, c0
    with torch.no_grad():
        for t in range(x.shape[0]):
            _, h, c = torch.lstm(x[t:t + 1], (h, c), list(weights), True, L, 0.0, False,
                                 False, False)
            hs.append(h)
            cs.append(c)
    return torch.stack(hs, 1), torch.stack(cs, 1)


def frozen_lstm_step_(x: Tensor, hs: Sequence[Tensor], cs: Sequence[Tensor],
                      weights: Sequence[Tensor]) -> Tensor:
    """:func:`frozen_lstm_step` *in place* on one chunk: ``hs[layer], cs[layer] (N, H)`` are
    overwritten by the new state; returns the top layer's new ``h`` (a view of ``hs[-1]``).
    Used by the in-place ``step_`` (the ``torch.optim`` drop-in, evaluation): no state-sized
    allocation per step, so memory stays that of the state and nothing is page-faulted anew."""
    L = len(hs)
    _, h, c = frozen_lstm_step(x, torch.stack(list(hs)), torch.stack(list(cs)), weights)
    for layer in range(L):
        hs[layer].copy_(h[layer])
        cs[layer].copy_(c[layer])
    return hs[-1]


class LSTMSequence(torch.autograd.Function):
    """Top-layer outputs ``(K, N, H)`` of an ``L``-layer LSTM over ``x (K, N, F)``."""

    @staticmethod
    def forward(ctx, x: Tensor, h0: Tensor, c0: Tensor, hs: Tensor | None, cs: Tensor | None,
                *weights: Tensor) -> Tensor:
        if hs is None or cs is None:
            hs, cs = lstm_trajectory(x.detach(), h0.detach(), c0.detach(),
                                     [w.detach() for w in weights])
        shared = hs.data_ptr() == getattr(_WORKSPACE.get("traj_h"), "data_ptr", lambda: -1)()
        ctx.fills = _TRAJECTORY_FILLS[0] if shared else None
        ctx.save_for_backward(x, hs, cs, *weights)
        return hs[-1, 1:].clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.fills is not None and ctx.fills != _TRAJECTORY_FILLS[0]:
            raise RuntimeError("the LSTM trajectory buffers were refilled by a later "
                               "sequence_updates before this one's backward; run the backward "
                               "of each unroll before replaying the next")
        x, hs, cs, *weights = ctx.saved_tensors
        L, K1, N, H = hs.shape
        K = K1 - 1
        grads: list[Tensor | None] = [None] * (4 * L)
        dh0, dc0 = torch.empty_like(hs[:, 0]), torch.empty_like(cs[:, 0])
        dout = grad_out
        for layer in reversed(range(L)):
            w_ih, w_hh, b_ih, b_hh = weights[4 * layer: 4 * layer + 4]
            inp = (x if layer == 0 else hs[layer - 1, 1:]).reshape(K * N, -1)
            h_prev = hs[layer, :-1].reshape(K * N, H)
            # all K steps' gate pre-activations at once, from the stored hidden states
            dG = _workspace("gates", K * N, 4 * H, x)
            torch.addmm(b_ih + b_hh, inp, w_ih.t(), out=dG).addmm_(h_prev, w_hh.t())
            pre = dG.view(K, N, 4 * H)
            c = cs[layer]
            dh_rec = torch.zeros_like(c[0])
            dc = torch.zeros_like(c[0])
            for t in reversed(range(K)):
                dc = cell_backward(pre[t], c[t], c[t + 1], dout[t], dh_rec, dc)
                dh_rec = pre[t] @ w_hh  # pre[t] now holds d gates_t
            dh0[layer], dc0[layer] = dh_rec, dc
            # each weight gradient: one matmul over all K steps (as (in^T dG)^T: MKL is 10x
            # slower on dG^T in with a 2-column ``in``)
            grads[4 * layer] = (inp.t() @ dG).t()
            grads[4 * layer + 1] = (h_prev.t() @ dG).t()
            db = dG.sum(0)
            grads[4 * layer + 2], grads[4 * layer + 3] = db, db.clone()
            if layer or ctx.needs_input_grad[0]:
                into = _workspace(f"dx{layer % 2}", K * N, inp.shape[1], x) if layer else None
                dout = torch.mm(dG, w_ih, out=into).view(K, N, -1)
        return (dout if ctx.needs_input_grad[0] else None, dh0, dc0, None, None, *grads)


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, weights: Sequence[Tensor],
                  trajectory: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Top-layer ``h`` of every step, ``(K, N, H)``, differentiable in ``x``, the initial state
    and ``weights`` through :class:`LSTMSequence`'s hand-written backward.

    ``trajectory``: the ``(hs, cs)`` of :func:`lstm_trajectory` if the caller already ran the
    sequence (the meta-training rollout did): then nothing is recomputed forward."""
    hs, cs = trajectory if trajectory is not None else (None, None)
    return LSTMSequence.apply(x, h0, c0, hs, cs, *weights)
