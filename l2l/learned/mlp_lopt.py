"""A small per-parameter MLP optimizer with tensor-aware features (after small_fc_lopt /
AdafacMLP, Metz et al. 2022), and its width-transferable muLO form (2024).

The paper's 2x20 LSTM costs ~10 kFLOP per parameter and step; this rule is a 2-hidden-layer MLP
of ``hidden_size`` (4 to 32) units applied to every coordinate, ~3 kFLOP at 32 units and
~0.3 kFLOP at 4 (1,504 and 76 multiply-adds, plus ~100 FLOP of features). What makes so small
a network work is its inputs, computed per coordinate from the gradient ``g``, the parameter
``p`` and running statistics, each normalised over its tensor (the bound ``ParamLayout``;
without one the whole vector is one tensor)::

    g, p, m_k (momenta at momentum_decays), v^ (RMS accumulator, bias-corrected),
    m_k / (sqrt(v^) + eps), 1 / (sqrt(v^) + eps),
    Adafactor's row and column factors r, c of the tensor seen as a matrix, and
    g / (sqrt(r c / mean(r)) + eps)                       (vectors: the plain accumulator)

    x     = features / sqrt(mean over the tensor of features^2)   (second-moment normaliser)
    d, s  = head(MLP(x) + W_t tanh(t / tau))                      zero-initialised head
    a     = m^ / (sqrt(v^) + eps)                                 Adam's direction (fixed)
    update = -step_mult * (d + anchor_scale * a) * exp(exp_mult * s)   [/ fan_in with mup]

The step follows small_fc_lopt (direction times ``exp(magnitude * small)`` times a step
multiplier), with one addition: the fixed Adam term ``a``. small_fc_lopt's zero head makes no
step at all, and a random head makes noise; with ``a`` the untrained optimizer (zero head) *is*
Adam with ``lr = step_mult``, ``betas = (anchor_beta1, rms_decay)`` and ``eps``, a sensible start
that meta-training only has to improve (``anchor_scale=0`` gives small_fc_lopt's form).

The time features ``tanh(t / tau)`` are the same for every coordinate of an instance, so they
enter as a per-instance bias of the first layer (``W_t``): no per-coordinate cost.
``horizon_features=True`` adds the fraction of the run done, ``f = t / T`` and ``f^2`` (VeLO's
and Celo's "fraction of training" inputs), the same way. Without them a rule sees only the
absolute step, so on runs of different lengths it cannot learn a schedule that anneals as its
run ends, the main thing per-task-tuned constant-lr Adam lacks. ``T`` is the run's length: the
state's ``horizon``, which whoever knows it records (``l2l.interface.with_horizon``: evaluation,
every meta-training estimator, each particle of a truncated step); where nobody does (the
torch.optim drop-in) set :attr:`MLPLOpt.run_length` to the run's steps before ``init``.

``scale_feature=True`` adds one input the normaliser does not touch: ``log10(rms(p) + 1e-3)``,
the scale of each tensor's parameters, the same at every coordinate of the tensor. The
normalised features are scale-free by design, so without it one rule takes the same step on a
tensor of weights ~1 (a quadratic, where tuned Adam's lr is ~0.5) as on one of weights ~0.01 (a
logistic regression from zero, ~0.01). Adafactor's relative step (``scale_parameter``) fixes
that ratio at 1; here the network learns it. Under the training distribution's reparameterising
augmentation (``p = w / s``) the right step in ``p`` scales as ``rms(p)``, which is the signal.

**muLO** (``mup=True``): the step of every tensor of two or more dimensions is divided by its
fan-in (``ParamLayout.fan_ins``), vectors' steps are not, as muP prescribes for Adam-like rules.
The normalised features make the unscaled step's per-tensor statistics width-independent, so
with this factor an optimizer meta-trained on narrow networks takes muP-correct steps on wide
ones (tested on MLPs of widths 32 to 512). ``step_mult`` then multiplies ``1 / fan_in``: raise
it accordingly (e.g. ``step_mult = 0.1`` for a tensor of fan-in 100 steps like Adam at 1e-3).

The inputs are constants of the meta-gradient (computed without autograd, as in
``adam_anchored``); only the network's output and the Adam term (through the optimizee's
gradient, with ``meta.second_order=true``) are differentiated. The parameter enters *only* as
such an input, so the update does not depend on the parameters through anything autograd sees:
that is what ``reads_params`` declares for the estimators, and the fast ``surrogate``
meta-gradient is exact for it (``test_surrogate_equals_autograd_for_every_learned_optimizer``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from l2l.interface import State, safe_sqrt
from l2l.learned.base import LearnedOptimizer, check_int
from l2l.learned.core import zero_linear
from l2l.learned.mlp_lopt_step import FROZEN_CHUNK, SCALE_FLOOR, TINY, frozen_step, fusable
from l2l.range_checks import check_range


def _dense(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x (B, in, N) -> (B, out, N)`` with ``weight (out, in)``, or with one weight per row
    ``b`` given as ``(out, in, B, 1)`` (the particle axis of ``LearnedOptimizer``).

    Feature-major (coordinates last): a GEMM with the few features and units as its short
    sides and the coordinates as its long one runs 3-6x faster on CPUs than ``(N, in) @ (in,
    out)`` at these widths."""
    if weight.dim() == 2:
        if x.shape[0] == 1:
            out = (torch.mm(weight, x[0]) if bias is None
                   else torch.addmm(bias.unsqueeze(1), weight, x[0]))
            return out.unsqueeze(0)
        out = torch.matmul(weight, x)
        return out if bias is None else out + bias.unsqueeze(1)
    out = torch.bmm(weight[..., 0].permute(2, 0, 1), x)
    return out if bias is None else out + bias[..., 0].T.unsqueeze(-1)


class MLPLOpt(LearnedOptimizer):
    """Per-coordinate MLP on tensor-normalised features, anchored to Adam (module docstring)."""

    name = "mlp_lopt"
    reads_params = False  # p is an input only: see the module docstring
    uses_layout = True
    #: checkpoints from before these fields read no run length and no parameter scale
    added_fields = {"horizon_features": False, "scale_feature": False}
    summary = ("per-coordinate 2-layer MLP on per-tensor-normalised Adam/Adafactor features "
               "(small_fc_lopt); untrained = Adam; mup=true: muLO")

    def __init__(
        self,
        hidden_size: int = 32,
        hidden_layers: int = 2,
        momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99),
        rms_decay: float = 0.999,
        factored_decay: float = 0.999,
        time_scales: tuple[float, ...] = (10.0, 100.0, 1000.0, 10000.0),
        step_mult: float = 1e-3,
        exp_mult: float = 1e-3,
        anchor_scale: float = 1.0,
        anchor_beta1: float = 0.9,
        eps: float = 1e-8,
        mup: bool = False,
        zero_head: bool = True,
        horizon_features: bool = False,
        scale_feature: bool = False,
    ) -> None:
        check_int("hidden_size", hidden_size, 1, 1024)
        check_int("hidden_layers", hidden_layers, 1, 8)
        decays = tuple(momentum_decays)
        taus = tuple(time_scales)
        if len(decays) > 8 or len(taus) > 16:
            raise ValueError(f"invalid momentum_decays={list(decays)} / time_scales="
                             f"{list(taus)}: at most 8 decays and 16 time scales")
        for decay in decays:
            check_range("momentum_decays[i]", decay, 0.0, 1.0, high_inclusive=False)
        for tau in taus:
            check_range("time_scales[i]", tau, 0.0, low_inclusive=False)
        check_range("rms_decay", rms_decay, 0.0, 1.0, high_inclusive=False)
        check_range("factored_decay", factored_decay, 0.0, 1.0, high_inclusive=False)
        check_range("anchor_beta1", anchor_beta1, 0.0, 1.0, high_inclusive=False)
        check_range("step_mult", step_mult, 0.0, low_inclusive=False)
        check_range("exp_mult", exp_mult, 0.0)
        check_range("anchor_scale", anchor_scale, 0.0)
        check_range("eps", eps, 0.0, low_inclusive=False)
        for flag, value in (("mup", mup), ("zero_head", zero_head),
                            ("horizon_features", horizon_features),
                            ("scale_feature", scale_feature)):
            if not isinstance(value, bool):
                raise ValueError(f"invalid {flag}={value!r}: {flag} must be true or false")
        super().__init__(
            hidden_size=int(hidden_size), hidden_layers=int(hidden_layers),
            momentum_decays=[float(d) for d in decays], rms_decay=float(rms_decay),
            factored_decay=float(factored_decay), time_scales=[float(t) for t in taus],
            step_mult=float(step_mult), exp_mult=float(exp_mult),
            anchor_scale=float(anchor_scale), anchor_beta1=float(anchor_beta1),
            eps=float(eps), mup=mup, zero_head=zero_head, horizon_features=horizon_features,
            scale_feature=scale_feature)
        cfg = self.config
        #: the momentum Adam's term uses: one of the feature momenta if its decay is among them
        self.anchor_key = (f"m{cfg['momentum_decays'].index(cfg['anchor_beta1'])}"
                           if cfg["anchor_beta1"] in cfg["momentum_decays"] else "anchor_m")
        K = len(decays)
        self.num_features = 2 + K + 1 + K + 1 + 3 + (1 if scale_feature else 0)
        H = int(hidden_size)
        self.input = nn.Linear(self.num_features, H)
        times = len(taus) + (2 if horizon_features else 0)
        self.time = nn.Linear(times, H, bias=False) if times else None
        #: the run's length ``init`` records when no caller states one (horizon_features only)
        self.run_length = 0
        if horizon_features:
            self.scalar_state_keys = frozenset({"step", "horizon"})
        self.hidden = nn.ModuleList(nn.Linear(H, H) for _ in range(int(hidden_layers) - 1))
        self.head = zero_linear(H, 2, zero_head)

    def particle_axis(self) -> bool:
        return True  # every layer goes through _dense, which takes per-row weights

    # -- state --------------------------------------------------------------------------------

    def _moment_keys(self) -> list[str]:
        keys = [f"m{i}" for i in range(len(self.config["momentum_decays"]))]
        if self.anchor_key == "anchor_m":
            keys.append("anchor_m")
        return keys + ["v", "v_row", "v_col"]

    def init(self, params: Tensor) -> State:
        B, n = params.shape
        dtype = self.head.weight.dtype
        state: State = {"step": params.new_zeros(B, 1, dtype=dtype)}
        if self.config["horizon_features"]:  # 0: not known yet (see the module docstring)
            state["horizon"] = params.new_full((B, 1), float(self.run_length), dtype=dtype)
        for key in self._moment_keys():
            state[key] = params.new_zeros(B, n, dtype=dtype)
        return state

    # -- the rule -----------------------------------------------------------------------------

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        cfg = self.config
        B, n = grads.shape
        layout = self.layout_for(n)
        dtype = self.head.weight.dtype
        g = grads.to(dtype)
        step = state["step"] + 1  # kept in the state's dtype (the drop-in's float32)
        t = step.to(torch.float64)
        new_state: State = {"step": step}

        def bias(decay: float) -> Tensor:
            return (1 - decay ** t).to(dtype)

        b1, b2 = cfg["anchor_beta1"], cfg["rms_decay"]
        eps = cfg["eps"]
        # Adam's term, differentiable (through g when meta-gradients are second order)
        v = torch.lerp(state["v"], g * g, 1 - b2)
        anchor_m = torch.lerp(state[self.anchor_key], g, 1 - b1)
        new_state["v"] = v
        new_state[self.anchor_key] = anchor_m
        bias2 = bias(b2)
        adam = (anchor_m / bias(b1)) / (safe_sqrt(v / bias2) + eps)

        with torch.no_grad():  # the inputs: constants for the meta-gradient
            x = self._features(g, params.to(dtype), state, new_state, layout, bias, bias2)
            times = self._times(t.to(dtype), state, new_state)
        if torch.is_grad_enabled() or n <= FROZEN_CHUNK:
            out = self._net(x, times)
        else:  # frozen use (evaluation, the drop-in): the hidden units of a chunk at a time
            out = torch.cat([self._net(x[..., lo:lo + FROZEN_CHUNK], times)
                             for lo in range(0, n, FROZEN_CHUNK)], dim=-1)
        direction, magnitude = out[:, 0], out[:, 1]
        size = cfg["step_mult"] * torch.exp(cfg["exp_mult"] * magnitude)
        update = -(direction + cfg["anchor_scale"] * adam) * size
        if cfg["mup"]:
            update = update * self._mup_scale(layout, update)
        return update.to(grads.dtype), new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        """The in-place step of ``l2l.learned.mlp_lopt_step`` (the drop-in's and evaluation's),
        the pure update where it does not apply (per-particle weights, mixed dtypes)."""
        if fusable(self, grads, state, params):
            frozen_step(self, grads, state, params)
        else:
            super()._step_(grads, state, params)

    def _times(self, t: Tensor, state: State, new_state: State) -> Tensor | None:
        """The per-instance inputs ``(B, T)``: ``tanh(t / tau)``, and with horizon_features
        the fraction of the run done ``f = t / horizon`` (at most 1) and ``f^2``."""
        taus = self.config["time_scales"]
        parts = [torch.tanh(t / torch.tensor(taus, dtype=t.dtype, device=t.device))] if taus else []
        if self.config["horizon_features"]:
            horizon = state["horizon"]
            new_state["horizon"] = horizon
            if not bool((horizon > 0).all()):
                raise ValueError(
                    "mlp_lopt with horizon_features=true needs its run's length, but the state "
                    "does not record one: pass it with l2l.interface.with_horizon(state, steps) "
                    "after init, or set the optimizer's run_length to the run's steps")
            fraction = (t / horizon).clamp(max=1.0)
            parts += [fraction, fraction * fraction]
        return torch.cat(parts, dim=1) if parts else None

    def _net(self, x: Tensor, times: Tensor | None) -> Tensor:
        """The MLP: inputs ``(B, F, N)`` (and time features ``(B, T)``) to ``(B, 2, N)``."""
        relu = torch.relu if torch.is_grad_enabled() else torch.relu_  # frozen: no copies
        h = _dense(x, self.input.weight, self.input.bias)
        if self.time is not None:
            h = h + _dense(times.unsqueeze(-1), self.time.weight, None)
        h = relu(h)
        for layer in self.hidden:
            h = relu(_dense(h, layer.weight, layer.bias))
        return _dense(h, self.head.weight, self.head.bias)

    def _features(self, g: Tensor, p: Tensor, state: State, new_state: State, layout,
                  bias, bias2: Tensor) -> Tensor:
        """The normalised per-coordinate inputs ``(B, num_features, n)`` (feature-major, see
        ``_dense``); advances the feature moments in ``new_state``."""
        cfg = self.config
        eps = cfg["eps"]
        momenta = []
        for i, decay in enumerate(cfg["momentum_decays"]):
            key = f"m{i}"
            m = new_state[key] if key == self.anchor_key else torch.lerp(state[key], g, 1 - decay)
            new_state[key] = m
            momenta.append(m)
        v_hat = new_state["v"] / bias2
        inv_rms = 1.0 / (v_hat.sqrt() + eps)
        # Adafactor: running row and column means of g^2, kept at every coordinate
        fd = cfg["factored_decay"]
        g2 = g * g + TINY
        row = torch.lerp(state["v_row"], layout.row_mean(g2), 1 - fd)
        col = torch.lerp(state["v_col"], layout.col_mean(g2), 1 - fd)
        new_state["v_row"], new_state["v_col"] = row, col
        # v^, r and c scale as g^2, so their squares in the normaliser below would underflow
        # to float32 denormals (10x slower arithmetic) and sink under TINY for |g| < ~1e-7;
        # over the tensor's mean row they are O(1), which the normaliser cannot tell apart
        row_mean = layout.tensor_mean(row) + TINY
        row, col, v_hat = row / row_mean, col / row_mean, v_hat / row_mean
        factored = row * new_state["v_col"] / bias(fd)
        feats = [g, p, *momenta, v_hat, *(m * inv_rms for m in momenta), inv_rms,
                 row, col, g / (factored.sqrt() + eps)]
        x = torch.stack(feats, dim=1)
        B, n = g.shape
        rows = x.view(B * len(feats), n)  # every (instance, feature) normalised as a row
        x = (rows * torch.rsqrt(layout.tensor_mean(rows * rows) + TINY)).view(B, -1, n)
        if cfg["scale_feature"]:  # the one input left unnormalised (module docstring)
            scale = torch.log10(layout.tensor_mean(p * p).sqrt() + SCALE_FLOOR)
            x = torch.cat([x, scale.expand(B, n).unsqueeze(1)], dim=1)
        return x

    def _step_scale(self, layout, like: Tensor) -> Tensor:
        """``-step_mult / fan_in`` (muLO) at every coordinate, cached per layout and dtype."""
        key = ("mlp_lopt_step_scale", self.config["step_mult"], like.dtype, str(like.device))
        scale = layout._cache.get(key)
        if scale is None:
            scale = layout._cache[key] = -self.config["step_mult"] * self._mup_scale(
                layout, like.new_empty(layout.numel)).expand(layout.numel)
        return scale

    @staticmethod
    def _mup_scale(layout, like: Tensor) -> Tensor:
        """``1 / fan_in`` at every coordinate of a tensor of two or more dimensions, else 1."""
        scales = [1.0 / f if len(s) >= 2 else 1.0 for s, f in zip(layout.shapes, layout.fan_ins)]
        if len(layout) == 1:
            return like.new_tensor(scales[0])
        return layout.per_coordinate(scales, like)
