"""The recurrent core shared by the coordinatewise learned optimizers (LSTM, RNNprop, ...).

A stack of LSTM layers applied to every coordinate independently: the weights are shared, and
each coordinate carries its own ``(h, c)`` per layer in the optimizer state, shaped
``(B, n, hidden)``. For ``B`` optimizees of ``n`` parameters one call runs ``B * n`` cells.

Two code paths compute the same function:

* differentiable (meta-training): one ``nn.LSTMCell`` per layer, whose autograd graph the
  meta-gradient estimators back-propagate through;
* frozen (evaluation, validation, the ``torch.optim`` drop-in, the "sequence" estimator's
  rollout): :func:`l2l.learned.fused_lstm.frozen_lstm_step`, chunked ``addmm`` + one compiled
  pointwise kernel per layer (``torch.lstm`` where compiling is off or small problems).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from l2l.interface import State
from l2l.learned.fused_lstm import (
    FROZEN_CHUNK,
    frozen_lstm_step,
    frozen_lstm_step_,
    lstm_sequence,
    stack_trajectory,
)

#: rows (optimizees) of at least this many coordinates take the fused frozen step one row at a
#: time in a population with per-row weights (measured: the batched matmul path was 2x slower on
#: the MNIST MLP's 15,910 coordinates and 6x faster than one by one on 10-D quadratics)
PER_ROW_FROZEN = 4096


class CoordinatewiseLSTM(nn.Module):
    """``num_layers`` LSTM layers of ``hidden_size`` units over ``(N, input_size)`` inputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int,
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.cells = nn.ModuleList()
        width = input_size
        for _ in range(num_layers):
            cell = nn.LSTMCell(width, hidden_size)
            with torch.no_grad():  # PyTorch's gate order is (input, forget, cell, output)
                cell.bias_ih[hidden_size: 2 * hidden_size] += forget_bias
            self.cells.append(cell)
            width = hidden_size
        self.output_size = width

    @property
    def num_layers(self) -> int:
        return len(self.cells)

    def init_state(self, B: int, n: int, like: Tensor, dtype: torch.dtype) -> State:
        zeros = like.new_zeros(B, n, self.hidden_size, dtype=dtype)
        state: State = {}
        for layer in range(self.num_layers):
            state[f"h{layer}"] = zeros
            state[f"c{layer}"] = zeros
        return state

    def forward(self, x: Tensor, state: State, B: int, n: int) -> tuple[Tensor, State]:
        """``x (B*n, input_size)`` -> top-layer output ``(B*n, output_size)`` and new state."""
        L, H = self.num_layers, self.hidden_size
        new_state: State = {}
        if not L:
            return x, new_state
        if per_row(self.cells[0].weight_ih):
            return self._forward_per_row(x.view(B, n, -1), state)
        frozen = not (torch.is_grad_enabled() and self.cells[0].weight_ih.requires_grad)
        if frozen:
            h0 = torch.stack([state[f"h{layer}"].reshape(B * n, H) for layer in range(L)])
            c0 = torch.stack([state[f"c{layer}"].reshape(B * n, H) for layer in range(L)])
            out, h, c = frozen_lstm_step(x, h0, c0, self._flat_weights())
            for layer in range(L):
                new_state[f"h{layer}"] = h[layer].view(B, n, H)
                new_state[f"c{layer}"] = c[layer].view(B, n, H)
            return out, new_state
        for layer, cell in enumerate(self.cells):
            hidden = (state[f"h{layer}"].reshape(B * n, H), state[f"c{layer}"].reshape(B * n, H))
            h, c = cell(x, hidden)
            new_state[f"h{layer}"] = h.view(B, n, H)
            new_state[f"c{layer}"] = c.view(B, n, H)
            x = h
        return x, new_state

    def _forward_per_row(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """:meth:`forward` with one set of weights per optimizee row (``x (B, n, F)``): the
        weights carry a trailing ``(B, 1)`` particle axis, as ``torch.func.functional_call``
        passes them for a population of perturbed copies (``l2l.truncated_step``). Small rows:
        one batched matmul per weight serves every particle (the gates are ``nn.LSTMCell``'s);
        rows of :data:`PER_ROW_FROZEN` coordinates or more, without autograd: the fused frozen
        step once per row (its compiled kernel beats the batched matmul's separate pointwise
        passes there)."""
        if x.shape[1] >= PER_ROW_FROZEN and not torch.is_grad_enabled():
            return self._frozen_per_row(x, state)
        new_state: State = {}
        for layer, cell in enumerate(self.cells):
            h, c = state[f"h{layer}"], state[f"c{layer}"]
            bias = _row_bias(cell.bias_ih) + _row_bias(cell.bias_hh)
            gates = torch.baddbmm(bias, x, _row_weight(cell.weight_ih)) + torch.bmm(
                h, _row_weight(cell.weight_hh))
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            new_state[f"h{layer}"], new_state[f"c{layer}"] = h, c
            x = h
        return x.reshape(-1, x.shape[-1]), new_state

    def _frozen_per_row(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        L, B = self.num_layers, x.shape[0]
        weights = self._flat_weights()
        outs, hs, cs = [], [], []
        for b in range(B):
            h0 = torch.stack([state[f"h{layer}"][b] for layer in range(L)])
            c0 = torch.stack([state[f"c{layer}"][b] for layer in range(L)])
            out, h, c = frozen_lstm_step(x[b], h0, c0, [w[..., b, 0].contiguous()
                                                        for w in weights])
            outs.append(out)
            hs.append(h)
            cs.append(c)
        h, c = torch.stack(hs, 1), torch.stack(cs, 1)  # (L, B, n, H)
        new_state = {}
        for layer in range(L):
            new_state[f"h{layer}"], new_state[f"c{layer}"] = h[layer], c[layer]
        return torch.cat(outs), new_state

    def frozen_chunks_(self, state: State, N: int, device: torch.device):
        """For an in-place frozen step over ``N`` coordinates: yields ``(lo, hi, step)`` per
        chunk of coordinates (:data:`FROZEN_CHUNK` on CPUs, for the caches; all at once
        elsewhere), where ``step(x)`` runs the layers on the chunk's inputs ``x (hi-lo, F)``,
        overwrites the chunk's ``h``/``c`` in ``state`` and returns the top output. Yields
        nothing when the state cannot be stepped in place (then use the pure ``update``): a
        learned optimizer's ``_step_`` is its input and output layers around this loop."""
        L, H = self.num_layers, self.hidden_size
        keys = [f"{kind}{layer}" for layer in range(L) for kind in "hc"]
        if not L or any(not state[k].is_contiguous() for k in keys):
            return
        seen: set[int] = set()
        for k in keys:  # a fresh state shares one zeros tensor: give each key its own
            if state[k].data_ptr() in seen:
                state[k] = state[k].clone()
            seen.add(state[k].data_ptr())
        hs = [state[f"h{layer}"].view(N, H) for layer in range(L)]
        cs = [state[f"c{layer}"].view(N, H) for layer in range(L)]
        weights = self._flat_weights()
        chunk = FROZEN_CHUNK if device.type == "cpu" else N
        for lo in range(0, N, chunk):
            hi = min(N, lo + chunk)
            yield lo, hi, lambda x, lo=lo, hi=hi: frozen_lstm_step_(
                x, [h[lo:hi] for h in hs], [c[lo:hi] for c in cs], weights)

    def sequence(self, x: Tensor, states: list[State]) -> Tensor:
        """Top-layer outputs ``(K, N, output_size)`` over ``x (K, N, input_size)``, where
        ``states`` are the ``K + 1`` states a rollout through :meth:`forward` went through; the
        backward is :mod:`l2l.learned.fused_lstm`'s (one matmul per weight over all steps)."""
        L = self.num_layers
        if not L:
            return x
        K, N, _ = x.shape
        H = self.hidden_size
        hs, cs = stack_trajectory(
            [[s[f"h{layer}"].reshape(N, H) for s in states] for layer in range(L)],
            [[s[f"c{layer}"].reshape(N, H) for s in states] for layer in range(L)])
        return lstm_sequence(x, hs[:, 0], cs[:, 0], self._flat_weights(), (hs, cs))

    def _flat_weights(self) -> list[Tensor]:
        """The cells' weights in ``torch.lstm``'s order (as ``nn.LSTM`` keeps them)."""
        return [w for cell in self.cells
                for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]


def per_row(weight: Tensor) -> bool:
    """Whether a 2-D weight (or 1-D bias) carries the particle axis ``(B, 1)`` of a population
    (``LearnedOptimizer.particle_axis``)."""
    return weight.dim() == 4


def _row_weight(weight: Tensor) -> Tensor:
    """``(out, in, B, 1)`` -> ``(B, in, out)``, for ``bmm`` of ``(B, n, in)`` inputs."""
    return weight[..., 0].permute(2, 1, 0)


def _row_bias(bias: Tensor) -> Tensor:
    """``(out, B, 1)`` -> ``(B, 1, out)``."""
    return bias[..., 0].T.unsqueeze(1)


def per_row_linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer(x)`` for ``x (B, n, in)`` when the layer's weights carry the particle axis."""
    out = torch.bmm(x, _row_weight(layer.weight))
    return out if layer.bias is None else out + _row_bias(layer.bias)


def zero_linear(in_features: int, out_features: int = 1, zero: bool = True) -> nn.Linear:
    """An output head that starts at zero (so the untrained optimizer is its anchor, or the
    no-op): a random head pushes every coordinate the same way, which saturates the paper's
    sigmoid MLP within a few steps and leaves the meta-gradient vanishing."""
    head = nn.Linear(in_features, out_features)
    if zero:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return head
