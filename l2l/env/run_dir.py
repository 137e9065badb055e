"""One run directory, one writer, no lost results.

* :class:`RunDirLock`: an OS-level lock (``fcntl.flock``) on ``<run dir>/.lock``, held for the
  life of the process. The kernel releases it when the process dies, even by ``kill -9``, so
  there is never a stale lock; a second process on the same directory (a relaunched sweep, a
  double submit) is refused at once with the holder's pid, host and start time.
* :func:`refuse_existing_results`: evaluation modes never replace a previous result.
* :func:`save_run_config`: the resolved config, written only once the lock is held and every
  check passed (Hydra's own copy is turned off in conf/config.yaml, because Hydra writes it
  before any check can run).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the run directory is not protected
    fcntl = None  # type: ignore[assignment]


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory."""


class RunDirLock:
    """``with RunDirLock(run_dir): ...`` -- exclusive use of ``run_dir`` by this process."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._file: Any = None

    def acquire(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held while running
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise RunDirInUse(
                    f"run directory {self.path.parent} is in use by {holder}: wait for it to "
                    "finish (or stop it), or choose another run_name") from None
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started} "
                     f"({' '.join(sys.argv[1:])[:300]})\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


#: the files that mark a complete result: each is written last, atomically, by its mode
RESULT_FILES = ("summary.json", "generalization.json", "suite.json")


def refuse_existing_results(run_dir: str | Path) -> None:
    """Raise ``FileExistsError`` if ``run_dir`` already holds an evaluation's complete results.
    A half-written directory (a run that died while writing, no complete ``summary.json``)
    does not count: the rerun writes the results anew."""
    import json
    import logging

    existing = []
    for name in RESULT_FILES:
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logging.getLogger("l2l").warning("%s is incomplete or unreadable: the rerun "
                                             "replaces it", path)
            continue
        existing.append(name)
    if existing:
        raise FileExistsError(
            f"run directory {run_dir} already holds results ({', '.join(existing)}); l2l never "
            "replaces them: choose another run_name (or delete that directory)")


def save_run_config(run_dir: str | Path, config: Any, overrides: list[str],
                    hydra_config: Any | None = None) -> None:
    """Write ``.hydra/config.yaml`` and ``overrides.yaml`` (as Hydra would), atomically, once
    the lock is held and every check passed (a refused command leaves the record alone)."""
    from omegaconf import OmegaConf

    from l2l.atomic import write_text

    folder = Path(run_dir) / ".hydra"
    write_text(folder / "config.yaml", OmegaConf.to_yaml(config))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    if hydra_config is not None:
        write_text(folder / "hydra.yaml", OmegaConf.to_yaml(hydra_config))
