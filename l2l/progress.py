"""Progress bars on stderr, through tqdm: a live bar on a terminal, a sparse line in log files.

A thin wrapper rather than tqdm directly so that every long phase (tuning, evaluation,
meta-training, validation) behaves alike: ``enabled=False`` (the ``progress=false`` switch) makes
it silent, and when stderr is not a terminal (a SLURM log, a pipe) tqdm's carriage-return
redraws would pile up into one unreadable line, so there the bar writes a plain line at most
every ``LOG_INTERVAL`` seconds (and one at the end).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

LOG_INTERVAL = 30.0  #: seconds between lines when stderr is not a terminal
Item = TypeVar("Item")


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines (for logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class Progress:
    """``bar = Progress(100, "meta-train"); ... bar.update(1, loss=0.3); bar.close()`` (for one
    phase in a ``with`` block: :func:`progress_bar`).

    Args:
        total: the number of updates to completion.
        desc: the label in front of the bar.
        enabled: False: print nothing at all.
        stream: where to write (default stderr).
        leave: keep the finished bar on screen (False for the inner bars of nested phases).
    """

    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream: TextIO | None = None,
                 leave: bool = True) -> None:
        self.total, self.desc, self.enabled = max(int(total), 1), desc, enabled
        self.count = 0
        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        options: dict[str, Any] = {"file": stream, "leave": leave, "dynamic_ncols": True}
        if not tty:
            # delay: a phase shorter than LOG_INTERVAL leaves no line in the log at all
            options = {"file": _Lines(stream), "leave": True, "mininterval": LOG_INTERVAL,
                       "delay": LOG_INTERVAL,
                       "maxinterval": LOG_INTERVAL * 10, "ascii": True, "ncols": 100}
        self._bar = tqdm(total=self.total, desc=desc, disable=not enabled, **options)

    def update(self, n: int = 1, **info: float) -> None:
        """Advance by ``n``; ``info`` (e.g. ``loss=0.3``) is shown beside the bar."""
        n = min(n, self.total - self.count)
        self.count += n
        if not self.enabled:
            return
        if info:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
        self._bar.update(n)

    def step(self, *_: Any) -> None:
        """Advance by one: a per-step callback (``run_optimizer(..., progress=bar.step)``)."""
        self.update(1)

    def close(self) -> None:
        self._bar.close()


@contextmanager
def progress_bar(total: int, desc: str, *, enabled: bool = True, stream: TextIO | None = None,
                 leave: bool = True) -> Iterator[Progress]:
    """``with progress_bar(100, "tune adam") as bar: run(..., progress=bar.step)``: a
    :class:`Progress` for one phase, closed when the phase ends, also by an exception."""
    bar = Progress(total, desc, enabled=enabled, stream=stream, leave=leave)
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable[Item], desc: str, *, enabled: bool = True,
          stream: TextIO | None = None) -> Iterator[Item]:
    """``for name in track(names, "baselines"): ...``: the items, one bar step after each.

    For a loop over a known list (tqdm's own idiom), so that the loop reads as one line; the bar
    closes when the loop ends, also by an exception or a ``break``."""
    items = list(items)
    with progress_bar(len(items), desc, enabled=enabled, stream=stream) as bar:
        for item in items:
            yield item
            bar.update(1)
