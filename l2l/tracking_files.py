"""The files a run logger keeps beside wandb: rows of ``metrics.jsonl`` (read back to drop
replayed steps on resume) and wandb's own folders, kept inside the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def row_step(line: str) -> float:
    """The step of a metrics.jsonl line (a damaged line counts as step infinity: dropped)."""
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return float("inf")


def row_event(line: str) -> str | None:
    """The ``event`` of a metrics.jsonl line (None for a metrics row or a damaged line)."""
    try:
        return json.loads(line).get("event")
    except (ValueError, AttributeError):
        return None


def scalar(value: Any) -> Any:
    """Tensors/arrays with one element as Python numbers; anything else unchanged."""
    numel = getattr(value, "numel", None)
    size = numel() if callable(numel) else getattr(value, "size", None)
    return value.item() if size == 1 and hasattr(value, "item") else value


#: wandb's folders outside the run (artifact staging and cache, ~/.local/share/wandb and
#: ~/.cache/wandb by default) and where l2l puts them: under ``<run dir>/wandb/``
WANDB_DIRS = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache",
              "WANDB_ARTIFACT_DIR": "artifacts"}
_own_wandb_dirs: dict[str, str] = {}  # the values l2l itself set (a user's are left alone)


def keep_wandb_files_in(run_dir: Path) -> None:
    """Point wandb's staging, cache and artifact folders into ``<run_dir>/wandb/`` (unless the
    user set them), so that everything a run gives wandb -- the best-checkpoint artifact
    staged for upload included -- lives in the run folder: a run folder copied elsewhere and
    synced there loses nothing, and deleting it leaves nothing behind in the home directory."""
    for var, sub in WANDB_DIRS.items():
        current = os.environ.get(var)
        if current is not None and current != _own_wandb_dirs.get(var):
            continue  # the user's choice
        path = str(Path(run_dir) / "wandb" / sub)
        os.environ[var] = _own_wandb_dirs[var] = path
