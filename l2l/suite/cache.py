"""Tuned baselines cached on disk, so that the second optimizer scored on a suite does not pay
for tuning again.

An entry is ``<cache_dir>/<sha256 of the key's canonical JSON>.json``, written atomically
(:mod:`l2l.atomic`). The key is everything the tuned baseline's result depends on: the
baseline and its fixed hyperparameters, the task's identity (family and kwargs, not where its
data lives), the horizon it is tuned at and the steps it is run for, the learning-rate grid,
the validation and test problems (seeds, counts), the device type, and the *code version*: the
sha256 of the source files of the baseline's and the task's classes and of
``l2l/evaluation.py``. Change any of them and the key changes, so a stale result is never
reused; a corrupt or foreign entry is ignored (and replaced).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l2l.atomic import write_text
from l2l.report import dumps

log = logging.getLogger("l2l")
FORMAT = 1  #: the layout of an entry; bump it when the stored record's fields change


def _project_sources(objects: list[Any]) -> list[Path]:
    """The source files of this project (``l2l/``, ``baselines/``) that define the classes of
    ``objects`` and their bases, with ``l2l/evaluation.py``."""
    import baselines
    import l2l

    roots = [Path(m.__file__).resolve().parent for m in (l2l, baselines)]
    files = {roots[0] / "evaluation.py"}
    for obj in objects:
        for cls in inspect.getmro(type(obj)):
            try:
                path = Path(inspect.getfile(cls)).resolve()
            except (TypeError, OSError):
                continue
            if any(root in path.parents for root in roots):
                files.add(path)
    return sorted(files)


def _task_parts(task: Any) -> list[Any]:
    """A task family and every family inside it (augmented bases, mixture components)."""
    parts = [task]
    if getattr(task, "base", None) is not None:
        parts += _task_parts(task.base)
    for component in getattr(task, "components", None) or []:
        parts += _task_parts(component)
    return parts


@functools.cache
def _file_digest(path: Path) -> str:
    """A source file's sha256, read once per process: the code this process runs was loaded
    when it started, so an edit made during a long run must not relabel its results."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version(baseline: Any, task: Any) -> str:
    """sha256 over the source of the baseline's and task's classes and of the evaluation loop."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in _project_sources([baseline, *_task_parts(task)]):
        name = path.relative_to(root) if root in path.parents else path.name
        digest.update(f"{name}\0{_file_digest(path)}\0".encode())
    return digest.hexdigest()


def cache_key(key: Mapping[str, Any]) -> str:
    """The sha256 of ``key``'s canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(cache_dir: str | Path, key: Mapping[str, Any]) -> Path:
    return Path(cache_dir) / f"{cache_key(key)}.json"


def load(cache_dir: str | Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached record for ``key``, or None when there is none or it is unusable (corrupt,
    another format, another key: then it is recomputed and the file replaced)."""
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("ignoring the unreadable baseline cache entry %s (%s)", path, error)
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or \
            entry.get("key") != json.loads(dumps(key)):
        log.warning("ignoring the baseline cache entry %s: it holds another key or format", path)
        return None
    return entry.get("record")


def store(cache_dir: str | Path, key: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
    """Write ``record`` under ``key`` atomically; returns the entry's path."""
    path = cache_path(cache_dir, key)
    write_text(path, dumps({"format": FORMAT, "key": key, "record": record}, indent=1) + "\n")
    return path


__all__ = ["cache_key", "cache_path", "code_version", "load", "store"]
