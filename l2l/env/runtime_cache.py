"""Compile once per machine: point torch.compile's caches at a per-user directory.

Inductor's default cache lives under ``/tmp/torchinductor_<user>``, which many machines wipe at
reboot, so every new run paid the full compile (tens of seconds on CPU). Unless the user set them,
``TORCHINDUCTOR_CACHE_DIR`` becomes ``~/.cache/l2l/inductor`` (or ``$XDG_CACHE_HOME/l2l/...``)
and the FX-graph cache is switched on, so a second run on the same machine loads the compiled
kernels instead of rebuilding them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

_done = False


def compile_cache_dir() -> Path:
    """Where l2l keeps torch.compile's caches unless ``TORCHINDUCTOR_CACHE_DIR`` is set."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "l2l" / "inductor"


def enable_compile_cache() -> None:
    """Set the cache variables (before the first compile; the user's own settings win)."""
    global _done
    if _done:
        return
    _done = True
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path = compile_cache_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only home: keep inductor's default
            return
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")


def compiled(update: Callable) -> Callable:
    """``torch.compile(update)``, falling back to eager (with a warning) if compiling fails,
    e.g. on a machine without a C++ compiler. The first call compiles (seconds to a minute);
    the caches are kept per user (:func:`enable_compile_cache`), so later runs load the kernels."""
    enable_compile_cache()
    fast: Callable | None = torch.compile(update, dynamic=False)

    def call(*args: Any) -> Any:
        nonlocal fast
        if fast is not None:
            try:
                return fast(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
                warnings.warn(f"torch.compile failed ({type(error).__name__}: "
                              f"{str(error)[:200]}); meta-training continues uncompiled",
                              RuntimeWarning, stacklevel=2)
                fast = None
        return update(*args)

    return call
