"""Task families (optimizees): random quadratics and small MNIST MLPs, plus ``build_task``."""

from __future__ import annotations

from typing import Any

from l2l.tasks.base import SPLITS, Instances, TaskFamily
from l2l.tasks.mnist_data import (
    MNIST,
    MNISTChecksumError,
    MNISTDownloadError,
    MNISTNotFoundError,
    load_mnist,
    resolve_data_dir,
)
from l2l.tasks.mnist_mlp import MNIST_VARIANTS, MNISTMLPFamily, MNISTMLPInstances
from l2l.tasks.quadratic import QuadraticFamily, QuadraticInstances

TASK_NAMES = ("quadratic", "quadratic_official", *MNIST_VARIANTS)


def build_task(name: str, **kwargs: Any) -> TaskFamily:
    """The task family called ``name``; ``kwargs`` override the name's defaults.

    Names: ``quadratic`` (paper: Gaussian ``W``, ``y``), ``quadratic_official`` (uniform),
    and the MNIST variants ``mnist``, ``mnist_40``, ``mnist_2layer``, ``mnist_relu``.
    """
    if name == "quadratic":
        family: TaskFamily = QuadraticFamily(**kwargs)
    elif name == "quadratic_official":
        family = QuadraticFamily(**{"w_dist": "uniform", "y_dist": "uniform", **kwargs})
    elif name in MNIST_VARIANTS:
        family = MNISTMLPFamily(**{**MNIST_VARIANTS[name], **kwargs})
    else:
        raise ValueError(f"unknown task {name!r}: valid names are {', '.join(TASK_NAMES)}")
    family.name = name
    return family


__all__ = [
    "MNIST",
    "MNIST_VARIANTS",
    "SPLITS",
    "TASK_NAMES",
    "Instances",
    "MNISTChecksumError",
    "MNISTDownloadError",
    "MNISTMLPFamily",
    "MNISTMLPInstances",
    "MNISTNotFoundError",
    "QuadraticFamily",
    "QuadraticInstances",
    "TaskFamily",
    "build_task",
    "load_mnist",
    "resolve_data_dir",
]
