"""A dependency-free progress bar on stderr: a line redrawn on a terminal, sparse lines in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(100, "meta-train") as bar: ... bar.update(1, loss=0.3)``."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream: TextIO | None = None,
                 width: int = 24) -> None:
        self.total, self.desc, self.enabled, self.width = max(total, 1), desc, enabled, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.count = 0
        self.start = time.perf_counter()
        self._last_line = -1.0

    def update(self, n: int = 1, **info: float) -> None:
        self.count = min(self.count + n, self.total)
        if not self.enabled:
            return
        now = time.perf_counter()
        done = self.count == self.total
        if not self.tty and not done and now - self._last_line < 10.0:
            return  # in a log file: a line every 10 s is plenty
        self._last_line = now
        elapsed = now - self.start
        eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
        filled = int(self.width * self.count / self.total)
        extras = " ".join(f"{k}={v:.4g}" for k, v in info.items())
        line = (f"{self.desc} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.count}/{self.total} {elapsed:.0f}s<{eta:.0f}s {extras}")
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and done:
            self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.tty and self.count < self.total:
            self.stream.write("\n")
