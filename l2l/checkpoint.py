"""Checkpoints: written atomically, read without ever executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``. Writing goes to a temporary file in the same folder which
is then renamed over the target: a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from l2l.lstm_optimizer import LSTMOptimizer

FORMAT = "l2l-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit what it is loaded into."""


def save_atomic(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``payload`` to ``path`` so that ``path`` is always either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomic`; clear errors for every way it can fail."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path or the run dir")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a damaged file can fail in many ways inside the unpickler
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not an l2l checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); delete it to start afresh, or "
            "point to another file"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an l2l checkpoint (expected format {FORMAT!r}); point to a file "
            "written by l2l's meta-training (checkpoints/best.pt or latest.pt of a run)"
        )
    return payload


def optimizer_payload(optimizer: LSTMOptimizer) -> dict[str, Any]:
    """What a checkpoint stores of a learned optimizer: its architecture and its weights."""
    return {"config": dict(optimizer.config), "weights": optimizer.state_dict()}


def optimizer_from_payload(
    payload: dict[str, Any], *, expect: dict[str, Any] | None = None, source: str = "checkpoint"
) -> LSTMOptimizer:
    """Rebuild a learned optimizer; ``expect`` (an architecture) must match if given."""
    config = payload["config"]
    if expect is not None:
        keys = ("hidden_size", "num_layers", "preprocessing")
        diff = {k: (config.get(k), expect.get(k)) for k in keys if config.get(k) != expect.get(k)}
        if diff:
            shown = ", ".join(
                f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items()
            )
            raise CheckpointError(
                f"{source} holds a different LSTM architecture ({shown}); use the config it was "
                "trained with, or start a new run directory"
            )
    optimizer = LSTMOptimizer(**config)
    try:
        optimizer.load_state_dict(payload["weights"])
    except RuntimeError as err:
        raise CheckpointError(f"{source} weights do not fit the LSTM optimizer: {err}") from err
    return optimizer


def load_learned_optimizer(
    path: str | Path, device: str | torch.device = "cpu", key: str = "optimizer"
) -> LSTMOptimizer:
    """Load the learned optimizer stored under ``key`` ("optimizer" or "best") of a checkpoint."""
    payload = load(path, map_location=device)
    if key not in payload:
        raise CheckpointError(f"{path} holds no {key!r} entry (it has {sorted(payload)})")
    return optimizer_from_payload(payload[key], source=str(path)).to(device)
