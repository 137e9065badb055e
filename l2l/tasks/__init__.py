"""Task families (optimizees) and ``build_task``, the registry of families by name.

A *family* is a class (quadratics, MNIST MLPs, CNNs, logistic regression, autoencoders, the
synthetic ill-conditioned quadratics, Rosenbrock, Gaussian logistic regression and
teacher-student MLPs, a character RNN); a *variant* such as the paper's ``mnist_40`` or the
official code's ``quadratic_official`` is a family plus keyword arguments, and lives only in
``conf/task/<variant>.yaml`` (``family:`` and ``kwargs:``), so each preset is defined in exactly
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from l2l.signatures import keyword_parameters
from l2l.tasks.augmented import AugmentedFamily, LossScaledInstances
from l2l.tasks.base import SPLITS, Instances, TaskFamily
from l2l.tasks.char_rnn import CharRNNFamily, CharRNNInstances
from l2l.tasks.conditioned_quadratic import (
    ConditionedQuadraticFamily,
    ConditionedQuadraticInstances,
)
from l2l.tasks.gaussian_logreg import GaussianLogRegFamily, GaussianLogRegInstances
from l2l.tasks.mixture import MixtureFamily
from l2l.tasks.mnist_autoencoder import MNISTAutoencoderFamily, MNISTAutoencoderInstances
from l2l.tasks.mnist_cnn import MNISTCNNFamily
from l2l.tasks.mnist_common import MNISTFamily, MNISTInstances
from l2l.tasks.mnist_data import (
    MNIST,
    MNISTChecksumError,
    MNISTDownloadError,
    MNISTNotFoundError,
    load_mnist,
    resolve_data_dir,
)
from l2l.tasks.mnist_logreg import MNISTLogRegFamily
from l2l.tasks.mnist_mlp import MNISTMLPFamily, MNISTMLPInstances
from l2l.tasks.quadratic import QuadraticFamily, QuadraticInstances
from l2l.tasks.rosenbrock import RosenbrockFamily, RosenbrockInstances
from l2l.tasks.teacher_student import TeacherStudentFamily, TeacherStudentInstances

#: family name -> class; ``build_task(name, **kwargs)`` is ``FAMILIES[name](**kwargs)``
FAMILIES: dict[str, type[TaskFamily]] = {
    "quadratic": QuadraticFamily,
    "mnist_mlp": MNISTMLPFamily,
    "mnist_cnn": MNISTCNNFamily,
    "mnist_logreg": MNISTLogRegFamily,
    "mixture": MixtureFamily,
    "conditioned_quadratic": ConditionedQuadraticFamily,
    "rosenbrock": RosenbrockFamily,
    "gaussian_logreg": GaussianLogRegFamily,
    "teacher_student": TeacherStudentFamily,
    "mnist_autoencoder": MNISTAutoencoderFamily,
    "char_rnn": CharRNNFamily,
    "augmented": AugmentedFamily,
}
TASK_NAMES = tuple(FAMILIES)


def build_task(name: str, **kwargs: Any) -> TaskFamily:
    """The task family ``name`` built with ``kwargs`` (its constructor's arguments).

    Families: ``quadratic``, ``mnist_mlp``, ``mnist_cnn``, ``mnist_logreg``,
    ``mnist_autoencoder``, ``mixture``, ``augmented`` (any family, augmented), and
    the synthetic ``conditioned_quadratic``, ``rosenbrock``, ``gaussian_logreg``,
    ``teacher_student``, ``char_rnn``. Presets (the
    paper's ``mnist``, ``mnist_40``, ``mnist_2layer``, ``mnist_relu``, the official code's
    ``quadratic_official``, ...) are ``conf/task`` yamls naming a family and its kwargs. An
    unknown name or keyword raises ``ValueError`` listing the valid ones, so that a config typo
    fails before any work.
    """
    cls = FAMILIES.get(name)
    if cls is None:
        raise ValueError(
            f"unknown task family {name!r}: valid names are {', '.join(FAMILIES)}. Presets "
            "such as mnist_40 or quadratic_official are conf/task/<preset>.yaml files whose "
            "`family:` field names the family and `kwargs:` its arguments."
        )
    valid = list(keyword_parameters(cls))
    unknown = sorted(k for k in kwargs if k not in valid)
    if unknown:
        raise ValueError(
            f"task family {name!r} got unknown argument(s) {', '.join(unknown)}: valid "
            f"arguments are {', '.join(valid)}"
        )
    if name == "mixture" and "components" in kwargs:  # tasks inside tasks: built here first
        kwargs["components"] = [build_component(c) if isinstance(c, Mapping) else c
                                for c in kwargs["components"]]
    if name == "augmented" and isinstance(kwargs.get("task"), Mapping):
        kwargs["task"] = build_component(kwargs["task"])
    family = cls(**kwargs)
    family.name = name
    return family


def build_component(spec: Mapping[str, Any]) -> TaskFamily:
    """A task inside another one's config (a mixture's component, the augmented family's base):
    a mapping ``{family, kwargs, name}``, built like any task."""
    if "family" not in spec:
        raise ValueError(f"a task inside a mixture or augmented task needs a `family:` (and "
                         f"optional kwargs:, name:), got {dict(spec)}")
    unknown = sorted(set(spec) - {"family", "kwargs", "name"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the task {dict(spec)}: use "
                         "family, kwargs and name")
    family = build_task(spec["family"], **dict(spec.get("kwargs") or {}))
    family.name = spec.get("name") or spec["family"]
    return family


__all__ = [
    "FAMILIES",
    "AugmentedFamily",
    "LossScaledInstances",
    "CharRNNFamily",
    "CharRNNInstances",
    "ConditionedQuadraticFamily",
    "ConditionedQuadraticInstances",
    "GaussianLogRegFamily",
    "GaussianLogRegInstances",
    "MNISTAutoencoderFamily",
    "MNISTAutoencoderInstances",
    "RosenbrockFamily",
    "RosenbrockInstances",
    "TeacherStudentFamily",
    "TeacherStudentInstances",
    "MNIST",
    "SPLITS",
    "TASK_NAMES",
    "Instances",
    "MNISTCNNFamily",
    "MNISTChecksumError",
    "MNISTDownloadError",
    "MNISTFamily",
    "MNISTInstances",
    "MNISTLogRegFamily",
    "MNISTMLPFamily",
    "MixtureFamily",
    "MNISTMLPInstances",
    "MNISTNotFoundError",
    "QuadraticFamily",
    "QuadraticInstances",
    "TaskFamily",
    "build_task",
    "load_mnist",
    "resolve_data_dir",
]
