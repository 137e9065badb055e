"""What a meta-training checkpoint holds, what a resume may change, and how a run is restored.

Two files per run, both plain payloads (``l2l.checkpoint``: atomic writes, ``weights_only``
reads):

* ``latest.pt``, a :class:`MetaSnapshot`: everything a resume needs to continue bit for bit (the
  learned and the best weights, the meta-optimizer, the counters, the history, the torch RNG and,
  for the population estimators, the particles and the estimator's own state);
* ``best.pt``, a :class:`BestCheckpoint`: the best validated weights and their score.

The payload keys are the dataclass fields, unchanged since the first resumable l2l, so that every
``latest.pt`` written before this module still resumes (tests/fixtures holds two). A resume may
change the settings in :data:`RESUMABLE_CHANGES` only: the others, the task and the architecture
decide what is being learned and must match the checkpoint.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from l2l import checkpoint
from l2l.checkpoint import CheckpointError
from l2l.learned.base import LearnedOptimizer
from l2l.tasks.base import without_data_location

if TYPE_CHECKING:  # the trainer imports this module
    from l2l.meta_training import MetaTrainer

#: MetaConfig fields a resumed run may change (they do not alter what is being learned);
#: every other field, the task and the architecture must match the checkpoint.
RESUMABLE_CHANGES = ("iterations", "val_every", "checkpoint_every", "max_consecutive_skips",
                     "compile")

#: what a ``latest.pt`` must hold to be resumed from
RESUME_FIELDS = ("optimizer", "best", "best_val", "meta_optimizer", "iteration", "history",
                 "skipped", "consecutive_skips", "rng")


@dataclass
class MetaSnapshot:
    """A meta-training run at the end of one meta-iteration (``latest.pt``)."""

    optimizer: dict[str, Any]  #: the learned optimizer's payload (name, config, weights)
    best: dict[str, Any]  #: the best validated weights, as a payload
    best_val: float
    meta_optimizer: dict[str, Any]  #: the meta-optimizer's (Adam's) state_dict
    iteration: int
    history: dict[str, list]
    skipped: int
    consecutive_skips: int
    rng: Tensor  #: torch's global RNG state
    best_iteration: int | None = None
    untrained_val: float | None = None
    meta_config: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    population: dict[str, Any] | None = None  #: TruncatedStep.state_dict() (pes, es, full_es)
    estimator: dict[str, Any] | None = None  #: the population estimator's state_dict

    def to_payload(self) -> dict[str, Any]:
        """The plain dict ``latest.pt`` stores (population keys only where there is one)."""
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.population is None:
            del payload["population"], payload["estimator"]
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str) -> MetaSnapshot:
        """Read a ``latest.pt`` payload, refusing one that lacks a field a resume needs."""
        missing = [key for key in RESUME_FIELDS if key not in payload]
        if missing:
            raise CheckpointError(
                f"{source} lacks the field(s) {', '.join(map(repr, missing))} needed to resume "
                "(an older l2l wrote it, or it was edited): move it and previous.pt out of "
                "checkpoints/ to start afresh, or start a new run with another run_name")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known}
        values["meta_config"] = dict(values.get("meta_config") or {})
        values["identity"] = dict(values.get("identity") or {})
        return cls(**values)

    @classmethod
    def capture(cls, trainer: MetaTrainer) -> MetaSnapshot:
        """The trainer's state now."""
        population, estimator = None, None
        if trainer.population is not None:
            population = trainer.population.state_dict()
            estimator = trainer.estimator.state_dict()
            if trainer.sync.world_size > 1:  # each process owns some particles: keep them all
                ranks = trainer.sync.gather([population, estimator])
                population = {"ranks": [r[0] for r in ranks]}
                estimator = {"ranks": [r[1] for r in ranks]}
        validator = trainer.validator
        best = validator.best_or(trainer.optimizer.state_dict())
        return cls(
            optimizer=trainer.optimizer.payload(), best=trainer.optimizer.payload(best),
            best_val=validator.best_val, best_iteration=validator.best_iteration,
            untrained_val=trainer.untrained_val,
            meta_optimizer=trainer.meta_optimizer.state_dict(), iteration=trainer.iteration,
            history=trainer.history, skipped=trainer.skipped,
            consecutive_skips=trainer.consecutive_skips, meta_config=asdict(trainer.config),
            identity=trainer.identity, rng=torch.get_rng_state(),
            population=population, estimator=estimator)

    def check_resumable(self, trainer: MetaTrainer, source: str) -> None:
        """Refuse a resume that would change what is being learned, naming the differences."""
        now = asdict(trainer.config)
        saved = self.meta_config
        # a setting the checkpoint predates was at its default then, which is today's default
        diff = {k: (saved.get(k), now[k]) for k in now
                if k not in RESUMABLE_CHANGES and k in saved and saved[k] != now[k]}
        for key in sorted(self.identity):  # checkpoints record what they knew to record
            # (older ones recorded a mixture's components' data_dir: where is not what)
            saved_identity = without_data_location(self.identity.get(key))
            if saved_identity != without_data_location(trainer.identity.get(key)):
                diff[key] = (saved_identity, trainer.identity.get(key))
        if diff:
            shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(
                f"{source} was trained with other settings ({shown}); a resume may only change "
                f"{', '.join('meta.' + k for k in RESUMABLE_CHANGES)}. Rerun with the original "
                "settings, or start a new run with another run_name")
        checkpoint.optimizer_from_payload(self.optimizer, expect=trainer.optimizer,
                                          source=source)
        if trainer.population is not None and self.population is None:
            raise CheckpointError(
                f"{source} holds no population state for meta.estimator="
                f"{trainer.config.estimator}; start a new run with another run_name")
        if self.population is not None:
            split = len(self.population.get("ranks", [None]))
            if split != trainer.sync.world_size:
                raise CheckpointError(
                    f"{source} holds a population split over {split} process(es), this run has "
                    f"{trainer.sync.world_size}: resume it with {split} (the particles are "
                    "owned by the processes)")

    def restore(self, trainer: MetaTrainer, source: str) -> None:
        """Put the trainer where the snapshot was (after :meth:`check_resumable`)."""
        device = trainer.device
        restored = checkpoint.optimizer_from_payload(self.optimizer, expect=trainer.optimizer,
                                                     source=source)
        trainer.optimizer.load_state_dict(restored.state_dict())
        best = checkpoint.optimizer_from_payload(self.best, source=source)
        trainer.validator.best_weights = {k: v.to(device) for k, v in best.state_dict().items()}
        trainer.validator.best_val = self.best_val
        trainer.validator.best_iteration = self.best_iteration
        trainer.untrained_val = self.untrained_val
        trainer.meta_optimizer.load_state_dict(self.meta_optimizer)
        trainer.iteration = self.iteration
        trainer.history = self.history
        trainer.skipped = self.skipped
        trainer.consecutive_skips = self.consecutive_skips
        torch.set_rng_state(self.rng.cpu())
        if trainer.population is not None:
            rank = trainer.sync.rank
            trainer.population.load_state_dict(_own(self.population, rank))
            trainer.estimator.load_state_dict(_own(self.estimator, rank))


def _own(saved: dict[str, Any], rank: int) -> dict[str, Any]:
    """A process's share of a population state (split over processes: one per rank)."""
    return saved["ranks"][rank] if "ranks" in saved else saved


@dataclass
class BestCheckpoint:
    """The best validated weights of a run (``best.pt``)."""

    optimizer: dict[str, Any]  #: payload
    iteration: int | None
    val_loss: float
    untrained_val_loss: float | None = None
    meta_config: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def read(cls, path: Path, expect: LearnedOptimizer,
             device: torch.device) -> tuple[float, dict[str, Tensor], int | None]:
        """``best.pt``'s score, weights and iteration (refused if it is unreadable or holds
        another optimizer: l2l never replaces a best checkpoint it cannot compare)."""
        try:
            payload = checkpoint.load(path, map_location=device)
            best = checkpoint.optimizer_from_payload(payload["optimizer"], source=str(path))
        except (CheckpointError, KeyError) as error:
            raise CheckpointError(
                f"{path} exists but cannot be read ({error}); move it away to start afresh (l2l "
                "never replaces a best checkpoint it cannot compare with)") from error
        if best.name != expect.name or best.config != expect.config:
            raise CheckpointError(f"{path} holds another optimizer ({best.name}: "
                                  f"{best.extra_repr()}); start a new run with another run_name")
        weights = {k: v.to(device) for k, v in best.state_dict().items()}
        return float(payload.get("val_loss", math.inf)), weights, payload.get("iteration")


def resume_or_start(trainer: MetaTrainer) -> Path | None:
    """Resume ``trainer`` from its ``latest.pt`` (or ``previous.pt`` if ``latest.pt`` is damaged
    or missing) and return the file used; starting afresh (None), adopt an existing ``best.pt``'s
    score so that it is only ever replaced by a better validation."""
    candidates = [p for p in (trainer.latest_path, trainer.previous_path) if p.exists()]
    problems = []
    validator = trainer.validator
    for path in candidates:
        try:
            payload = checkpoint.load(path, map_location=trainer.device)
        except CheckpointError as error:
            problems.append(str(error))
            warnings.warn(f"{error}; trying the previous checkpoint", RuntimeWarning,
                          stacklevel=3)
            continue
        snapshot = MetaSnapshot.from_payload(payload, str(path))
        snapshot.check_resumable(trainer, str(path))
        snapshot.restore(trainer, str(path))
        if trainer.best_path.exists():
            # a best.pt better than latest.pt records (a kill between writing the two) is the
            # score to beat, so best.pt never gets worse
            val, weights, iteration = BestCheckpoint.read(trainer.best_path, trainer.optimizer,
                                                          trainer.device)
            if val < validator.best_val:
                validator.best_val, validator.best_weights = val, weights
                validator.best_iteration = iteration
        return path
    if candidates:
        warnings.warn(f"no usable checkpoint to resume from ({'; '.join(problems)}); "
                      "meta-training starts afresh", RuntimeWarning, stacklevel=3)
    if trainer.best_path.exists():
        # the untrained optimizer's first validation would otherwise overwrite a trained one
        validator.best_val, validator.best_weights, validator.best_iteration = \
            BestCheckpoint.read(trainer.best_path, trainer.optimizer, trainer.device)
        warnings.warn(f"starting afresh beside {trainer.best_path} (validation "
                      f"{validator.best_val:.4g}): it is kept unless beaten", RuntimeWarning,
                      stacklevel=3)
    return None
