"""The run logger of the ranks other than 0 of a distributed run: the same calls, no output,
so the modes log the same way in every process and only rank 0 writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SilentLogger:
    """Stands in for :class:`~l2l.tracking.RunLogger` on ranks other than 0 of a
    distributed run (:mod:`l2l.env.distributed`): logs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> SilentLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None
