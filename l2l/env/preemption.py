"""Stopping cleanly on SIGTERM, SIGINT, SIGUSR1 and SIGHUP: what clusters and terminals send
before a job dies.

SLURM sends SIGTERM on preemption and at the time limit (and, with ``--signal``, SIGUSR1 a while
before it; submitit uses SIGUSR1 too); Ctrl-C is SIGINT; a closed terminal or ssh session
sends SIGHUP. Inside :class:`GracefulStop` the first such signal only sets a flag: the
meta-trainer finishes its current task, writes ``latest.pt`` and stops (so at most one task of
work is lost), and the run exits with status 128 + the signal and one line saying how to
resume. A second SIGINT interrupts at once, as usual.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from l2l.meta_training import Callback, MetaTrainer

log = logging.getLogger("l2l")

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None),
                            getattr(signal, "SIGUSR1", None), getattr(signal, "SIGHUP", None))
                if s is not None)


class GracefulStop(Callback):
    """Turns the first stop signal into a request the trainer honours: while the trainer
    trains (its begin and end hooks), or as a context manager."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_number is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signal_number is None:
            log.warning("received %s: finishing the current task, then saving and stopping",
                        signal.Signals(signum).name)
        self.signal_number = signum

    def stop_requested(self, trainer: MetaTrainer) -> str | None:
        if self.signal_number is None:
            return None
        return f"received {signal.Signals(self.signal_number).name}"

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_train_begin(self, trainer: MetaTrainer) -> None:
        self.__enter__()

    def on_train_end(self, trainer: MetaTrainer, result: dict | None) -> None:
        self.__exit__()
