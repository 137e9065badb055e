"""MNIST: find, download (optionally), verify and parse the four canonical IDX ``.gz`` files.

Where the files are looked for (``resolve_data_dir``): the ``data_dir`` argument if given, else
the environment variable ``L2L_DATA_DIR``, else a per-user cache ``$XDG_CACHE_HOME/l2l/mnist``
(``~/.cache/l2l/mnist`` when ``XDG_CACHE_HOME`` is unset).

Every file is md5-verified against the canonical sums before it is parsed; a missing file is
downloaded (when allowed) from the first working mirror in ``MIRRORS`` into a temporary file in
the same directory, verified, and only then moved into place with ``os.replace``, so an
interrupted or corrupt download never leaves a file behind under the real name.

Splits (``MNIST.split``): ``"train"`` = the first 50,000 training images, ``"valid"`` = the last
10,000 training images, ``"test"`` = the 10,000 test images.

A parsed dataset is cached in-process per (directory, file sizes and mtimes, device), so sampling
many batches of tasks reads and parses the files once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from l2l.tasks.base import check_split

#: public mirrors of the original files, tried in order
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

#: file name -> (md5, size in bytes) of the canonical release
FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28881),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1648877),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4542),
}

ENV_VAR = "L2L_DATA_DIR"
NUM_TRAIN = 50_000  # the rest of the 60,000 training images form the validation split
IMAGE_SIZE = 28 * 28
NUM_CLASSES = 10
DEFAULT_TIMEOUT = 60.0


class MNISTNotFoundError(FileNotFoundError):
    """Some MNIST files are missing and could not be downloaded."""


class MNISTDownloadError(MNISTNotFoundError):
    """Downloading a missing file failed on every mirror."""


class MNISTChecksumError(RuntimeError):
    """A local file does not have the canonical md5 sum (corrupt or truncated)."""


class MNISTFormatError(ValueError):
    """A file has the right name but is not the expected IDX content."""


@dataclass(frozen=True)
class MNIST:
    """The parsed dataset; images ``float32`` in ``[0, 1]`` flattened to 784, labels ``int64``."""

    train_images: Tensor  # (60000, 784)
    train_labels: Tensor  # (60000,)
    test_images: Tensor  # (10000, 784)
    test_labels: Tensor  # (10000,)

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of split ``"train"``, ``"valid"`` or ``"test"`` (views, no copy)."""
        check_split(name)
        if name == "train":
            return self.train_images[:NUM_TRAIN], self.train_labels[:NUM_TRAIN]
        if name == "valid":
            return self.train_images[NUM_TRAIN:], self.train_labels[NUM_TRAIN:]
        return self.test_images, self.test_labels

    def to(self, device: torch.device | str) -> MNIST:
        return MNIST(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.train_images, self.train_labels, self.test_images, self.test_labels


# ---------------------------------------------------------------------------------------------
# Locating and verifying files.


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The MNIST directory: ``data_dir`` if given, else ``$L2L_DATA_DIR``, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
    elif os.environ.get(ENV_VAR, ""):
        path = Path(os.environ[ENV_VAR]).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(cache).expanduser() if cache else Path.home() / ".cache"
        path = base / "l2l" / "mnist"
    if path.exists() and not path.is_dir():
        raise MNISTNotFoundError(f"the MNIST data directory {path} is a file, not a directory: "
                                 f"point data_dir= (or ${ENV_VAR}) to a directory")
    return path


def file_md5(path: str | os.PathLike[str]) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path) -> None:
    """Raise ``MNISTChecksumError`` unless ``path`` has its canonical md5 sum."""
    want = FILES[path.name][0]
    got = file_md5(path)
    if got != want:
        raise MNISTChecksumError(
            f"MNIST file {path} is corrupt or truncated: its md5 checksum is {got}, expected "
            f"{want}. Delete it and call load_mnist(download=True) to download it again, or "
            "replace it with a good copy of the original file."
        )


def missing_files(data_dir: Path) -> list[str]:
    return [name for name in FILES if not (data_dir / name).is_file()]


def _how_to_fix(data_dir: Path) -> str:
    return (
        f"To fix this, either set the environment variable {ENV_VAR} (or pass data_dir=...) to "
        "a directory holding the four files, allow downloads (task.kwargs.download=true) with "
        "internet "
        f"access, or copy the files {', '.join(FILES)} into {data_dir}."
    )


# ---------------------------------------------------------------------------------------------
# Downloading.


class _Progress:
    """A one-line progress bar on stderr (redrawn at most every 0.1 s)."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.done = 0
        self._last = 0.0

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        mb = self.done / 1e6
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"{self.label} [{bar:<30}] {frac:6.1%} {mb:.1f}/{self.total / 1e6:.1f} MB"
        else:
            line = f"{self.label} {mb:.1f} MB"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(0, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def _download_one(url: str, target: Path, timeout: float, progress: bool,
                  md5: str | None = None) -> None:
    """Download ``url`` to ``target`` atomically, verifying the md5 (``md5``, else MNIST's sum
    for the file's name) before the file appears."""
    want_md5 = md5 or FILES[target.name][0]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5()
        request = urllib.request.Request(url, headers={"User-Agent": "l2l-mnist/0.1"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            bar = _Progress(f"downloading {url}", int(length) if length else None, progress)
            try:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
        got = h.hexdigest()
        if got != want_md5:
            raise MNISTChecksumError(
                f"md5 checksum mismatch for {url}: got {got}, expected {want_md5}"
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def download_from_mirrors(files: Mapping[str, str], folder: Path, mirrors: Sequence[str], *,
                          what: str, timeout: float, progress: bool,
                          fix: Callable[[], str]) -> None:
    """Download each of ``files`` (name -> md5) into ``folder``, trying ``mirrors`` in order.

    One loop for every dataset l2l downloads (MNIST here, Fashion-MNIST, KMNIST and CIFAR-10 in
    :mod:`l2l.tasks.image_data`): each file goes to a temporary file and appears only once its
    md5 matched, so a failed or corrupt download leaves nothing behind and counts as that
    mirror's failure. When every mirror failed for a file: ``MNISTDownloadError``, one line
    naming the file, ``folder``, each mirror's URL with its error, then ``fix()`` (what to do,
    computed then, e.g. the files still missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in files.items():
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _download_one(url, folder / name, timeout, progress, md5=md5)
                break
            except (OSError, ValueError, MNISTChecksumError, http.client.HTTPException) as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
        else:
            tried = "; ".join(errors) if errors else "no mirrors given"
            raise MNISTDownloadError(f"could not download {what} file {name} into {folder}, "
                                     f"every mirror failed ({tried}): {fix()}")


def download_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    files: Sequence[str] | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download the missing ``files`` (default: all that are missing) into the data directory.

    Each file is tried on every mirror in turn; a download whose md5 does not match is discarded
    and counts as a failure. Raises ``MNISTDownloadError`` naming every mirror's error when a file
    could not be fetched from any of them.
    """
    d = resolve_data_dir(data_dir)
    mirrors = list(MIRRORS if mirrors is None else mirrors)
    wanted = missing_files(d) if files is None else list(files)
    unknown = [f for f in wanted if f not in FILES]
    if unknown:
        raise ValueError(f"not MNIST files: {unknown}; known files: {list(FILES)}")
    if not wanted:
        return d
    download_from_mirrors({name: FILES[name][0] for name in wanted}, d, mirrors, what="MNIST",
                          timeout=timeout, progress=progress,
                          fix=lambda: f"still missing in {d}: {', '.join(missing_files(d))}. "
                          + _how_to_fix(d))
    return d


# ---------------------------------------------------------------------------------------------
# Parsing and loading.


def _read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse a gzipped IDX file of uint8 data with the expected magic number and shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = len(shape)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MNISTFormatError(f"{path}: too short for an IDX header")
    got_magic = int.from_bytes(raw[:4], "big")
    dims = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if got_magic != magic or dims != shape:
        raise MNISTFormatError(
            f"{path}: IDX magic {got_magic} and shape {dims}, expected {magic} and {shape}"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise MNISTFormatError(f"{path}: {data.size} data bytes, expected {int(np.prod(shape))}")
    return data.reshape(shape)


def _parse(d: Path) -> MNIST:
    for name in FILES:
        verify_file(d / name)
    tr_x = _read_idx(d / "train-images-idx3-ubyte.gz", 2051, (60000, 28, 28))
    tr_y = _read_idx(d / "train-labels-idx1-ubyte.gz", 2049, (60000,))
    te_x = _read_idx(d / "t10k-images-idx3-ubyte.gz", 2051, (10000, 28, 28))
    te_y = _read_idx(d / "t10k-labels-idx1-ubyte.gz", 2049, (10000,))

    def images(x: np.ndarray) -> Tensor:
        return torch.from_numpy(x.reshape(len(x), IMAGE_SIZE).astype(np.float32) / 255.0)

    def labels(y: np.ndarray) -> Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return MNIST(images(tr_x), labels(tr_y), images(te_x), labels(te_y))


_PARSED: dict[tuple, MNIST] = {}
_ON_DEVICE: dict[tuple, MNIST] = {}


def _normalise_device(device: torch.device | str | None) -> torch.device:
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def clear_cache() -> None:
    """Forget every parsed dataset held in this process."""
    _PARSED.clear()
    _ON_DEVICE.clear()


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    device: torch.device | str | None = "cpu",
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> MNIST:
    """Load MNIST onto ``device``, downloading missing files first if ``download``.

    Raises ``MNISTNotFoundError`` (a ``FileNotFoundError``) naming the directory and the missing
    files when files are missing and cannot be downloaded, and ``MNISTChecksumError`` naming the
    file when a local file is corrupt.
    """
    d = resolve_data_dir(data_dir)
    missing = missing_files(d)
    if missing:
        if not download:
            raise MNISTNotFoundError(
                f"MNIST data not found: {d} lacks {', '.join(missing)} and downloads are "
                "disabled (download=False). " + _how_to_fix(d)
            )
        download_mnist(d, files=missing, mirrors=mirrors, timeout=timeout, progress=progress)
    stats = tuple((n, (d / n).stat().st_size, (d / n).stat().st_mtime_ns) for n in FILES)
    key = (str(d.resolve()), stats)
    dev = _normalise_device(device)
    cached = _ON_DEVICE.get((key, str(dev)))
    if cached is not None:
        return cached
    cpu = _PARSED.get(key)
    if cpu is None:
        cpu = _PARSED[key] = _parse(d)
    data = cpu if dev.type == "cpu" else cpu.to(dev)
    _ON_DEVICE[(key, str(dev))] = data
    return data
