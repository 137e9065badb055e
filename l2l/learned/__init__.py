"""Learned optimizers: one module per architecture, each a :class:`LearnedOptimizer`.

The registry (``l2l.registry``) discovers every subclass defined in this package's modules by
its ``name``; nothing else needs to be edited to add one (see docs/learned_optimizers.md, "Adding a
learned optimizer").
"""

from l2l.learned.adam_anchored import AdamAnchored
from l2l.learned.base import LearnedOptimizer
from l2l.learned.learnable import LearnableAdam, LearnableMomentum
from l2l.learned.lstm import LSTMOptimizer
from l2l.learned.mlp_lopt import MLPLOpt
from l2l.learned.rnnprop import RNNprop

__all__ = ["AdamAnchored", "LSTMOptimizer", "LearnableAdam", "LearnableMomentum",
           "LearnedOptimizer", "MLPLOpt", "RNNprop"]
