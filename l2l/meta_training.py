"""Meta-training a learned optimizer by truncated back-propagation through time: the outer loop.

Per meta-iteration (one "task"): sample ``batch_size`` instances, optimize them for ``horizon``
steps in unrolls of ``unroll`` steps, and after each unroll take one meta-optimizer (Adam) step
on the unroll's meta-loss (see ``l2l.objectives``). Parameters and optimizer state are carried
across unrolls, gradients are not.

The pieces, each in its own module:

* the meta-gradient of one unroll: an estimator (``l2l/estimators/``: ``sequence``, the fused
  first-order path for the LSTM cores, ``surrogate``, the general first-order one, or
  ``autograd``), chosen by ``meta.estimator``; or, for the forward-only population estimators
  (``pes``, ``es``, ``full_es``), one truncation of a population of particles
  (``l2l.truncated_step``) per meta-iteration instead of one task;
* validation and best-model selection: ``l2l.validation.Validator``;
* what happens on events (progress, logging, printing): :class:`Callback` objects;
* checkpoints: ``latest.pt`` (everything needed to resume bit for bit) and ``best.pt``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2l import checkpoint
from l2l.env.distributed import Synchronizer
from l2l.env.runtime import problem_size, resolve_compile
from l2l.env.runtime_cache import enable_compile_cache
from l2l.estimators import UnrollOutcome, choose_estimator
from l2l.estimators.base import Unroll
from l2l.interface import State, check_range
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import OBJECTIVES, build_objective
from l2l.tasks.base import Instances, TaskFamily
from l2l.tasks.scaled import random_scale
from l2l.truncated_step import TruncatedStep
from l2l.unroll_lengths import SCHEDULES, LengthSchedule
from l2l.validation import Validator


class MetaTrainingDiverged(RuntimeError):
    """Meta-training kept producing non-finite losses or meta-gradients."""


class MetaTrainingInterrupted(RuntimeError):
    """A callback asked the run to stop (a signal); ``latest.pt`` was written first."""

    def __init__(self, message: str, signal_number: int | None = None) -> None:
        super().__init__(message)
        self.signal_number = signal_number


#: MetaConfig fields a resumed run may change (they do not alter what is being learned);
#: every other field, the task and the architecture must match the checkpoint.
RESUMABLE_CHANGES = ("iterations", "val_every", "checkpoint_every", "max_consecutive_skips",
                     "compile")


#: what a ``latest.pt`` must hold to be resumed from (see ``MetaTrainer.save_latest``)
RESUME_FIELDS = ("optimizer", "best", "best_val", "meta_optimizer", "iteration", "history",
                 "skipped", "consecutive_skips", "rng")


@dataclass
class MetaConfig:
    """Meta-training settings; defaults are the paper's (see shared NOTES)."""

    iterations: int = 10_000  #: task samples ("epochs" in the official code), each one horizon
    horizon: int = 100  #: optimizee steps per task
    unroll: int = 20  #: steps per truncated unroll (one meta-step each)
    batch_size: int = 1  #: task instances per meta-iteration
    meta_lr: float = 1e-3  #: Adam learning rate of the meta-optimizer
    second_order: bool = False  #: back-propagate through the optimizee gradients too
    estimator: str = "auto"  #: "auto", or a name in l2l/estimators ("sequence", "surrogate", ...)
    objective: str = "sum"  #: meta-objective: "sum" (paper) or "log_relative"
    scale_range: float = 0.0  #: train on f(c*theta), c = exp(U[-s, s]) per coordinate (0: off)
    clip_grad_norm: float | None = None  #: clip the meta-gradient's global norm
    val_every: int = 1000  #: validate every this many iterations (and at the end)
    val_instances: int = 20  #: fixed validation instances
    checkpoint_every: int = 100  #: write latest.pt every this many iterations
    max_consecutive_skips: int = 20  #: stop after this many non-finite meta-steps in a row
    #: torch.compile the optimizer's update: true, false, or "auto" (problems of >= 4,096
    #: coordinates where a compiler exists; about 2x on CPU for MNIST). See l2l.runtime.
    compile: bool | str = "auto"
    seed: int = 0  #: draws the training tasks (and the learned optimizer's initial weights)
    val_seed: int | None = None  #: draws the validation problems (None: ``seed``)
    # The population estimators (pes, es, full_es; l2l/estimators/evolution.py): one
    # meta-iteration is one truncation of meta.unroll steps (full_es: one whole episode).
    sigma: float = 0.01  #: std of the antithetic perturbations of the learned weights
    particles: int = 8  #: inner trainings in the population: antithetic pairs, so even
    lengths: str = "constant"  #: episode lengths: constant (meta.horizon) or log_uniform
    min_length: int = 100  #: log_uniform: shortest episode
    max_length: int = 1000  #: log_uniform: longest episode

    def __post_init__(self) -> None:
        for name in ("iterations", "horizon", "unroll", "batch_size", "val_every",
                     "val_instances", "checkpoint_every", "max_consecutive_skips"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"meta.{name} must be a positive integer, got {value!r}")
            check_range(f"meta.{name}", value, 1)
        check_range("meta.meta_lr", self.meta_lr, 0.0, low_inclusive=False)
        check_range("meta.scale_range", self.scale_range, 0.0, 10.0)
        if self.clip_grad_norm is not None:
            check_range("meta.clip_grad_norm", self.clip_grad_norm, 0.0, low_inclusive=False)
        if self.unroll > self.horizon:
            raise ValueError(f"meta.unroll={self.unroll} is longer than meta.horizon="
                             f"{self.horizon}: set meta.unroll <= meta.horizon")
        check_range("meta.sigma", self.sigma, 0.0, low_inclusive=False)
        particles = self.particles
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 2 \
                or particles % 2:
            raise ValueError(f"meta.particles={particles!r} must be an even integer >= 2 (the "
                             "particles are antithetic pairs): set meta.particles=8, say")
        if self.lengths not in SCHEDULES:
            raise ValueError(f"unknown meta.lengths {self.lengths!r}: choose one of "
                             f"{', '.join(SCHEDULES)}")
        for name in ("min_length", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"meta.{name} must be a positive integer, got {value!r}")
        if self.lengths == "log_uniform":
            if self.min_length > self.max_length:
                raise ValueError(f"meta.min_length={self.min_length} exceeds meta.max_length="
                                 f"{self.max_length}: set min_length <= max_length")
            if self.unroll > self.min_length:
                raise ValueError(f"meta.unroll={self.unroll} is longer than the shortest unroll "
                                 f"length meta.min_length={self.min_length}: set meta.unroll <= "
                                 "meta.min_length")
        if not (self.compile is True or self.compile is False or self.compile == "auto"):
            raise ValueError(f"meta.compile must be true, false or auto, got {self.compile!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown meta.objective {self.objective!r}: choose one of "
                             f"{', '.join(OBJECTIVES)}")


class Callback:
    """Hooks called by :class:`MetaTrainer`; override the ones you need."""

    def on_task_end(self, trainer: MetaTrainer, iteration: int, meta_loss: float) -> None:
        """After each meta-iteration (task); ``meta_loss`` is the mean over its unrolls."""

    def on_validation(self, trainer: MetaTrainer, iteration: int, val_loss: float,
                      improved: bool) -> None:
        """After each validation; ``improved`` if it became the best checkpoint."""

    def stop_requested(self, trainer: MetaTrainer) -> str | None:
        """Checked after every task: a reason to stop now (``latest.pt`` is written first)."""
        return None


def compiled(update: Callable) -> Callable:
    """``torch.compile(update)``, falling back to eager (with a warning) if compiling fails,
    e.g. on a machine without a C++ compiler. The first call compiles (seconds to a minute);
    the caches are kept per user (``l2l.runtime_cache``), so later runs load the kernels."""
    enable_compile_cache()
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
    """Outer training loop: owns the meta-optimizer, the estimator, validation and checkpoints."""

    def __init__(
        self,
        optimizer: LearnedOptimizer,
        task: TaskFamily,
        config: MetaConfig,
        *,
        run_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        callbacks: Sequence[Callback] = (),
        identity: dict[str, Any] | None = None,
        sync: Synchronizer | None = None,
    ) -> None:
        """``identity``: plain facts about the run that a resume must not change (e.g. the
        task's config); stored in every checkpoint and compared on resume. ``sync``: how the
        processes of a data-parallel run agree (``l2l.distributed``); default: one process."""
        if not isinstance(optimizer, LearnedOptimizer) or not list(optimizer.parameters()):
            raise ValueError(
                f"{type(optimizer).__name__} has no learnable parameters to meta-train; "
                "use a learned optimizer (l2l.registry.learned_names())")
        # bound to the task's parameter layouts (a no-op for rules that ignore them); the
        # bound copy shares the caller's learned weights
        optimizer = self.optimizer = optimizer.with_layout(task.layouts()).to(device)
        self.task = task
        self.config = config
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        self.identity = dict(identity or {})
        self.sync = sync if sync is not None else Synchronizer()
        self.untrained_val: float | None = None  #: the first validation (iteration 0)
        self.meta_optimizer = torch.optim.Adam(self.optimizer.parameters(), lr=config.meta_lr)
        self.iteration = 0
        self.history: dict[str, list] = {"meta_loss": [], "val_loss": [], "val_iteration": []}
        self.skipped = 0
        self.consecutive_skips = 0
        val_seed = config.seed if config.val_seed is None else config.val_seed
        self.validator = Validator(task, instances=config.val_instances, seed=val_seed,
                                   horizon=config.horizon, device=self.device)
        self.compiled = resolve_compile(config.compile, problem_size=problem_size(task),
                                        device=self.device)
        update = compiled(optimizer.update) if self.compiled else optimizer.update
        estimator = choose_estimator(config.estimator, optimizer,
                                     second_order=config.second_order)
        population = getattr(estimator, "population", False)
        extra = {"sigma": config.sigma, "seed": config.seed} if population else {}
        self.estimator = estimator(update, build_objective(config.objective),
                                   second_order=config.second_order, optimizer=optimizer, **extra)
        #: the particles of a population estimator (pes, es, full_es); None for TBPTT
        self.population = self._population() if population else None
        self.resumed_from: Path | None = None
        if self.run_dir is not None:
            self._resume_or_start()
        self.sync.check_same(self.iteration, self.optimizer.parameters())

    def _population(self) -> TruncatedStep:
        cfg = self.config
        if self.sync.world_size > 1:
            raise ValueError(f"meta.estimator={cfg.estimator} runs in one process: launch it "
                             "without torchrun or several SLURM tasks")
        if cfg.lengths == "log_uniform":
            lengths = LengthSchedule("log_uniform", cfg.min_length, cfg.max_length)
        else:
            lengths = LengthSchedule("constant", cfg.horizon)
        return TruncatedStep(self.task, self.optimizer, self.estimator.objective,
                             pairs=cfg.particles // 2, lengths=lengths, seed=cfg.seed,
                             random_offsets=self.estimator.random_offsets,
                             scale_range=cfg.scale_range, device=self.device)

    def train_population(self) -> list[float]:
        """One meta-step of a population estimator: one truncation of every particle (full_es:
        one whole episode); returns its meta-loss. A non-finite one skips the meta-step."""
        self.meta_optimizer.zero_grad(set_to_none=True)
        out = self.estimator.estimate_population(self.population, self.config.unroll)
        finite, meta_loss = self.sync.reduce_gradients(self.optimizer.parameters(), out.finite,
                                                       out.meta_loss)
        if finite:
            finite = self._finish_gradient()
        if not finite:
            self.meta_optimizer.zero_grad(set_to_none=True)
            self._skip(meta_loss)
            return []
        self.meta_optimizer.step()
        self.consecutive_skips = 0
        return [meta_loss]

    # -- compatibility views --------------------------------------------------------------------

    @property
    def best_val(self) -> float:
        return self.validator.best_val

    @property
    def best_weights(self) -> dict[str, Tensor]:
        if self.validator.best_weights is None:
            return {k: v.detach().clone() for k, v in self.optimizer.state_dict().items()}
        return self.validator.best_weights

    @property
    def gradient_mode(self) -> str:
        return self.estimator.name

    # -- paths ---------------------------------------------------------------------------------

    @property
    def latest_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "latest.pt"

    @property
    def best_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "best.pt"

    @property
    def previous_path(self) -> Path:
        """The ``latest.pt`` before the last one: the fallback if ``latest.pt`` is damaged."""
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "previous.pt"

    # -- one task ------------------------------------------------------------------------------

    def sample_task(self, iteration: int) -> Instances:
        """The instances of meta-iteration ``iteration`` (a function of seed and iteration)."""
        cfg = self.config
        start, count = self.sync.shard(cfg.batch_size)  # this process's share of the batch
        offset = iteration * cfg.batch_size + start
        instances = self.task.sample(count, cfg.seed, "train", offset=offset,
                                     device=self.device)
        return random_scale(instances, cfg.scale_range, cfg.seed, "train", offset)

    def train_task(self, instances: Instances) -> list[float]:
        """Optimize one sample of instances for a whole horizon; one meta-step per unroll.

        Returns the meta-losses of the unrolls. A non-finite meta-loss or meta-gradient skips
        the meta-step (the learned weights stay as they were) and abandons the task.
        """
        cfg = self.config
        params = instances.init_params
        state = self.optimizer.init(params)
        initial_loss, grads = instances.loss_and_grad(params, 0)
        meta_losses = []
        for start in range(0, cfg.horizon, cfg.unroll):
            steps = min(cfg.unroll, cfg.horizon - start)
            self.meta_optimizer.zero_grad(set_to_none=True)
            out = self.estimator.estimate(Unroll(instances, params, grads, state, start, steps,
                                                 initial_loss, cfg.horizon))
            out.finite, out.meta_loss = self.sync.reduce_gradients(
                self.optimizer.parameters(), out.finite, out.meta_loss)
            if out.finite:
                out.finite = self._finish_gradient()
            if not out.finite:
                self.meta_optimizer.zero_grad(set_to_none=True)
                self._skip(out.meta_loss)
                break
            self.meta_optimizer.step()
            self.consecutive_skips = 0
            meta_losses.append(out.meta_loss)
            params, grads, state = out.params, out.grads, out.state
        return meta_losses

    def unroll(self, instances: Instances, params: Tensor, grads: Tensor, state: State,
               start: int, steps: int) -> UnrollOutcome:
        """One unroll through the estimator (meta-gradient left in ``.grad``); for tests."""
        initial_loss, _ = instances.loss_and_grad(instances.init_params, 0)
        return self.estimator.estimate(Unroll(instances, params, grads, state, start, steps,
                                              initial_loss, self.config.horizon))

    def _finish_gradient(self) -> bool:
        """Clip (if asked) and check the meta-gradient; False if it is not finite."""
        params = [p for p in self.optimizer.parameters() if p.grad is not None]
        if not params:
            return True
        if self.config.clip_grad_norm is not None:
            norm = nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm)
        else:
            norm = torch.norm(torch.stack([p.grad.norm() for p in params]))
        return bool(torch.isfinite(norm))

    def _skip(self, meta_loss: float) -> None:
        self.skipped += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.config.max_consecutive_skips:
            self.save_latest()
            raise MetaTrainingDiverged(
                f"{self.consecutive_skips} meta-steps in a row had a non-finite meta-loss or "
                f"meta-gradient (last meta-loss {meta_loss}) at iteration {self.iteration}; the "
                "learned weights were left untouched. Lower meta.meta_lr, set "
                "meta.clip_grad_norm, lower the optimizer's output scale, or shorten meta.unroll."
            )

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> float:
        """The frozen optimizer's validation score (mean final loss on fixed problems)."""
        return self.sync.from_writer(lambda: self.validator.score(self.optimizer))

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
            if self.population is not None:
                meta_losses = self.train_population()
            else:
                meta_losses = self.train_task(self.sample_task(self.iteration))
            self.iteration += 1
            mean_loss = sum(meta_losses) / len(meta_losses) if meta_losses else math.nan
            self.history["meta_loss"].append(mean_loss)
            for callback in self.callbacks:
                callback.on_task_end(self, self.iteration, mean_loss)
            if self.iteration % cfg.val_every == 0 or self.iteration == cfg.iterations:
                self._validate_and_keep_best()
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == end:
                self.save_latest()
            reasons = [r for c in self.callbacks if (r := c.stop_requested(self))]
            if self.sync.any(bool(reasons)) and self.iteration < end:
                reasons = reasons or ["another process was asked to stop"]
                self.save_latest()
                raise MetaTrainingInterrupted(
                    f"{reasons[0]}: meta-training stopped after iteration {self.iteration} of "
                    f"{cfg.iterations}" + (f", saved in {self.latest_path}" if self.run_dir
                                           else ""))
        return {"iterations": self.iteration, "best_val_loss": self.best_val,
                "best_iteration": self.validator.best_iteration,
                "untrained_val_loss": self.untrained_val,
                "skipped": self.skipped, "history": self.history}

    def _validate_and_keep_best(self) -> None:
        val = self.validate()
        if self.iteration == 0:
            self.untrained_val = val
        self.history["val_loss"].append(val)
        self.history["val_iteration"].append(self.iteration)
        improved = self.validator.offer(val, self.optimizer.state_dict(), self.iteration)
        if improved and self.run_dir is not None and self.sync.is_writer:
            checkpoint.save_atomic(
                {"optimizer": self.optimizer.payload(self.validator.best_weights),
                 "iteration": self.iteration, "val_loss": val,
                 "untrained_val_loss": self.untrained_val,
                 "meta_config": asdict(self.config), "identity": self.identity},
                self.best_path)
        for callback in self.callbacks:
            callback.on_validation(self, self.iteration, val, improved)
        if self.run_dir is not None:
            self.save_latest()

    # -- checkpoints ---------------------------------------------------------------------------

    def save_latest(self) -> None:
        """Write ``latest.pt`` atomically, keeping the one before as ``previous.pt``."""
        if self.run_dir is None or not self.sync.is_writer:
            return
        population = {} if self.population is None else {
            "population": self.population.state_dict(),
            "estimator": self.estimator.state_dict()}
        checkpoint.save_atomic(
            {
                **population,
                "optimizer": self.optimizer.payload(),
                "best": self.optimizer.payload(self.best_weights),
                "best_val": self.best_val,
                "best_iteration": self.validator.best_iteration,
                "untrained_val": self.untrained_val,
                "meta_optimizer": self.meta_optimizer.state_dict(),
                "iteration": self.iteration,
                "history": self.history,
                "skipped": self.skipped,
                "consecutive_skips": self.consecutive_skips,
                "meta_config": asdict(self.config),
                "identity": self.identity,
                "rng": torch.get_rng_state(),
            },
            self.latest_path, previous=self.previous_path,
        )

    def _resume_or_start(self) -> None:
        """Resume from ``latest.pt`` (or ``previous.pt`` if ``latest.pt`` is damaged or
        missing); starting afresh, adopt an existing ``best.pt``'s score so that it is only
        ever replaced by a better validation."""
        candidates = [p for p in (self.latest_path, self.previous_path) if p.exists()]
        problems = []
        for path in candidates:
            try:
                payload = checkpoint.load(path, map_location=self.device)
            except checkpoint.CheckpointError as error:
                problems.append(str(error))
                warnings.warn(f"{error}; trying the previous checkpoint", RuntimeWarning,
                              stacklevel=2)
                continue
            self._check_resumable(payload, str(path))
            self._restore(payload, str(path))
            self.resumed_from = path
            if self.best_path.exists():
                self._keep_better_best()
            return
        if candidates:
            warnings.warn(f"no usable checkpoint to resume from ({'; '.join(problems)}); "
                          "meta-training starts afresh", RuntimeWarning, stacklevel=2)
        if self.best_path.exists():
            self._adopt_best()

    def _check_resumable(self, payload: dict[str, Any], source: str) -> None:
        """Refuse a resume that would change what is being learned (with the differences), or
        from a checkpoint that lacks a field :meth:`_restore` needs (an older or edited one)."""
        missing = [key for key in RESUME_FIELDS if key not in payload]
        if missing:
            raise checkpoint.CheckpointError(
                f"{source} lacks the field(s) {', '.join(map(repr, missing))} needed to resume "
                "(an older l2l wrote it, or it was edited): move it and previous.pt out of "
                "checkpoints/ to start afresh, or start a new run with another run_name")
        saved = dict(payload.get("meta_config") or {})
        now = asdict(self.config)
        diff = {k: (saved.get(k), now[k]) for k in now
                if k not in RESUMABLE_CHANGES and k in saved and saved[k] != now[k]}
        old_identity = payload.get("identity") or {}
        for key in sorted(old_identity):  # checkpoints record what they knew to record
            if old_identity.get(key) != self.identity.get(key):
                diff[key] = (old_identity.get(key), self.identity.get(key))
        if diff:
            shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise checkpoint.CheckpointError(
                f"{source} was trained with other settings ({shown}); a resume may only change "
                f"{', '.join('meta.' + k for k in RESUMABLE_CHANGES)}. Rerun with the original "
                "settings, or start a new run with another run_name")
        checkpoint.optimizer_from_payload(payload["optimizer"], expect=self.optimizer,
                                          source=source)

    def _restore(self, payload: dict[str, Any], source: str) -> None:
        restored = checkpoint.optimizer_from_payload(payload["optimizer"], expect=self.optimizer,
                                                     source=source)
        self.optimizer.load_state_dict(restored.state_dict())
        best = checkpoint.optimizer_from_payload(payload["best"], source=source)
        self.validator.best_weights = {k: v.to(self.device) for k, v in best.state_dict().items()}
        self.validator.best_val = payload["best_val"]
        self.validator.best_iteration = payload.get("best_iteration")
        self.untrained_val = payload.get("untrained_val")
        self.meta_optimizer.load_state_dict(payload["meta_optimizer"])
        self.iteration = payload["iteration"]
        self.history = payload["history"]
        self.skipped = payload["skipped"]
        self.consecutive_skips = payload["consecutive_skips"]
        torch.set_rng_state(payload["rng"].cpu())
        if self.population is not None:
            if "population" not in payload:
                raise checkpoint.CheckpointError(
                    f"{source} holds no population state for meta.estimator="
                    f"{self.config.estimator}; start a new run with another run_name")
            self.population.load_state_dict(payload["population"])
            self.estimator.load_state_dict(payload["estimator"])

    def _read_best(self) -> tuple[float, dict[str, Tensor], int | None]:
        """``best.pt``'s validation score, weights and iteration (refused if it is unreadable
        or holds another optimizer: l2l never replaces a best checkpoint it cannot compare)."""
        try:
            payload = checkpoint.load(self.best_path, map_location=self.device)
            best = checkpoint.optimizer_from_payload(payload["optimizer"], source=str(
                self.best_path))
        except (checkpoint.CheckpointError, KeyError) as error:
            raise checkpoint.CheckpointError(
                f"{self.best_path} exists but cannot be read ({error}); move it away to start "
                "afresh (l2l never replaces a best checkpoint it cannot compare with)") from error
        if best.name != self.optimizer.name or best.config != self.optimizer.config:
            raise checkpoint.CheckpointError(
                f"{self.best_path} holds another optimizer ({best.name}: {best.extra_repr()}); "
                "start a new run with another run_name")
        weights = {k: v.to(self.device) for k, v in best.state_dict().items()}
        return float(payload.get("val_loss", math.inf)), weights, payload.get("iteration")

    def _keep_better_best(self) -> None:
        """A resume beside a ``best.pt`` better than ``latest.pt`` records (a kill between
        writing the two): its score is the one to beat, so ``best.pt`` never gets worse."""
        val, weights, iteration = self._read_best()
        if val < self.validator.best_val:
            self.validator.best_val = val
            self.validator.best_weights = weights
            self.validator.best_iteration = iteration

    def _adopt_best(self) -> None:
        """A fresh start beside an existing ``best.pt``: its score must be beaten to replace it
        (the untrained optimizer's first validation would otherwise overwrite a trained one)."""
        val, weights, iteration = self._read_best()
        self.validator.best_val = val
        self.validator.best_weights = weights
        self.validator.best_iteration = iteration
        warnings.warn(f"starting afresh beside {self.best_path} (validation "
                      f"{self.validator.best_val:.4g}): it is kept unless beaten",
                      RuntimeWarning, stacklevel=2)
