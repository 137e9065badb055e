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
* the settings: ``l2l.meta_config.MetaConfig``;
* validation and best-model selection: ``l2l.validation.Validator``;
* what happens on events (progress, logging, printing): :class:`Callback` objects;
* checkpoints: ``latest.pt`` (everything needed to resume bit for bit) and ``best.pt``, as
  typed snapshots (``l2l.meta_snapshot``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2l import checkpoint
from l2l.env.distributed import Synchronizer
from l2l.env.runtime import problem_size, resolve_compile
from l2l.env.runtime_cache import compiled
from l2l.estimators import UnrollOutcome, choose_estimator
from l2l.estimators.base import Unroll
from l2l.interface import State, with_horizon
from l2l.learned.base import LearnedOptimizer
from l2l.meta_config import MetaConfig
from l2l.meta_snapshot import BestCheckpoint, MetaSnapshot, resume_or_start
from l2l.mixture_population import MixturePopulation, build_population
from l2l.objectives import build_objective
from l2l.tasks.base import Instances, TaskFamily
from l2l.tasks.scaled import random_scale
from l2l.truncated_step import TruncatedStep
from l2l.unroll_lengths import LengthSchedule
from l2l.validation import Validator

log = logging.getLogger("l2l")


class MetaTrainingDiverged(RuntimeError):
    """Meta-training kept producing non-finite losses or meta-gradients."""


class MetaTrainingInterrupted(RuntimeError):
    """A callback asked the run to stop (a signal); ``latest.pt`` was written first."""

    def __init__(self, message: str, signal_number: int | None = None) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class Callback:
    """Hooks called by :class:`MetaTrainer`; override the ones you need."""

    def on_train_begin(self, trainer: MetaTrainer) -> None:
        """When :meth:`MetaTrainer.train` starts (``trainer.iteration`` > 0 on a resume)."""

    def on_train_end(self, trainer: MetaTrainer, result: dict[str, Any] | None) -> None:
        """When it ends: with its result, or ``None`` when it was interrupted or failed."""

    def on_task_end(self, trainer: MetaTrainer, iteration: int, meta_loss: float) -> None:
        """After each meta-iteration (task); ``meta_loss`` is the mean over its unrolls."""

    def on_validation(self, trainer: MetaTrainer, iteration: int, val_loss: float,
                      improved: bool) -> None:
        """After each validation; ``improved`` if it became the best checkpoint."""

    def stop_requested(self, trainer: MetaTrainer) -> str | None:
        """Checked after every task: a reason to stop now (``latest.pt`` is written first)."""
        return None


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
        processes of a data-parallel run agree (``l2l.env.distributed``); default: one process."""
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
        self.seconds = math.nan  #: the wall time of the last meta-iteration
        self.consecutive_skips = 0
        val_seed = config.seed if config.val_seed is None else config.val_seed
        self.validator = Validator(task, instances=config.val_instances, seed=val_seed,
                                   horizon=config.horizon, device=self.device)
        if config.objective_split == "valid":
            self._check_held_out()
        estimator = choose_estimator(config.estimator, optimizer,
                                     second_order=config.second_order)
        population = getattr(estimator, "population", False)
        # the population's particles update through torch.func (never the compiled update)
        self.compiled = not population and resolve_compile(
            config.compile, problem_size=problem_size(task), device=self.device)
        update = compiled(optimizer.update) if self.compiled else optimizer.update
        extra = {"sigma": config.sigma, "seed": config.seed,
                 "difference": config.es_difference} if population else {}
        self.estimator = estimator(update, build_objective(config.objective),
                                   second_order=config.second_order, optimizer=optimizer, **extra)
        #: the particles of a population estimator (pes, es, full_es); None for TBPTT
        self.population = self._population() if population else None
        if population:
            self.estimator.any = self.sync.any
        self.resumed_from: Path | None = None
        if self.run_dir is not None:
            self.resumed_from = resume_or_start(self)
        self.sync.check_same(self.iteration, self.optimizer.parameters())

    def _check_held_out(self) -> None:
        for family in getattr(self.task, "components", [self.task]):
            try:
                family.sample(1, self.config.seed, "train", device=self.device).held_out()
            except NotImplementedError:
                raise ValueError(
                    f"meta.objective_split=valid needs held-out data, and task {family.name} has "
                    "no data split: use meta.objective_split=train, or a task with data (the "
                    "mnist_* families)") from None

    def _held_out(self, instances: Instances) -> Instances | None:
        return instances.held_out() if self.config.objective_split == "valid" else None

    def _population(self) -> TruncatedStep | MixturePopulation:
        """This process's particles: with several processes (torchrun, SLURM), each owns an
        equal share of the antithetic pairs and the estimates are averaged over processes."""
        cfg, world = self.config, self.sync.world_size
        pairs = cfg.particles // 2
        if pairs % world:
            raise ValueError(f"meta.particles={cfg.particles} ({pairs} antithetic pairs) cannot "
                             f"be split over {world} processes: choose a multiple of "
                             f"{2 * world}")
        lengths = self.length_schedule()
        population = build_population(
            self.task, self.optimizer, self.estimator.objective, pairs=pairs // world,
            first_pair=self.sync.rank * (pairs // world), total_pairs=pairs, lengths=lengths,
            seed=cfg.seed, random_offsets=self.estimator.random_offsets,
            scale_range=cfg.scale_range, device=self.device,
            held_out=cfg.objective_split == "valid")
        if isinstance(population, MixturePopulation):
            shares = ", ".join(f"{name} {w:.3g}" for name, w in
                               zip(population.names, population.effective_weights))
            log.info("population: %d pairs stratified over the mixture's layouts (%s)", pairs,
                     shares)
        return population

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

    def length_schedule(self) -> LengthSchedule:
        """``meta.lengths``: every episode ``meta.horizon`` steps, or LogUniform(``min_length``,
        ``max_length``)."""
        cfg = self.config
        if cfg.lengths == "log_uniform":
            return LengthSchedule("log_uniform", cfg.min_length, cfg.max_length)
        return LengthSchedule("constant", cfg.horizon)

    def task_horizon(self, iteration: int) -> int:
        """Meta-iteration ``iteration``'s horizon, drawn from :meth:`length_schedule`
        (deterministic from the seed and the iteration). Horizon variation: an optimizer trained
        at one horizon learns that horizon's schedule, and the population estimators already draw
        a length per episode."""
        return self.length_schedule().draw(self.config.seed, iteration)

    def train_task(self, instances: Instances) -> list[float]:
        """Optimize one sample of instances for a whole horizon; one meta-step per unroll.

        Returns the meta-losses of the unrolls. A non-finite meta-loss or meta-gradient skips
        the meta-step (the learned weights stay as they were) and abandons the task.
        """
        cfg = self.config
        horizon = self.task_horizon(self.iteration)
        params = instances.init_params
        state = with_horizon(self.optimizer.init(params), horizon)
        initial_loss, grads = instances.loss_and_grad(params, 0)
        held_out = self._held_out(instances)
        if held_out is not None:
            initial_loss = held_out.loss(params, 0).detach()
        meta_losses = []
        for start in range(0, horizon, cfg.unroll):
            steps = min(cfg.unroll, horizon - start)
            self.meta_optimizer.zero_grad(set_to_none=True)
            out = self.estimator.estimate(Unroll(instances, params, grads, state, start, steps,
                                                 initial_loss, horizon, held_out))
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
        held_out = self._held_out(instances)
        initial_loss = (held_out or instances).loss(instances.init_params, 0).detach()
        return self.estimator.estimate(Unroll(instances, params, grads, state, start, steps,
                                              initial_loss, self.config.horizon, held_out))

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

    # -- the loop and its validation ------------------------------------------------------------

    def validate(self) -> float:
        """The frozen optimizer's validation score (mean final loss on fixed problems)."""
        return self.sync.from_writer(lambda: self.validator.score(self.optimizer))

    def train(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train up to ``config.iterations`` (or ``stop_after`` more iterations, to simulate an
        interruption); resumable at any point from ``run_dir``."""
        cfg = self.config
        end = cfg.iterations if stop_after is None else min(cfg.iterations,
                                                            self.iteration + stop_after)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        result = None
        try:
            result = self._train_until(end)
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self, result)
        return result

    def _train_until(self, end: int) -> dict[str, Any]:
        cfg = self.config
        if self.iteration == 0 and not self.history["val_loss"]:
            self._validate_and_keep_best()  # the untrained optimizer is the first candidate
        while self.iteration < end:
            start = time.perf_counter()
            meta_losses = (self.train_population() if self.population is not None
                           else self.train_task(self.sample_task(self.iteration)))
            self.seconds = time.perf_counter() - start  # validation and checkpoints excluded
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
        return {"iterations": self.iteration, "best_val_loss": self.validator.best_val,
                "best_iteration": self.validator.best_iteration,
                "untrained_val_loss": self.untrained_val, "skipped": self.skipped,
                "history": self.history,
                "best_path": self.best_path if self.run_dir is not None else None}

    def _validate_and_keep_best(self) -> None:
        val = self.validate()
        if self.iteration == 0:
            self.untrained_val = val
        self.history["val_loss"].append(val)
        self.history["val_iteration"].append(self.iteration)
        improved = self.validator.offer(val, self.optimizer.state_dict(), self.iteration)
        if improved and self.run_dir is not None and self.sync.is_writer:
            best = BestCheckpoint(self.optimizer.payload(self.validator.best_weights),
                                  self.iteration, val, self.untrained_val, asdict(self.config),
                                  self.identity)
            checkpoint.save_atomic(best.to_payload(), self.best_path)
        for callback in self.callbacks:
            callback.on_validation(self, self.iteration, val, improved)
        if self.run_dir is not None:
            self.save_latest()

    # -- checkpoints ---------------------------------------------------------------------------

    def save_latest(self) -> None:
        """Write ``latest.pt`` atomically, keeping the one before as ``previous.pt``."""
        if self.run_dir is None:
            return
        snapshot = MetaSnapshot.capture(self)  # every rank: it gathers split populations
        if self.sync.is_writer:
            checkpoint.save_atomic(snapshot.to_payload(), self.latest_path,
                                   previous=self.previous_path)
