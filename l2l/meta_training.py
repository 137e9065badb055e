"""Meta-training a learned optimizer by truncated back-propagation through time.

Per meta-iteration: sample ``batch_size`` task instances, optimize them for ``horizon`` steps in
unrolls of ``unroll`` steps; after each unroll take one meta-optimizer step on

    meta-loss = mean over instances of  sum_{t=1..K} f(theta_t)

Parameters and recurrent state are carried across unrolls, gradients are not. The optimizee
gradient fed to the optimizer is a constant (the paper drops second derivatives) unless
``second_order``.

Two exact ways compute the first-order meta-gradient:

* ``autograd``: keep theta_t attached to the graph and back-propagate the summed losses.
* ``surrogate`` (the fast default for optimizers whose update ignores the parameters, like the
  LSTM): with constant gradients, d meta-loss / d u_t = sum_{s>t} g_s / B, where u_t is the
  update at step t and g_s the gradient at theta_s -- gradients the rollout computes anyway. So
  the rollout runs with the optimizee outside autograd, and one backward of
  ``sum_t <u_t, sum_{s>t} g_s> / B`` through the optimizer's graph alone gives the same
  meta-gradient without keeping K optimizee graphs alive.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2l import checkpoint
from l2l.evaluation import final_loss_score, run_optimizer
from l2l.interface import State, check_range
from l2l.lstm_optimizer import LSTMOptimizer
from l2l.tasks.base import Instances, TaskFamily


class MetaTrainingDiverged(RuntimeError):
    """Meta-training kept producing non-finite losses or meta-gradients."""


@dataclass
class MetaConfig:
    """Meta-training settings; defaults are the paper's (see shared NOTES)."""

    iterations: int = 10_000  #: task samples ("epochs" in the official code), each one horizon
    horizon: int = 100  #: optimizee steps per task
    unroll: int = 20  #: steps per truncated unroll (one meta-step each)
    batch_size: int = 1  #: task instances per meta-iteration
    meta_lr: float = 1e-3  #: Adam learning rate of the meta-optimizer
    second_order: bool = False  #: back-propagate through the optimizee gradients too
    gradient_mode: str = "auto"  #: "auto", "surrogate" or "autograd" (see module docstring)
    clip_grad_norm: float | None = None  #: clip the meta-gradient's global norm
    val_every: int = 1000  #: validate every this many iterations (and at the end)
    val_instances: int = 20  #: fixed validation instances
    checkpoint_every: int = 100  #: write latest.pt every this many iterations
    max_consecutive_skips: int = 20  #: stop after this many non-finite meta-steps in a row
    compile: bool = False  #: torch.compile the optimizer's update (about 2x on CPU for MNIST)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "horizon", "unroll", "batch_size", "val_every",
                     "val_instances", "checkpoint_every", "max_consecutive_skips"):
            check_range(f"meta.{name}", getattr(self, name), 1)
        check_range("meta.meta_lr", self.meta_lr, 0.0, low_inclusive=False)
        if self.clip_grad_norm is not None:
            check_range("meta.clip_grad_norm", self.clip_grad_norm, 0.0, low_inclusive=False)
        if self.gradient_mode not in ("auto", "surrogate", "autograd"):
            raise ValueError(
                f"unknown meta.gradient_mode {self.gradient_mode!r}: "
                "choose auto, surrogate or autograd"
            )
        if self.gradient_mode == "surrogate" and self.second_order:
            raise ValueError("meta.gradient_mode=surrogate is first-order only: "
                             "use gradient_mode=autograd (or auto) with second_order=true")


@dataclass
class UnrollOutcome:
    meta_loss: float  #: mean over instances of the summed losses of the unroll
    params: Tensor
    grads: Tensor  #: gradient at ``params`` (the next unroll's first input)
    state: State
    finite: bool


def compiled(update: Callable) -> Callable:
    """``torch.compile(update)``, falling back to eager (with a warning) if compiling fails,
    e.g. on a machine without a C++ compiler. The first call compiles (seconds to a minute)."""
    fast: Callable | None = torch.compile(update, dynamic=False)

    def call(*args: Any) -> Any:
        nonlocal fast
        if fast is not None:
            try:
                return fast(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
                warnings.warn(f"torch.compile failed ({type(error).__name__}: "
                              f"{str(error)[:200]}); meta-training continues uncompiled",
                              RuntimeWarning, stacklevel=2)
                fast = None
        return update(*args)

    return call


class MetaTrainer:
    """Outer training loop: owns the meta-optimizer, validation, checkpoints and resumption."""

    def __init__(
        self,
        optimizer: LSTMOptimizer,
        task: TaskFamily,
        config: MetaConfig,
        *,
        run_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        log: Callable[[dict[str, Any], int], None] | None = None,
    ) -> None:
        if not isinstance(optimizer, nn.Module) or not list(optimizer.parameters()):
            raise ValueError(
                f"{type(optimizer).__name__} has no learnable parameters to meta-train; "
                "use a learned optimizer such as LSTMOptimizer"
            )
        self.optimizer = optimizer.to(device)
        self.task = task
        self.config = config
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log = log or (lambda metrics, step: None)
        self.meta_optimizer = torch.optim.Adam(self.optimizer.parameters(), lr=config.meta_lr)
        self.iteration = 0
        self.best_val = math.inf
        self.best_weights = {k: v.detach().clone() for k, v in optimizer.state_dict().items()}
        self.history: dict[str, list] = {"meta_loss": [], "val_loss": [], "val_iteration": []}
        self.skipped = 0
        self.consecutive_skips = 0
        self.val_set = task.sample(config.val_instances, config.seed, "valid", device=self.device)
        mode = config.gradient_mode
        if mode == "auto":
            fast = not config.second_order and not getattr(
                optimizer, "update_depends_on_params", True
            )
            mode = "surrogate" if fast else "autograd"
        self.gradient_mode = mode
        self._update = compiled(optimizer.update) if config.compile else optimizer.update
        if self.run_dir is not None and self.latest_path.exists():
            self._resume()

    # -- paths ---------------------------------------------------------------------------------

    @property
    def latest_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "latest.pt"

    @property
    def best_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "best.pt"

    # -- one unroll ----------------------------------------------------------------------------

    def unroll(
        self, instances: Instances, params: Tensor, grads: Tensor, state: State, start: int,
        steps: int,
    ) -> UnrollOutcome:
        """Run ``steps`` optimizee steps from ``params`` (at optimizee step ``start``, whose
        gradient is ``grads``) and accumulate the meta-gradient into the optimizer's ``.grad``."""
        if self.gradient_mode == "surrogate":
            return self._unroll_surrogate(instances, params, grads, state, start, steps)
        return self._unroll_autograd(instances, params, grads, state, start, steps)

    def _unroll_surrogate(self, instances, params, grads, state, start, steps) -> UnrollOutcome:
        updates, later_grads, losses = [], [], []
        for k in range(steps):
            update, state = self._update(grads, state, params)
            params = params + update.detach()
            loss, grads = instances.loss_and_grad(params, start + k + 1)
            updates.append(update)
            later_grads.append(grads)
            losses.append(loss)
        meta_loss = torch.stack(losses).sum(0).mean()
        finite = bool(torch.isfinite(meta_loss))
        if finite:
            # d meta-loss / d u_t = sum_{s >= t} g_{s+1} / B : a reversed cumulative sum.
            g = torch.stack(later_grads)
            weights = g.flip(0).cumsum(0).flip(0) / params.shape[0]
            surrogate = sum((u * w).sum() for u, w in zip(updates, weights))
            surrogate.backward()
        return UnrollOutcome(meta_loss.item(), params.detach(), grads.detach(),
                             {k: v.detach() for k, v in state.items()}, finite)

    def _unroll_autograd(self, instances, params, grads, state, start, steps) -> UnrollOutcome:
        second = self.config.second_order
        total = 0.0
        for k in range(steps):
            update, state = self._update(grads, state, params)
            params = params + update
            loss, grads = instances.loss_and_grad(params, start + k + 1, create_graph=second)
            total = total + loss.mean()
        meta_loss = total
        finite = bool(torch.isfinite(meta_loss))
        if finite:
            meta_loss.backward()
        return UnrollOutcome(meta_loss.item(), params.detach(), grads.detach(),
                             {k: v.detach() for k, v in state.items()}, finite)

    # -- one task ------------------------------------------------------------------------------

    def train_task(self, instances: Instances) -> list[float]:
        """Optimize one sample of instances for a whole horizon; one meta-step per unroll.

        Returns the meta-losses of the unrolls. A non-finite meta-loss or meta-gradient skips
        the meta-step (the learned weights stay as they were) and abandons the task.
        """
        cfg = self.config
        params = instances.init_params
        state = self.optimizer.init(params)
        _, grads = instances.loss_and_grad(params, 0)
        meta_losses = []
        for start in range(0, cfg.horizon, cfg.unroll):
            steps = min(cfg.unroll, cfg.horizon - start)
            self.meta_optimizer.zero_grad(set_to_none=True)
            out = self.unroll(instances, params, grads, state, start, steps)
            if out.finite:
                if cfg.clip_grad_norm is not None:
                    norm = nn.utils.clip_grad_norm_(self.optimizer.parameters(), cfg.clip_grad_norm)
                else:
                    norm = torch.norm(torch.stack([p.grad.norm() for p in self._grads()]))
                out.finite = bool(torch.isfinite(norm))
            if not out.finite:
                self.meta_optimizer.zero_grad(set_to_none=True)
                self._skip(out.meta_loss)
                break
            self.meta_optimizer.step()
            self.consecutive_skips = 0
            meta_losses.append(out.meta_loss)
            params, grads, state = out.params, out.grads, out.state
        return meta_losses

    def _grads(self) -> list[Tensor]:
        return [p for p in self.optimizer.parameters() if p.grad is not None]

    def _skip(self, meta_loss: float) -> None:
        self.skipped += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.config.max_consecutive_skips:
            self.save_latest()
            raise MetaTrainingDiverged(
                f"{self.consecutive_skips} meta-steps in a row had a non-finite meta-loss or "
                f"meta-gradient (last meta-loss {meta_loss}) at iteration {self.iteration}; the "
                "learned weights were left untouched. Lower meta.meta_lr, set "
                "meta.clip_grad_norm, lower the optimizer's output_scale, or shorten meta.unroll."
            )

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> float:
        """Mean final loss of the frozen optimizer on the fixed validation instances."""
        return final_loss_score(run_optimizer(self.optimizer, self.val_set, self.config.horizon,
                                              with_metrics=False))

    # -- the loop ------------------------------------------------------------------------------

    def train(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train up to ``config.iterations`` (or ``stop_after`` more iterations, to simulate an
        interruption); resumable at any point from ``run_dir``."""
        cfg = self.config
        end = cfg.iterations if stop_after is None else min(cfg.iterations,
                                                            self.iteration + stop_after)
        if self.iteration == 0 and not self.history["val_loss"]:
            self._validate_and_keep_best()  # the untrained optimizer is the first candidate
        while self.iteration < end:
            instances = self.task.sample(cfg.batch_size, cfg.seed, "train",
                                         offset=self.iteration * cfg.batch_size,
                                         device=self.device)
            meta_losses = self.train_task(instances)
            self.iteration += 1
            mean_loss = sum(meta_losses) / len(meta_losses) if meta_losses else math.nan
            self.history["meta_loss"].append(mean_loss)
            self.log({"meta/loss": mean_loss, "meta/skipped": self.skipped}, self.iteration)
            if self.iteration % cfg.val_every == 0 or self.iteration == cfg.iterations:
                self._validate_and_keep_best()
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == end:
                self.save_latest()
        return {"iterations": self.iteration, "best_val_loss": self.best_val,
                "skipped": self.skipped, "history": self.history}

    def _validate_and_keep_best(self) -> None:
        val = self.validate()
        self.history["val_loss"].append(val)
        self.history["val_iteration"].append(self.iteration)
        improved = val < self.best_val or not self.history["val_loss"][:-1]
        if improved and math.isfinite(val):
            self.best_val = val
            self.best_weights = {k: v.detach().clone() for k, v in
                                 self.optimizer.state_dict().items()}
            if self.run_dir is not None:
                checkpoint.save_atomic(
                    {"optimizer": self._payload(self.best_weights), "iteration": self.iteration,
                     "val_loss": val}, self.best_path)
        self.log({"val/final_loss": val, "val/best_final_loss": self.best_val}, self.iteration)
        if self.run_dir is not None:
            self.save_latest()

    # -- checkpoints ---------------------------------------------------------------------------

    def _payload(self, weights: dict[str, Tensor]) -> dict[str, Any]:
        return {"config": dict(self.optimizer.config), "weights": weights}

    def save_latest(self) -> None:
        if self.run_dir is None:
            return
        checkpoint.save_atomic(
            {
                "optimizer": self._payload(self.optimizer.state_dict()),
                "best": self._payload(self.best_weights),
                "best_val": self.best_val,
                "meta_optimizer": self.meta_optimizer.state_dict(),
                "iteration": self.iteration,
                "history": self.history,
                "skipped": self.skipped,
                "consecutive_skips": self.consecutive_skips,
                "meta_config": asdict(self.config),
                "rng": torch.get_rng_state(),
            },
            self.latest_path,
        )

    def _resume(self) -> None:
        source = str(self.latest_path)
        payload = checkpoint.load(self.latest_path, map_location=self.device)
        restored = checkpoint.optimizer_from_payload(payload["optimizer"],
                                                     expect=self.optimizer.config, source=source)
        self.optimizer.load_state_dict(restored.state_dict())
        best = checkpoint.optimizer_from_payload(payload["best"], source=source)
        self.best_weights = {k: v.to(self.device) for k, v in best.state_dict().items()}
        self.meta_optimizer.load_state_dict(payload["meta_optimizer"])
        self.best_val = payload["best_val"]
        self.iteration = payload["iteration"]
        self.history = payload["history"]
        self.skipped = payload["skipped"]
        self.consecutive_skips = payload["consecutive_skips"]
        torch.set_rng_state(payload["rng"].cpu())
