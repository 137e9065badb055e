"""A sweep job that fails is recorded, not fatal: ``<job dir>/failed.json``.

In a multirun (``train.py -m``) one diverged seed or one bad setting must not drop every later
job, so ``train.py`` turns a failing job into a record and returns to Hydra's launcher, which
starts the next job. The record says why (the one line the job logged) and which overrides it
ran with (a job refused before its ``.hydra/`` was written has no other record of them), so that
``l2l.aggregate`` can list it. A job that later succeeds in the same directory removes it. The
process still exits non-zero once the sweep is over (:func:`any_failed`).
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

from l2l.atomic import write_text

log = logging.getLogger("l2l")

FAILED_FILE = "failed.json"
_failed: list[str] = []  #: job directories that failed in this process (the basic launcher)
_found_after = 0  #: failed jobs the end-of-sweep scan found (jobs run by other processes)


def record_failure(job_dir: str | Path, error: BaseException, exit_code: int,
                   overrides: list[str], status: str = "failed") -> Path | None:
    """Write ``failed.json`` into ``job_dir`` (atomically); None if even that is impossible
    (e.g. the directory cannot be created: the job's log line already said why)."""
    job_dir = Path(job_dir)
    _failed.append(str(job_dir))
    record = {"job": job_dir.name, "status": status, "error": type(error).__name__,
              "message": str(error).splitlines()[0] if str(error) else "",
              "exit_code": exit_code, "overrides": list(overrides),
              "time": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        return write_text(job_dir / FAILED_FILE, json.dumps(record, indent=2) + "\n")
    except OSError as problem:
        log.warning("could not record the failed job in %s: %s", job_dir, problem)
        return None


def clear_failure(job_dir: str | Path) -> None:
    """A job that succeeded: remove the record of an earlier failed attempt."""
    (Path(job_dir) / FAILED_FILE).unlink(missing_ok=True)


def read_failure(job_dir: str | Path) -> dict[str, Any] | None:
    """The failure record of ``job_dir``, None without one; an unreadable record is still a
    failure (its message says so)."""
    path = Path(job_dir) / FAILED_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict):
            return record
    except (OSError, ValueError):
        pass
    return {"job": Path(job_dir).name, "status": "failed", "message": f"{path} is unreadable"}


def note_failures(count: int) -> None:
    """Failed jobs found once the sweep is over (also those that ran in other processes, e.g.
    joblib's workers, which this process's list does not see)."""
    global _found_after
    _found_after = max(_found_after, count)


def any_failed() -> bool:
    """Whether a job of this process's sweep failed: the sweep's exit status is then 1."""
    return bool(_failed) or _found_after > 0
