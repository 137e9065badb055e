"""A zoo of pretrained learned optimizers shipped inside the package.

Each entry is a meta-training run's ``best.pt`` copied to ``l2l/pretrained/<name>.pt`` and
described in ``index.json`` (how it was trained: the exact command, seed, task, number of
meta-training tasks, validation score, l2l version, date), so that a result can be reproduced
or extended without meta-training first::

    import l2l.pretrained
    l2l.pretrained.list()                       # the entries, with how each was trained
    opt = l2l.pretrained.load("lstm-quadratic")  # a LearnedOptimizer, ready to use

``python -m l2l.pretrained`` prints the listing; ``python train.py checkpoint=lstm-quadratic``
(or ``checkpoint=l2l/pretrained/lstm-quadratic.pt``) uses an entry wherever a checkpoint goes.
New entries come from ``scripts/train_zoo.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from l2l.checkpoint import CheckpointError, load_learned_optimizer

if TYPE_CHECKING:
    from l2l.learned.base import LearnedOptimizer

ZOO_DIR = Path(__file__).resolve().parent
INDEX = ZOO_DIR / "index.json"


def index() -> dict[str, dict[str, Any]]:
    """The zoo's entries by name, as stored in ``index.json`` (empty if there is none)."""
    if not INDEX.is_file():
        return {}
    data = json.loads(INDEX.read_text(encoding="utf-8"))
    return {entry["name"]: entry for entry in data.get("entries", [])}


def names() -> tuple[str, ...]:
    """The names of the shipped entries."""
    return tuple(index())


def entry(name: str) -> dict[str, Any]:
    """One entry's index record; an unknown name is an error that lists the known ones."""
    entries = index()
    if name not in entries:
        known = ", ".join(entries) or "none"
        raise CheckpointError(f"{name!r} is neither a checkpoint file nor a pretrained "
                              f"optimizer (the zoo holds: {known})")
    return entries[name]


def path(name: str) -> Path:
    """The ``.pt`` file of the zoo entry ``name``."""
    return ZOO_DIR / entry(name)["file"]


def resolve(checkpoint: str | Path) -> Path:
    """A checkpoint argument as a file: an existing path, a zoo name, or a path of the form
    ``l2l/pretrained/<name>.pt`` (found inside the installed package from any working
    directory). Raises :class:`CheckpointError` naming the zoo entries when it is none of them."""
    given = Path(checkpoint)
    if given.is_file():
        return given
    if given.parent.parts[-2:] == ("l2l", "pretrained") and (ZOO_DIR / given.name).is_file():
        return ZOO_DIR / given.name
    text = str(checkpoint)
    if text in index():
        return path(text)
    known = ", ".join(index()) or "none"
    raise CheckpointError(f"checkpoint={text} does not exist: give a checkpoint file (a run's "
                          f"checkpoints/best.pt) or a pretrained optimizer's name ({known})")


def is_zoo_name(checkpoint: str | Path) -> bool:
    """Is ``checkpoint`` a zoo name rather than an existing file?"""
    return not Path(checkpoint).is_file() and str(checkpoint) in index()


def load(name: str, device: str | torch.device = "cpu") -> LearnedOptimizer:
    """The learned optimizer of zoo entry ``name`` (or of a checkpoint path), on ``device``."""
    return load_learned_optimizer(resolve(name), device)


def describe(record: dict[str, Any]) -> str:
    """One entry as a few human-readable lines: what it is and how it was trained."""
    score = record.get("val_loss")
    return "\n".join([
        f"{record['name']}: {record.get('optimizer')} meta-trained on {record.get('task')} "
        f"(seed {record.get('seed')}, {record.get('meta_training_tasks')} meta-training tasks, "
        f"best at iteration {record.get('iteration')}, validation final loss "
        f"{score if score is None else format(score, '.4g')})",
        f"  file:    {record.get('file')}",
        f"  command: {record.get('command')}",
        f"  l2l {record.get('l2l_version')}, {record.get('date')}",
        *([f"  note:    {record['note']}"] if record.get("note") else []),
    ])


def entries() -> list[dict[str, Any]]:
    """Every entry's index record, in index order (also printed by ``python -m l2l.pretrained``)."""
    return [*index().values()]


list = entries  # noqa: A001 - ``l2l.pretrained.list()`` is the documented name
