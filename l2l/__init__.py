"""l2l: learned optimizers (Andrychowicz et al., 2016) and fair comparisons with classic ones.

The pieces most code needs::

    from l2l import TorchOptimizer, LSTMOptimizer, build_optimizer, build_task
"""

from l2l.config_store import register_configs
from l2l.interface import BatchedOptimizer, Hyper, State
from l2l.lstm_optimizer import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.registry import build_optimizer
from l2l.tasks import build_task
from l2l.torch_optimizer import TorchOptimizer

register_configs()  # optimizer defaults for conf/optimizer/*.yaml (see l2l/config_store.py)

__all__ = [
    "BatchedOptimizer",
    "Hyper",
    "LSTMOptimizer",
    "MetaConfig",
    "MetaTrainer",
    "State",
    "TorchOptimizer",
    "build_optimizer",
    "build_task",
]
