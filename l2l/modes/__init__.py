"""The modes of ``train.py``, side by side: one module each, read top to bottom.

Each mode module has two functions of the resolved config, the task, the device and the run
directory:

* ``check(cfg, task, device, run_dir)`` runs with the input checks, before the run's record,
  logger or wandb run exist: it raises to refuse the run, and returns what ``run`` needs
  (the generalization study's or the suite's checked plan), else None;
* ``run(cfg, task, device, run_dir, logger, checked)`` does the work and returns the best
  final loss (None where a mode has none).

The modes share what lies below them (:mod:`l2l.protocol`, :mod:`l2l.meta_run`,
:mod:`l2l.run_config`, :mod:`l2l.presets`, :mod:`l2l.loading`, :mod:`l2l.report`) and never
import one another.
"""

from __future__ import annotations

from types import ModuleType

from l2l.modes import compare, evaluate, generalization, meta_train, suite, tune

#: mode name (``mode=``) -> its module, with ``check`` and ``run``
MODES: dict[str, ModuleType] = {"meta_train": meta_train, "evaluate": evaluate, "tune": tune,
                                "compare": compare, "generalization": generalization,
                                "suite": suite}


def mode(name: str) -> ModuleType:
    """The module of mode ``name``; an unknown one is an error listing them."""
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}: choose one of {', '.join(MODES)}")
    return MODES[name]
