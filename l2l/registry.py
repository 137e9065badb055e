"""Build any optimizer from a name and plain hyperparameters (what a config file holds)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from l2l.interface import BatchedOptimizer

#: name -> "module:Class"; resolved lazily so that `baselines` and `l2l` never import in a cycle.
OPTIMIZERS: dict[str, str] = {
    "sgd": "baselines:SGD",
    "momentum": "baselines:Momentum",
    "nag": "baselines:NAG",
    "adagrad": "baselines:AdaGrad",
    "rmsprop": "baselines:RMSProp",
    "adadelta": "baselines:AdaDelta",
    "adam": "baselines:Adam",
    "nadam": "baselines:Nadam",
    "lstm": "l2l.lstm_optimizer:LSTMOptimizer",
}

BASELINES = tuple(name for name in OPTIMIZERS if name != "lstm")


def optimizer_class(name: str) -> type[BatchedOptimizer]:
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    module, cls = OPTIMIZERS[key].split(":")
    return getattr(importlib.import_module(module), cls)


def build_optimizer(name: str, **hyperparameters: Any) -> BatchedOptimizer:
    """``build_optimizer("adam", lr=0.01, betas=[0.9, 0.99])``; lists become tuples."""
    cls = optimizer_class(name)
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for optimizer {name!r}: "
            f"valid ones are {', '.join(allowed)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items()}
    return cls(**values)
