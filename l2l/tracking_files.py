"""The files a run logger keeps beside wandb: rows of ``metrics.jsonl`` (read back to drop
replayed steps on resume) and wandb's own folders, kept inside the run directory and waited for
until wandb has written them."""

from __future__ import annotations

import json
import os
import time
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


_HEADER_BYTES = 7  # an empty .wandb transaction log is just its header


def wait_for_transaction_log(folder: Path | None, timeout: float = 3.0) -> None:
    """Wait (briefly) until wandb's service has written the run's ``.wandb`` file in ``folder``.

    ``run.finish()`` can return a few milliseconds before wandb's service process has flushed
    the run's transaction log (seen with wandb 0.31 offline: the file still holds only its
    7-byte header). Waiting here means that once a logger's ``finish()`` returns, the files on
    disk are complete (for ``wandb sync``, for tests). Never waits more than ``timeout``.
    """
    if folder is None or not folder.is_dir():
        return
    deadline = time.monotonic() + timeout
    last, stable = -1, 0
    while time.monotonic() < deadline:
        size = sum(f.stat().st_size for f in folder.glob("*.wandb"))
        stable = stable + 1 if size == last and size > _HEADER_BYTES else 0
        if stable >= 3:
            return
        last = size
        time.sleep(0.01)
