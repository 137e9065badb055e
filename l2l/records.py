"""Reading typed records back from JSON, strictly: one helper for every record's ``from_json``.

A result file is read by the code that wrote it, so a key it does not know is a misspelling
or a file of another kind, and a key it needs but misses is a damaged file: both fail loudly
here, with the closest field named, instead of turning into a silent ``None`` downstream.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def record_fields(cls: type, data: Mapping[str, Any], *, derived: Iterable[str] = (),
                  extra: Iterable[str] = ()) -> dict[str, Any]:
    """The constructor arguments of dataclass ``cls`` from ``data``: every required field must
    be there, and every key must be a field, one of ``derived`` (written for readers, computed
    again on reading: dropped) or one of ``extra`` (handled by the caller: dropped here).
    Raises ValueError naming the record, the key and the closest field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # not: computed
    skip = set(derived) | set(extra)
    unknown = [k for k in data if k not in fields and k not in skip]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*fields], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}{hint}: the JSON is "
                         f"misspelled or of another kind (fields: {', '.join(fields)})")
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{cls.__name__} JSON misses the field(s) {', '.join(missing)}: the "
                         "file is damaged or was written by something else")
    return {k: v for k, v in data.items() if k in fields}


def _number(value: Any) -> float:
    """A JSON number back as a float (``null``, written for NaN or inf, is NaN)."""
    return float("nan") if value is None else float(value)


@dataclasses.dataclass(slots=True)
class SweepRow:
    """One row of a sweep's aggregate: an optimizer in one group of the swept settings, its
    final test loss averaged over the group's jobs (the ``seed=`` axis)."""

    settings: dict[str, Any]  #: the swept settings of the group (``{}``: the same in all)
    optimizer: str
    n: int  #: jobs with a finite final loss
    jobs: int
    final_loss_mean: float
    final_loss_ci95: float
    final_log10_loss_mean: float
    final_log10_loss_ci95: float
    learned: bool
    untrained: int  #: jobs whose learned optimizer never beat its untrained start
    seeds: list[Any]
    tuned_lrs: list[float | None]
    job_dirs: list[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepRow:
        values = record_fields(cls, data)
        for key in ("final_loss_mean", "final_loss_ci95", "final_log10_loss_mean",
                    "final_log10_loss_ci95"):
            values[key] = _number(values[key])
        return cls(**values)


_NAN = float("nan")


@dataclasses.dataclass(slots=True)
class StudyRow:
    """One row of the generalization study: a learned group (the checkpoints of one optimizer
    or label, over meta-training seeds) on one variant, against the best tuned baseline."""

    variant: str
    group: str
    learned_mean: float  #: over seeds (several checkpoints) or test instances (one)
    learned_ci95: float
    winner: str  #: ``learned``, the baseline's name, ``overlap`` or ``—``
    best_baseline: str | None
    best_baseline_mean: float
    best_baseline_ci95: float
    best_baseline_lr: float | None
    task: str = ""
    steps: int = 0
    optimizer: str = ""
    seen_in_training: str = "unknown"
    ci_over: str = "instances"  #: ``seeds`` or ``instances``
    n_seeds: int = 1
    per_seed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    worst_seed: dict[str, Any] | None = None
    diverged: int = 0
    ratio: float = _NAN  #: learned mean / best baseline mean
    learned_log10_mean: float = _NAN
    learned_log10_ci95: float = _NAN
    best_log10_baseline: str | None = None
    best_log10_mean: float = _NAN
    best_log10_ci95: float = _NAN
    winner_log10: str = "—"
    mean_curve: list[float] = dataclasses.field(default_factory=list)
    ci_curve: list[float] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyRow:
        values = record_fields(cls, data)
        for f in dataclasses.fields(cls):
            if f.type == "float" and f.name in values:
                values[f.name] = _number(values[f.name])
        for key in ("mean_curve", "ci_curve"):
            values[key] = [_number(v) for v in values.get(key, [])]
        return cls(**values)
