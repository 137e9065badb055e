"""Every optimizer by name: the hand-designed ones in ``baselines/``, the learned ones in
``l2l/learned/``.

Both packages are scanned for classes that define their own ``name``, so adding an optimizer is
one new module (plus its config and tests) -- no list to edit here. The one question the rest of
l2l asks about a name is :func:`is_learned`: a learned optimizer is meta-trained and comes from a
checkpoint, a hand-designed one has its learning rate tuned.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
import sys
from typing import Any

from l2l.interface import BatchedOptimizer
from l2l.signatures import defaults, keyword_parameters

#: the baselines' conventional order (torch.optim's documentation order); others follow by name
_BASELINE_ORDER = ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam", "nadam")


def discover(package_name: str, base: type = BatchedOptimizer) -> dict[str, type]:
    """Classes derived from ``base`` that define their own ``name``, in a package's modules."""
    package = importlib.import_module(package_name)
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package_name}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            name = cls.__dict__.get("name")
            if (cls.__module__ == module.__name__ and issubclass(cls, base)
                    and isinstance(name, str) and not inspect.isabstract(cls)):
                if name in found and found[name] is not cls:
                    raise RuntimeError(f"two optimizers are named {name!r}: {found[name]} and "
                                       f"{cls}; rename one")
                found[name] = cls
    return found


@functools.cache
def baseline_classes() -> dict[str, type[BatchedOptimizer]]:
    """Hand-designed optimizers by name, in the conventional order."""
    found = discover("baselines")
    order = [n for n in _BASELINE_ORDER if n in found] + sorted(set(found) - set(_BASELINE_ORDER))
    return {name: found[name] for name in order}


@functools.cache
def learned_classes() -> dict[str, type[BatchedOptimizer]]:
    """Learned (meta-trainable) optimizers by name."""
    from l2l.learned.base import LearnedOptimizer

    found = discover("l2l.learned")
    return {name: cls for name, cls in sorted(found.items())
            if issubclass(cls, LearnedOptimizer)}


def optimizers() -> dict[str, type[BatchedOptimizer]]:
    return {**baseline_classes(), **learned_classes()}


def baseline_names() -> tuple[str, ...]:
    return tuple(baseline_classes())


def learned_names() -> tuple[str, ...]:
    return tuple(learned_classes())


def is_learned(name: str) -> bool:
    """Is ``name`` a meta-trainable optimizer (as opposed to a hand-designed one)?"""
    optimizer_class(name)  # unknown names are an error, not "not learned"
    return name.lower() in learned_classes()


def optimizer_class(name: str) -> type[BatchedOptimizer]:
    key = str(name).lower()
    classes = optimizers()
    if key not in classes:
        raise ValueError(
            f"unknown optimizer {name!r}: choose one of the hand-designed "
            f"{', '.join(baseline_classes())} or the learned {', '.join(learned_classes())}")
    return classes[key]


def build_optimizer(name: str, **hyperparameters: Any) -> BatchedOptimizer:
    """``build_optimizer("adam", lr=0.01, betas=[0.9, 0.99])``; lists become tuples.

    For a learned optimizer the hyperparameters are its architecture config; unknown ones are
    refused with the list of valid ones.
    """
    cls = optimizer_class(name)
    allowed = list(keyword_parameters(cls))
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for optimizer {name!r}: "
            f"valid ones are {', '.join(allowed)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items()}
    try:
        return cls(**values)
    except TypeError as error:  # e.g. a string where a number belongs
        raise ValueError(f"bad hyperparameters for optimizer {name!r}: {error}") from error


def optimizer_defaults(name: str) -> dict[str, Any]:
    """``{"name": name, "hyperparameters": {...}}`` from the class's constructor defaults (what
    :mod:`l2l.config_store` registers for ``conf/optimizer/<name>.yaml``)."""
    return {"name": name, "hyperparameters": defaults(optimizer_class(name))}


def describe() -> str:
    """Every optimizer, hand-designed and learned listed apart, with its hyperparameters."""
    lines = []
    for title, names in (("hand-designed", baseline_names()), ("learned", learned_names())):
        lines.append(f"{title}:")
        for name in names:
            cls = optimizer_class(name)
            module_doc = (sys.modules[cls.__module__].__doc__ or "").strip()
            summary = getattr(cls, "summary", "") or module_doc.splitlines()[0]
            summary = re.sub(r"``([^`]*)``", r"\1", summary)  # reST literals as plain text
            hyper = ", ".join(f"{k}={v}" for k, v in
                              optimizer_defaults(name)["hyperparameters"].items())
            lines.append(f"  {name:<19} {summary}\n  {'':<19} {hyper}")
    return "\n".join(lines)
