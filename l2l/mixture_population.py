"""A population over a mixture of differently sized tasks: one sub-population per layout.

:class:`l2l.truncated_step.TruncatedStep` steps every particle in one ``(2 H, n)`` batch, so
all its particles need one parameter layout. A training distribution such as
``conf/task/suite_train.yaml`` mixes networks of several sizes. Here the population's pairs are
*stratified* over the mixture's layouts: pair ``k`` of the whole population belongs to one layout
group for the whole run (each of its episodes draws a new instance from that group's components,
weighted as in the mixture), and each group is an ordinary ``TruncatedStep``. The pairs are
allotted in proportion to the groups' mixture weights (largest remainders, at least one pair per
group), which is stratified sampling of the mixture: an unbiased estimate of the mixture's
meta-gradient when the allotment is proportional, with less variance than drawing each episode's
family at random. Where rounding makes it inexact, the allotment's own weights are the ones
meta-trained (:attr:`MixturePopulation.effective_weights`, logged at the start).

To the estimators it is a ``TruncatedStep``: the same ``(2 H, d)`` rows (pair ``k``'s twins at
rows ``k`` and ``k + H``), the same :class:`Truncation`, resets, restarts and state dict; the
groups' rows are cut out of it and put back in order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective
from l2l.tasks.base import TaskFamily
from l2l.tasks.mixture import MixtureFamily
from l2l.truncated_step import TruncatedStep, Truncation
from l2l.unroll_lengths import LengthSchedule


def layout_groups(task: MixtureFamily) -> list[tuple[list[int], float]]:
    """The mixture's components grouped by parameter layout, in order of first appearance: each
    group's component indices and its share of the mixture weight."""
    groups: dict[Any, list[int]] = {}
    for index, component in enumerate(task.components):
        layouts = set(component.layouts())
        if len(layouts) != 1:
            raise ValueError(f"mixture component {component.name} itself mixes {len(layouts)} "
                             "parameter layouts: flatten the nested mixture into one list of "
                             "components")
        groups.setdefault(layouts.pop(), []).append(index)
    total = sum(task.weights)
    return [(members, sum(task.weights[i] for i in members) / total)
            for members in groups.values()]


def allot_pairs(shares: list[float], pairs: int) -> list[int]:
    """``pairs`` split over groups in proportion to ``shares`` (largest remainders), every group
    at least one pair; ties go to the earlier group."""
    if pairs < len(shares):
        raise ValueError(f"{pairs} antithetic pairs cannot cover the task's {len(shares)} "
                         f"differently sized networks (one pair each at least): set "
                         f"meta.particles >= {2 * len(shares)}")
    base = [1] * len(shares)
    spare = pairs - len(shares)
    exact = [s * pairs - 1 for s in shares]  # what each group should get beyond its one
    floors = [max(0, int(e)) for e in exact]
    while sum(floors) > spare:  # a group's floor can exceed what is left: trim the largest
        floors[max(range(len(floors)), key=lambda i: (floors[i], -i))] -= 1
    remainders = sorted(range(len(shares)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in remainders[:spare - sum(floors)]:
        floors[i] += 1
    return [b + f for b, f in zip(base, floors)]


def _sub_task(task: MixtureFamily, members: list[int]) -> TaskFamily:
    if len(members) == 1:
        return task.components[members[0]]
    return MixtureFamily([task.components[i] for i in members],
                         [task.weights[i] for i in members])


class MixturePopulation:
    """``2 * pairs`` particles of a mixture of layouts, as one population (see module doc)."""

    def __init__(self, task: MixtureFamily, optimizer: LearnedOptimizer,
                 objective: MetaObjective, *, pairs: int, lengths: LengthSchedule,
                 seed: int = 0, first_pair: int = 0, total_pairs: int | None = None,
                 **kwargs: Any) -> None:
        """As :class:`TruncatedStep`; ``pairs`` of the ``total_pairs`` (all processes) from
        ``first_pair`` on are this process's."""
        total = pairs if total_pairs is None else total_pairs
        if first_pair < 0 or first_pair + pairs > total:
            raise ValueError(f"pairs {first_pair}..{first_pair + pairs - 1} do not lie in a "
                             f"population of {total}")
        groups = layout_groups(task)
        counts = allot_pairs([share for _, share in groups], total)
        self.pairs, self.first_pair, self.total_pairs = pairs, first_pair, total
        self.effective_weights = [c / total for c in counts]  #: per group, as meta-trained
        self.names = [_sub_task(task, members).name for members, _ in groups]
        #: per sub-population: its first local pair (this process's rows) and its steps
        self.groups: list[tuple[int, TruncatedStep]] = []
        start = 0  # the group's first pair in the whole population
        for (members, _), count in zip(groups, counts):
            low, high = max(start, first_pair), min(start + count, first_pair + pairs)
            if low < high:
                # ids as in one population: instances, lengths and offsets of pair ``k`` of
                # the whole population, whichever group it is in (distinct data per pair)
                sub = TruncatedStep(_sub_task(task, members), optimizer, objective,
                                    pairs=high - low, first_pair=low, total_pairs=total,
                                    lengths=lengths, seed=seed, **kwargs)
                self.groups.append((low - first_pair, sub))
            start += count

    @property
    def particles(self) -> int:
        return 2 * self.pairs

    def rows(self, per_pair: Tensor) -> Tensor:
        """A per-pair tensor ``(H, ...)`` for every particle ``(2 H, ...)``."""
        return torch.cat([per_pair, per_pair])

    def _cut(self, per_particle: Tensor, at: int, sub: TruncatedStep) -> Tensor:
        H = self.pairs
        return torch.cat([per_particle[at:at + sub.pairs], per_particle[H + at:H + at + sub.pairs]])

    def _join(self, parts: list[Tensor]) -> Tensor:
        """Sub-populations' ``(2 h, ...)`` rows back into this population's order."""
        plus = [p[:len(p) // 2] for p in parts]
        minus = [p[len(p) // 2:] for p in parts]
        return torch.cat(plus + minus)

    def unroll(self, weights: Tensor, steps: int) -> Truncation:
        """Every sub-population ``steps`` steps, each particle with its row of ``weights``."""
        if weights.shape[0] != self.particles:
            raise ValueError(f"weights must have {self.particles} rows, got {weights.shape[0]}")
        runs = [sub.unroll(self._cut(weights, at, sub), steps) for at, sub in self.groups]
        return Truncation(before=self._join([r.before for r in runs]),
                          after=self._join([r.after for r in runs]),
                          reset=self._join([r.reset for r in runs]), steps=steps)

    def reset_pairs(self, mask: Tensor) -> None:
        """A new episode for the pairs in ``mask (H,)``."""
        for at, sub in self.groups:
            sub.reset_pairs(mask[at:at + sub.pairs])

    def restart(self) -> None:
        for _, sub in self.groups:
            sub.restart()

    def state_dict(self) -> dict[str, Any]:
        return {"groups": [sub.state_dict() for _, sub in self.groups]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        parts = saved.get("groups")
        if parts is None or len(parts) != len(self.groups):
            raise ValueError(f"the checkpoint's population has "
                             f"{'no' if parts is None else len(parts)} layout groups, this run "
                             f"{len(self.groups)}: resume with the same task and meta.particles")
        for (_, sub), part in zip(self.groups, parts):
            sub.load_state_dict(part)


def build_population(task: TaskFamily, optimizer: LearnedOptimizer, objective: MetaObjective,
                     **kwargs: Any) -> TruncatedStep | MixturePopulation:
    """The population for ``task``: one batch where every particle shares a layout, else one
    sub-population per layout of a mixture."""
    if isinstance(task, MixtureFamily) and len(set(task.layouts())) > 1:
        return MixturePopulation(task, optimizer, objective, **kwargs)
    return TruncatedStep(task, optimizer, objective, **kwargs)
