"""Kept for imports written before the learned-optimizer family: see ``l2l.learned.lstm``."""

from l2l.learned.lstm import LSTMOptimizer

__all__ = ["LSTMOptimizer"]
