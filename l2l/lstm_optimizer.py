"""The learned optimizer: a coordinatewise LSTM (Andrychowicz et al., 2016).

One small network is applied to every scalar parameter of the optimizee independently: its
weights are shared by all coordinates, and each coordinate carries its own recurrent state in the
optimizer state. For a batch of ``B`` optimizees with ``n`` parameters the cells run on a batch of
``B * n`` coordinates, so one call covers every coordinate of every instance.

    features = preprocess(grad)                       (see l2l.preprocessing)
    h_l, c_l = LSTMCell_l(h_{l-1}, (h_l, c_l))        l = 1 .. num_layers, h_0 = features
    update   = output_scale * Linear(h_L)

``num_layers = 0`` leaves only the linear map of the (preprocessed) gradient, which is what the
official code's known-answer test uses. The output layer starts at zero (``zero_head``), so an
untrained optimizer makes no update at all; see ``__init__`` for why.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from l2l.interface import BatchedOptimizer, State, check_range
from l2l.preprocessing import check_preprocessing, num_features, preprocess


class LSTMOptimizer(BatchedOptimizer, nn.Module):
    """Coordinatewise LSTM optimizer; an ``nn.Module`` whose parameters are meta-learned."""

    name = "lstm"
    #: The update reads only the gradient and the recurrent state, never the parameters; the
    #: meta-trainer's fast first-order path relies on this.
    update_depends_on_params = False

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        preprocessing: str = "log_sign",
        preprocess_p: float = 10.0,
        output_scale: float = 0.1,
        forget_bias: float = 1.0,
        zero_head: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        check_preprocessing(preprocessing)
        check_range("hidden_size", hidden_size, 1)
        check_range("num_layers", num_layers, 0)
        check_range("preprocess_p", preprocess_p, 0.0, low_inclusive=False)
        check_range("output_scale", output_scale, 0.0, low_inclusive=False)
        self.config: dict[str, Any] = {
            "hidden_size": int(hidden_size),
            "num_layers": int(num_layers),
            "preprocessing": preprocessing,
            "preprocess_p": float(preprocess_p),
            "output_scale": float(output_scale),
            "forget_bias": float(forget_bias),
            "zero_head": bool(zero_head),
        }
        width = num_features(preprocessing)
        self.cells = nn.ModuleList()
        for _ in range(num_layers):
            cell = nn.LSTMCell(width, hidden_size)
            with torch.no_grad():  # PyTorch's gate order is (input, forget, cell, output)
                cell.bias_ih[hidden_size : 2 * hidden_size] += forget_bias
            self.cells.append(cell)
            width = hidden_size
        self.head = nn.Linear(width, 1)
        if zero_head:
            # Start as the no-op optimizer. A randomly initialised head makes the untrained
            # optimizer push every coordinate the same way; on the paper's sigmoid MLP that
            # saturates the hidden units within a few steps, the loss sits on a plateau, and
            # the meta-gradient vanishes (meta-training then never leaves ln 10 on MNIST).
            # From zero, the head's gradient (the LSTM's features) is informative at once.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    # -- the shared interface -----------------------------------------------------------------

    def init(self, params: Tensor) -> State:
        B, n = params.shape
        H = self.config["hidden_size"]
        dtype = self.head.weight.dtype
        zeros = params.new_zeros(B, n, H, dtype=dtype)
        state: State = {}
        for layer in range(len(self.cells)):
            state[f"h{layer}"] = zeros
            state[f"c{layer}"] = zeros
        return state

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        B, n = grads.shape
        H = self.config["hidden_size"]
        cfg = self.config
        x = preprocess(grads.reshape(B * n), cfg["preprocessing"], cfg["preprocess_p"])
        x = x.to(self.head.weight.dtype)
        L = len(self.cells)
        new_state: State = {}
        if L and not (torch.is_grad_enabled() and self.head.weight.requires_grad):
            # Frozen (evaluation, drop-in use): one multi-layer torch.lstm call, whose CPU kernel
            # is ~10x faster here than lstm_cell's strided in-place gate activations.
            h0 = torch.stack([state[f"h{layer}"].reshape(B * n, H) for layer in range(L)])
            c0 = torch.stack([state[f"c{layer}"].reshape(B * n, H) for layer in range(L)])
            out, h, c = torch.lstm(x[None], (h0, c0), self._flat_weights(), True, L, 0.0,
                                     False, False, False)
            x = out[0]
            for layer in range(L):
                new_state[f"h{layer}"] = h[layer].view(B, n, H)
                new_state[f"c{layer}"] = c[layer].view(B, n, H)
        else:  # differentiable: one cell per layer (its graph is what meta-training uses)
            for layer, cell in enumerate(self.cells):
                hidden = (state[f"h{layer}"].reshape(B * n, H),
                          state[f"c{layer}"].reshape(B * n, H))
                h, c = cell(x, hidden)
                new_state[f"h{layer}"] = h.view(B, n, H)
                new_state[f"c{layer}"] = c.view(B, n, H)
                x = h
        update = self.head(x).view(B, n) * cfg["output_scale"]
        return update.to(grads.dtype), new_state

    def _flat_weights(self) -> list[Tensor]:
        """The cells' weights in ``torch.lstm``'s order (as ``nn.LSTM`` keeps them)."""
        return [w for cell in self.cells
                for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.config)

    def with_hyperparameters(self, **overrides: Any) -> LSTMOptimizer:
        """A copy with new hyperparameters; the learned weights are kept (so the architecture
        may not change)."""
        config = {**self.config, **overrides}
        clone = LSTMOptimizer(**config)
        try:
            clone.load_state_dict(self.state_dict())
        except RuntimeError as error:
            raise ValueError(
                f"cannot change {sorted(overrides)} of a trained LSTM optimizer: the learned "
                "weights would not fit; build a new LSTMOptimizer instead"
            ) from error
        return clone.to(self.head.weight)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
