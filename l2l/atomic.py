"""Files that are always either the old version or the complete new one, and a fault hook.

Every result file of a run (``summary.json``, ``report.md``, the figures, ``generalization.*``,
``aggregate.*``, ``.hydra/*.yaml``, ``failed.json``) is written to a temporary file in the same
folder, flushed to disk, and renamed over the target (``os.replace`` is atomic on POSIX): a full
disk or a kill mid-write leaves the previous file (or none), never a truncated one. A failed
write raises :class:`WriteError`, which names the file.

:func:`fault_point` is the fault-injection hook the tests use to kill or fail a run at an exact
moment (after ``best.pt`` is written, in the middle of ``summary.json``): ``L2L_FAULT`` holds
``<when>:<file name>:<what>[:<nth>]``, e.g. ``after:best.pt:kill:2`` (SIGKILL this process just
after the second ``best.pt`` is in place) or ``during:summary.json:enospc`` (fail as a full disk
does, half-way through writing ``summary.json``). Unset, it costs one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FAULT_ENV = "L2L_FAULT"
_fault_counts: dict[str, int] = {}


class WriteError(OSError):
    """A file could not be written (disk full, quota, permissions); the message names it."""


def fault_point(when: str, path: str | Path) -> None:
    """Kill this process, or raise a disk-full error, if ``$L2L_FAULT`` names this moment."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want_when, name, what, *nth = spec.split(":")
    if want_when != when or Path(path).name != name:
        return
    key = f"{when}:{name}"
    _fault_counts[key] = _fault_counts.get(key, 0) + 1
    if _fault_counts[key] != (int(nth[0]) if nth else 1):
        return
    if what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    else:
        raise ValueError(f"{FAULT_ENV}={spec!r}: the action must be kill or enospc")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """``with replacing(path) as tmp: write(tmp)`` -- ``path`` becomes the complete file only
    when the block succeeds; on any failure the temporary file is removed and ``path`` is left
    as it was. An ``OSError`` becomes a :class:`WriteError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(name, file_mode())  # what open() would give, not mkstemp's private 0600
    except OSError as error:
        raise write_error(error, path) from error
    tmp = Path(name)
    try:
        yield tmp
        fault_point("during", path)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_error(error, path) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fault_point("after", path)


def file_mode() -> int:
    """The mode ``open()`` gives a new file (0666 less the umask: 0644 by default), for files
    written through a private temporary file (mkstemp's 0600 would hide them on a cluster)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """``fig.savefig`` atomically (the format from ``path``'s suffix); returns ``path``."""
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def write_error(error: OSError, path: str | Path) -> WriteError:
    """``error`` as a :class:`WriteError` that names ``path`` and says what to do."""
    if isinstance(error, WriteError):
        return error
    reason = error.strerror or str(error) or type(error).__name__
    message = (f"could not write {path} ({reason}); free disk space or choose another run "
               "directory, then rerun the same command")
    return WriteError(error.errno, message) if error.errno else WriteError(message)
