"""A zoo of pretrained learned optimizers shipped inside the package.

Each entry is a meta-training run's ``best.pt`` copied to ``l2l/pretrained/<name>.pt`` and
described in ``index.json``: how it was trained (the exact command, seed, task, tasks kept and
run, validation score named), what it suits and where it fails on held-out problems (copied from
the studies, with the file they come from), what a step costs (``benchmarks/bench_dropin.py``)
and the file's sha256, so that a result can be reproduced or extended without meta-training
first, and nobody uses an entry where it is documented to fail without being told::

    import l2l.pretrained
    l2l.pretrained.list()                       # the entries, with how each was trained
    opt = l2l.pretrained.load("lstm-quadratic")  # a LearnedOptimizer, ready to use

One unit throughout: a *task* is one meta-training iteration, a meta-batch of
``problems_per_task`` problems (``meta.batch_size``); ``meta_training_tasks`` is where the kept
checkpoint was taken, ``run_tasks`` how long the run was.

``python -m l2l.pretrained`` prints the listing; ``python train.py checkpoint=lstm-quadratic``
(or ``checkpoint=l2l/pretrained/lstm-quadratic.pt``) uses an entry wherever a checkpoint goes.
New entries come from ``scripts/train_zoo.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from l2l.pretrained.zoo import (
    INDEX,
    ZOO_DIR,
    cost_text,
    describe,
    entries,
    entry,
    entry_of,
    index,
    is_zoo_name,
    names,
    path,
    recommended,
    resolve,
    score_name,
    sha256,
    suits_line,
    tasks_text,
    verify,
    warn_drop_in,
    warn_task,
)

if TYPE_CHECKING:
    import torch

    from l2l.learned.base import LearnedOptimizer


def load(name: str | Path, device: str | torch.device = "cpu") -> LearnedOptimizer:
    """The learned optimizer of zoo entry ``name`` (or of a checkpoint path), on ``device``:
    :func:`l2l.load_optimizer` without the provenance, kept as the documented name.

    A zoo entry's file is checked against its sha256, and what it suits and fails on is logged
    (one line): an entry used where it is documented to fail should not be a silent surprise.
    ``l2l.TorchOptimizer`` warns on modules it is documented to fail on (see ``warn_drop_in``)."""
    from l2l.loading import load_optimizer

    return load_optimizer(name, device=device).optimizer


list = entries  # noqa: A001 - ``l2l.pretrained.list()`` is the documented name

__all__ = ["INDEX", "ZOO_DIR", "cost_text", "describe", "entries", "entry", "entry_of", "index",
           "is_zoo_name", "list", "load", "names", "path", "recommended", "resolve",
           "score_name", "sha256", "suits_line", "tasks_text", "verify", "warn_drop_in",
           "warn_task"]
