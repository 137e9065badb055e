"""Shared fixtures: where the real MNIST files are, and the dataset loaded once per session.

The data directory is ``$L2L_DATA_DIR`` if set, else the repository's sibling
``../shared/data/mnist``. MNIST tests are skipped (with the reason) only when neither holds the
four files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l2l.config_store import register_configs
from l2l.tasks.mnist_data import FILES

register_configs()  # tests compose conf/ with Hydra: the optimizer defaults must be registered

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _find_mnist_dir() -> tuple[Path | None, str]:
    env = os.environ.get("L2L_DATA_DIR", "")
    candidate = Path(env).expanduser() if env else _SHARED
    source = "$L2L_DATA_DIR" if env else "the default ../shared/data/mnist"
    missing = [n for n in FILES if not (candidate / n).is_file()]
    if missing:
        return None, f"MNIST not found in {candidate} ({source}); missing {', '.join(missing)}"
    return candidate, ""


@pytest.fixture(scope="session", autouse=True)
def _mnist_env():
    """Point ``$L2L_DATA_DIR`` at the data found above for the whole session, so that code under
    test which resolves the directory itself (``build_task("mnist_mlp")``) never reaches for the
    network or the user cache."""
    path, _ = _find_mnist_dir()
    with pytest.MonkeyPatch.context() as mp:
        if path is not None:
            mp.setenv("L2L_DATA_DIR", str(path))
        yield


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path, reason = _find_mnist_dir()
    if path is None:
        pytest.skip(reason + ": set L2L_DATA_DIR to a directory holding the four MNIST .gz files")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from l2l.tasks.mnist_data import load_mnist

    return load_mnist(mnist_dir, download=False)
