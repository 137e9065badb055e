"""l2l: learned optimizers (Andrychowicz et al., 2016) and fair comparisons with classic ones.

The pieces most code needs::

    from l2l import TorchOptimizer, LSTMOptimizer, build_optimizer, build_task, load_optimizer
"""

from importlib import import_module
from typing import Any

#: public name -> the module defining it; imported on first use (PEP 562), so that importing
#: ``l2l`` (which every ``baselines`` module does, for ``l2l.interface``) pulls in nothing else:
#: the learned optimizers import ``baselines`` in turn, and an eager import here made
#: ``import baselines`` before ``import l2l`` fail with a circular import.
_EXPORTS = {
    "BatchedOptimizer": "l2l.interface",
    "Hyper": "l2l.interface",
    "State": "l2l.interface",
    "LSTMOptimizer": "l2l.learned.lstm",
    "LearnedOptimizer": "l2l.learned.base",
    "MetaConfig": "l2l.meta_training",
    "MetaTrainer": "l2l.meta_training",
    "TorchOptimizer": "l2l.torch_optimizer",
    "build_optimizer": "l2l.registry",
    "build_task": "l2l.tasks",
    "load_optimizer": "l2l.loading",
    "Provenance": "l2l.loading",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'l2l' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "BatchedOptimizer",
    "Hyper",
    "LSTMOptimizer",
    "LearnedOptimizer",
    "MetaConfig",
    "MetaTrainer",
    "Provenance",
    "State",
    "TorchOptimizer",
    "build_optimizer",
    "build_task",
    "load_optimizer",
]
