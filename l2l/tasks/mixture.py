"""A mixture of task families: meta-train on a distribution, evaluate on held-out families.

Each call of ``sample`` (one meta-training task) draws one component, deterministically from
``(seed, split, offset)`` and the mixture weights, and samples all of its instances from it
(instances of one call must share a parameter count). Validation uses every component
(``components``), so model selection sees the whole training distribution.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from l2l.layout import ParamLayout
from l2l.tasks.base import Instances, TaskFamily, check_sample


class MixtureFamily(TaskFamily):
    """Tasks drawn from ``components`` with probabilities proportional to ``weights``."""

    def __init__(self, components: Sequence[TaskFamily],
                 weights: Sequence[float] | None = None) -> None:
        """``components``: families (from a config, mappings ``{family, kwargs, name}`` that
        :func:`l2l.tasks.build_task` builds first)."""
        if not components:
            raise ValueError("a task mixture needs at least one component")
        for component in components:
            if not isinstance(component, TaskFamily):
                raise ValueError(f"a mixture component must be a task family, got {component!r}"
                                 ": build it with l2l.tasks.build_task (which builds a config's "
                                 "{family, kwargs, name} mappings)")
        weights = [1.0] * len(components) if weights is None else [float(w) for w in weights]
        if len(weights) != len(components) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be {len(components)} non-negative numbers "
                             f"with a positive sum, got {weights}")
        self.components = list(components)
        self.weights = weights
        self.name = "mixture(" + ",".join(c.name for c in self.components) + ")"

    @property
    def num_params(self) -> int:
        sizes = {c.num_params for c in self.components}
        if len(sizes) != 1:
            raise ValueError(f"the components of {self.name} have different parameter counts "
                             f"{sorted(sizes)}: there is no single num_params")
        return sizes.pop()

    @property
    def layout(self) -> ParamLayout:
        layouts = set(self.layouts())
        if len(layouts) != 1:
            raise ValueError(f"the components of {self.name} have different parameter layouts: "
                             "there is no single layout (use layouts())")
        return layouts.pop()

    def layouts(self) -> tuple[ParamLayout, ...]:
        return tuple(lay for c in self.components for lay in c.layouts())

    def component_index(self, seed: int, split: str, offset: int) -> int:
        rng = random.Random(f"mixture/{seed}/{split}/{offset}")
        return rng.choices(range(len(self.components)), weights=self.weights)[0]

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Instances:
        check_sample(batch_size, seed, split, offset, dtype)
        family = self.components[self.component_index(seed, split, offset)]
        return family.sample(batch_size, seed, split, offset=offset, device=device, dtype=dtype)
