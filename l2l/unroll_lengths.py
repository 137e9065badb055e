"""How long each particle's inner training runs: an unroll-length schedule.

The population estimators (``pes``, ``es``, ``full_es``) give every inner training (particle) its
own total length, drawn when its episode starts, so that a learned optimizer is meta-trained on a
spread of horizons rather than one: ``constant`` (every episode ``meta.horizon`` steps) or
``log_uniform`` (``LogUniform(meta.min_length, meta.max_length)``, as in learned_optimization's
``LogUniformLengthSchedule``). A draw is a function of ``(seed, index)`` alone, so a resumed run
draws the same lengths.
"""

from __future__ import annotations

import math

import torch

from l2l.tasks.seeding import instance_generator

SCHEDULES = ("constant", "log_uniform")


class LengthSchedule:
    """Episode lengths: ``constant`` at ``low`` (== ``high``), or log-uniform in ``[low, high]``."""

    def __init__(self, kind: str, low: int, high: int | None = None) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown meta.lengths {kind!r}: choose one of {', '.join(SCHEDULES)}")
        high = low if high is None or kind == "constant" else high
        if low < 1 or high < low:
            raise ValueError(f"unroll lengths must satisfy 1 <= min <= max, got {low}..{high}")
        self.kind, self.low, self.high = kind, int(low), int(high)

    @property
    def shortest(self) -> int:
        """The shortest length a draw can give (a truncation must not be longer)."""
        return self.low

    def draw(self, seed: int, index: int) -> int:
        """The length of episode ``index`` (a function of ``(seed, index)``)."""
        if self.kind == "constant":
            return self.low
        g = instance_generator("unroll_lengths", seed, "train", index)
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        value = math.exp(math.log(self.low) + u * (math.log(self.high + 1) - math.log(self.low)))
        return min(self.high, max(self.low, int(value)))

    def __repr__(self) -> str:
        if self.kind == "constant":
            return f"constant({self.low})"
        return f"log_uniform({self.low}, {self.high})"
