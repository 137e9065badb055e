"""One way to get an optimizer from its name or file: :func:`load_optimizer`.

A spec is, in the order tried:

* a checkpoint file (a run's ``checkpoints/best.pt``, a copy of one, a zoo file);
* a run directory (its ``checkpoints/best.pt``);
* a pretrained zoo name (``lstm-quadratic``, :mod:`l2l.pretrained`), checked against its sha256;
* a hand-designed optimizer's name with its hyperparameters (``"adam", lr=0.01``).

Each comes back with its :class:`Provenance` -- where it came from and what it knows of its
meta-training -- so that reports, the generalization study and ``train.py`` say what ran
without reopening the file.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from l2l.checkpoint import CheckpointError, load, stored_optimizer
from l2l.interface import BatchedOptimizer
from l2l.pretrained import zoo
from l2l.registry import baseline_names, build_optimizer, learned_names

log = logging.getLogger("l2l")

KINDS = ("checkpoint", "run", "zoo", "baseline")


@dataclass(frozen=True)
class Provenance:
    """Where an optimizer came from: ``kind`` (one of :data:`KINDS`), the ``spec`` as given,
    the file (with its sha256) where there is one, and what the checkpoint records of its
    meta-training (task identity, seed, horizon, the iteration its weights are from)."""

    kind: str
    spec: str
    name: str  #: the optimizer's registry name
    path: Path | None = None
    sha256: str | None = None
    zoo_name: str | None = None
    trained_on: Mapping[str, Any] | None = None  #: the training task's identity, if recorded
    seed: int | None = None  #: the meta-training seed, if recorded
    horizon: int | None = None  #: the meta-training horizon (steps per task), if recorded
    iteration: int | None = None  #: the meta-training iteration of the weights (0: untrained)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)


class Loaded(NamedTuple):
    """What :func:`load_optimizer` returns: unpack it (``opt, where = load_optimizer(...)``)."""

    optimizer: BatchedOptimizer
    provenance: Provenance


def _locate(spec: str | Path) -> tuple[str, zoo.Found | None]:
    """``(kind, where)``: ``where`` the checkpoint file a spec names with its zoo entry (a file,
    a run directory, a zoo name or a ``l2l/pretrained/<name>.pt`` path, zoo files checked
    against their sha256), None for a baseline's name. Raises the one-line error for a spec
    that is none of these, or a run directory without ``checkpoints/best.pt``."""
    given = Path(spec)
    if given.is_dir():
        best = given / "checkpoints" / "best.pt"
        if not best.is_file():
            raise CheckpointError(f"run directory {given} has no checkpoints/best.pt: "
                                  "point to a meta-training run's directory or a checkpoint")
        return "run", zoo.Found(best, None, None)
    found = zoo.find(spec)
    if found is not None:
        return ("zoo" if found.entry is not None else "checkpoint"), found
    if str(spec).lower() in baseline_names():
        return "baseline", None
    if str(spec).lower() in learned_names():
        raise CheckpointError(f"{spec} is a learned optimizer, which needs its trained weights: "
                              "give a checkpoint file, a run directory or a pretrained name "
                              f"({', '.join(zoo.index()) or 'none'})")
    raise unknown_spec(spec)


def unknown_spec(spec: str | Path) -> CheckpointError:
    """The one-line error for a spec that is none of the kinds, with the closest names."""
    text = str(spec)
    known = [*zoo.index(), *baseline_names()]
    close = difflib.get_close_matches(text, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return CheckpointError(
        f"checkpoint={text} does not exist: {hint}give a checkpoint file (a run's "
        f"checkpoints/best.pt), a run directory, a pretrained optimizer's name "
        f"({', '.join(zoo.index()) or 'none'}) or a hand-designed optimizer's name "
        f"({', '.join(baseline_names())})")


def resolve(spec: str | Path) -> tuple[str, Path | None]:
    """``(kind, file)`` of a spec without loading it (``file`` is None for a baseline name):
    the check ``train.py`` makes before any work. Raises the error :func:`load_optimizer`
    would."""
    kind, where = _locate(spec)
    return kind, where.file if where is not None else None


def file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_optimizer(spec: str | Path, device: str | torch.device = "cpu", *,
                   expected: str | None = None, **hyperparameters: Any) -> Loaded:
    """The optimizer ``spec`` names (see the module's docstring) and its provenance.

    ``hyperparameters`` go to a hand-designed optimizer (``load_optimizer("adam", lr=0.01)``);
    a checkpoint's optimizer is what it stores, so they are refused there. ``expected``: the
    optimizer the run's config names; a checkpoint of another one is logged, not refused (the
    checkpoint decides). A zoo entry logs what it suits and fails on."""
    kind, found = _locate(spec)
    if found is None:
        optimizer = build_optimizer(str(spec), **hyperparameters)
        return Loaded(optimizer, Provenance(kind, str(spec), optimizer.name,
                                            hyperparameters=dict(hyperparameters)))
    if hyperparameters:
        raise ValueError(f"hyperparameters {sorted(hyperparameters)} were given with the "
                         f"checkpoint {spec}, which stores its optimizer: drop them")
    file, record = found.file, found.entry
    payload = load(file, map_location=device)
    learned = stored_optimizer(payload, file, device)
    if record is not None:
        learned.pretrained_name = record["name"]
    meta = payload.get("meta_config") or {}
    where = Provenance(kind, str(spec), learned.name, path=file, sha256=file_sha256(file),
                       zoo_name=record["name"] if record else None,
                       trained_on=(payload.get("identity") or {}).get("task"),
                       seed=meta.get("seed"), horizon=meta.get("horizon"),
                       iteration=learned.meta_trained_iterations)
    if expected is not None and learned.name != expected:
        log.info("checkpoint %s holds a %s optimizer (optimizer=%s ignored)", spec,
                 learned.name, expected)
    if record is not None:  # a zoo entry: what it is, suits and fails on, in one line
        log.info(found.summary)
    else:
        log.info("loaded the learned optimizer from %s (%s: %s)", file, learned.name,
                 learned.extra_repr())
    return Loaded(learned, where)
