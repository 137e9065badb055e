"""The held-out suite (issue 22): learned optimizers scored as the field scores them.

    python train.py experiment=suite checkpoints=[runs/.../best.pt,rnnprop-mnist-mixture]

:mod:`l2l.suite.spec` reads the suite (``conf/suite/heldout.yaml``: tasks with horizons),
:mod:`l2l.suite.cache` keeps tuned baselines on disk, :mod:`l2l.suite.run` evaluates,
:mod:`l2l.suite.scoring` holds the statistics (ratios, speed-ups, IQM, stratified bootstrap,
performance profile) and :mod:`l2l.suite.report` writes ``suite.md``, ``suite.json`` and
``suite_profile.png``.
"""

from __future__ import annotations

from l2l.suite.plan import SuitePlan
from l2l.suite.run import prepare, run_suite

__all__ = ["SuitePlan", "prepare", "run_suite"]
