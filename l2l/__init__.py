"""l2l: learned optimizers (Andrychowicz et al., 2016) and fair comparisons with classic ones."""

from l2l.interface import BatchedOptimizer, Hyper, State

__all__ = ["BatchedOptimizer", "Hyper", "State"]
