"""Checkpoints: written atomically, read without ever executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``. Writing goes to a temporary file in the same folder which
is then renamed over the target: a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from l2l.atomic import fault_point, file_mode, replacing, write_error
from l2l.learned.base import LearnedOptimizer

FORMAT = "l2l-checkpoint/1"


#: how torch's ``weights_only`` unpickler words a refusal to build an object (a class, a
#: function such as ``os.system``): "Unsupported global: GLOBAL x.Y was not an allowed global",
#: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (torch 2.13),
#: "Can only create new object for ... classes allowlisted via `add_safe_globals`"; anything
#: else (a truncated archive, "Unsupported operand 65" for random bytes) is corruption
_UNSAFE = re.compile(r"unsupported global|add_safe_globals|must be imported to load",
                     re.IGNORECASE)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit what it is loaded into."""


def save_atomic(payload: dict[str, Any], path: str | Path,
                previous: str | Path | None = None) -> None:
    """Write ``payload`` to ``path`` so that ``path`` is always either the old or the new file.

    With ``previous``, the old file is kept there as the fallback if ``path`` is later damaged:
    it is linked (or copied) to ``previous`` first and only then replaced, so that ``path``
    exists at every instant, for a reader polling it as for a kill between the two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would hide it from the rest of a cluster
        if previous is not None and path.exists():
            _keep_as(path, Path(previous))
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(error, path) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fault_point("after", path)


def _keep_as(path: Path, previous: Path) -> None:
    """Make ``previous`` the current ``path`` (a hard link, else a copy), atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{previous.name}.", suffix=".tmp", dir=previous.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(path, tmp)
        os.replace(tmp, previous)
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
        # torch's message advises weights_only=False, i.e. running the file's code: never shown.
        unsafe = _UNSAFE.search(str(err)) is not None
        what = ("holds objects other than tensors and plain data (refused: loading them could "
                "run code)" if unsafe else f"is corrupt ({type(err).__name__})")
        raise CheckpointError(
            f"checkpoint {path} {what}; point to a checkpoint written by l2l") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an l2l checkpoint (expected format {FORMAT!r}); point to a file "
            "written by l2l's meta-training (checkpoints/best.pt or latest.pt of a run)"
        )
    return payload


def optimizer_from_payload(
    payload: dict[str, Any], *, expect: LearnedOptimizer | None = None,
    source: str = "checkpoint",
) -> LearnedOptimizer:
    """Rebuild the learned optimizer a payload holds, whatever its architecture.

    The stored config is checked against the architecture's fields (unknown or missing ones are
    refused). If ``expect`` is given, the payload must hold that same architecture and config.
    Payloads written before the learned-optimizer family have no name: they are LSTMs.
    """
    from l2l.registry import learned_classes

    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict) \
            or not isinstance(payload.get("weights"), dict):
        raise CheckpointError(f"{source} holds no learned optimizer (expected a name, a config "
                              "and weights): point to a checkpoint written by l2l")
    name = payload.get("name", "lstm")
    classes = learned_classes()
    if name not in classes:
        raise CheckpointError(f"{source} holds a learned optimizer named {name!r}, which this "
                              f"version of l2l does not know (known: {', '.join(classes)})")
    config = payload["config"]
    if expect is not None:
        if name != expect.name:
            raise CheckpointError(
                f"{source} holds a {name!r} optimizer but the config asks for {expect.name!r}; "
                f"use optimizer={name}, or start a new run directory")
        # a field the checkpoint predates had the value that rebuilds it (added_fields)
        stored = {**classes[name].added_fields, **config}
        diff = {k: (stored.get(k), v) for k, v in expect.config.items() if stored.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}"
                              for k, (a, b) in diff.items())
            raise CheckpointError(
                f"{source} holds a different {name} configuration ({shown}); use the config it "
                "was trained with, or start a new run directory")
    try:
        optimizer = classes[name].from_config(config, source=source, complete=True)
    except (ValueError, TypeError) as err:
        raise CheckpointError(str(err)) from err
    try:
        optimizer.load_state_dict(payload["weights"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{source} weights do not fit the {name} optimizer its config "
                              f"describes ({first}); the file is damaged or was edited") from err
    return optimizer


def load_learned_optimizer(
    path: str | Path, device: str | torch.device = "cpu", key: str = "optimizer"
) -> LearnedOptimizer:
    """Load the learned optimizer stored under ``key`` ("optimizer" or "best") of a checkpoint
    file. :func:`l2l.load_optimizer` is the one loader for names, run directories and the zoo
    (with the provenance); this reads a file only."""
    return stored_optimizer(load(path, map_location=device), path, device, key)


def stored_optimizer(payload: dict[str, Any], path: str | Path,
                            device: str | torch.device = "cpu",
                            key: str = "optimizer") -> LearnedOptimizer:
    """The learned optimizer under ``key`` of a loaded checkpoint ``payload`` (read from
    ``path``), on ``device``, with the meta-training iteration its weights come from."""
    if key not in payload:
        raise CheckpointError(f"{path} holds no {key!r} entry (it has {sorted(payload)})")
    learned = optimizer_from_payload(payload[key], source=str(path)).to(device)
    # the meta-training iteration these weights come from (0: the untrained optimizer), so that
    # no report presents an untrained optimizer as a result without saying so
    learned.meta_trained_iterations = payload.get("best_iteration" if key == "best"
                                                  else "iteration")
    return learned


def carry_in(source: str | Path, latest: Path, best: Path) -> str:
    """Put a carried-over ``latest.pt`` (``resume_from=``) into a run directory, so that a run
    moved between machines (committed, copied from a cluster) resumes from it bit for bit.

    The run directory's own ``latest.pt`` wins when it is at least as far along: rerunning the
    same command after the run has moved on must not rewind it. One that is *behind* the given
    file is refused rather than replaced, since nothing is overwritten silently. When the run
    directory has no ``best.pt``, it is written from the best weights the file carries, so the
    resumed run's best is never only in memory. Returns what was done, for the log.
    """
    source = Path(source)
    carried = load(source)
    for field in ("optimizer", "best", "best_val", "iteration", "meta_config"):
        if field not in carried:
            raise CheckpointError(f"resume_from={source} has no {field!r}: point it to a run's "
                                  "checkpoints/latest.pt (best.pt cannot be resumed)")
    if latest.exists():
        own = load(latest).get("iteration", -1)
        if own >= carried["iteration"]:
            return (f"resume_from={source} (iteration {carried['iteration']}) not used: the run "
                    f"directory's own {latest} is at iteration {own}")
        raise CheckpointError(
            f"{latest} is at iteration {own}, behind resume_from={source} (iteration "
            f"{carried['iteration']}): move {latest} away to resume from the given file, or "
            "drop resume_from= to continue the run directory's own")
    with replacing(latest) as tmp:
        shutil.copyfile(source, tmp)  # the bytes themselves: bit for bit
    if not best.exists() and carried["best_val"] is not None:
        save_atomic({"optimizer": carried["best"], "iteration": carried.get("best_iteration"),
                     "val_loss": carried["best_val"],
                     "untrained_val_loss": carried.get("untrained_val"),
                     "meta_config": carried["meta_config"],
                     "identity": carried.get("identity") or {}}, best)
    return f"resuming from resume_from={source} (iteration {carried['iteration']})"
