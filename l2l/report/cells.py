"""The cells every l2l table and JSON file shares: numbers to text (``fmt``, the one ``mean ±
ci`` format), Markdown-safe cells, strict JSON, the verdict lines, and the few questions every
renderer asks of an evaluation record (its name, whether it diverged, the order of rows)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2l.stats import separated_winner

if TYPE_CHECKING:
    from l2l.evaluation import EvaluationRecord

DASH = "—"


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: non-finite floats become ``None``, tensors/arrays lists,
    typed records (:class:`l2l.evaluation.EvaluationRecord`, ...) their ``to_json()``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "to_json"):  # a typed record: its one JSON form
        return jsonable(obj.to_json())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens) of :func:`jsonable` ``(obj)``."""
    return json.dumps(jsonable(obj), allow_nan=False, ensure_ascii=False, **kwargs)


def finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt(x: Any, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits (scientific when tiny or huge); ``—`` if missing."""
    if x is None:
        return DASH
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def mean_ci(mean: Any, ci: Any, ci_digits: int = 4) -> str:
    """The one cell format of a mean and its 95% CI, ``mean ± ci`` (``mean`` alone when the CI
    is unknown; ``—`` or ``∞`` when the mean is missing or infinite)."""
    if finite(mean) is None:
        return fmt(mean)
    return fmt(mean) if finite(ci) is None else f"{fmt(mean)} ± {fmt(ci, ci_digits)}"


def display_name(entry: EvaluationRecord, index: int = 0) -> str:
    return str(entry.name or entry.optimizer or f"optimizer {index}")


def cell(text: Any) -> str:
    """``text`` made safe for a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def all_diverged(entry: EvaluationRecord) -> bool:
    """True when no instance of this entry finished with a finite loss."""
    instances, diverged = entry.instances, entry.diverged
    if instances is not None and diverged is not None and diverged >= instances:
        return True
    return finite(entry.final_loss_mean) is None


def sort_entries(entries: Sequence[EvaluationRecord]) -> list[EvaluationRecord]:
    """By mean final loss, lowest first; entries with no finite final loss last."""
    def key(item: tuple[int, EvaluationRecord]) -> tuple:
        index, entry = item
        loss = finite(entry.final_loss_mean)
        bad = all_diverged(entry)
        return (bad, loss if loss is not None and not bad else math.inf, index)

    return [entry for _, entry in sorted(enumerate(entries), key=key)]


def verdict_text(rows: Sequence[tuple[str, float, float]]) -> str:
    """``"<name> wins (separated 95% intervals)"`` or ``"overlap (lowest: <name>)"``."""
    winner, lowest = separated_winner(rows)
    if winner is not None:
        return f"{winner} wins (separated 95% intervals)"
    return f"overlap (lowest: {lowest})" if lowest is not None else "no finite result"


def verdict_line(loss_rows: Sequence[tuple[str, float, float]],
                 log_rows: Sequence[tuple[str, float, float]]) -> str:
    """The one-line verdict every comparison table ends with: the winner with separated 95%
    intervals, or overlap, on the mean final loss and on the mean log10 final loss (rows:
    ``(name, mean, ci95)``)."""
    return (f"**Verdict** — mean final loss: {verdict_text(loss_rows)}; mean log10 final loss: "
            f"{verdict_text(log_rows)}.")
