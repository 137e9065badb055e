"""Fashion-MNIST, KMNIST and CIFAR-10: found, downloaded with a checksum, verified and parsed
like MNIST (:mod:`l2l.tasks.mnist_data`), into the same :class:`~l2l.tasks.mnist_data.MNIST`
tensors (flat float images in ``[0, 1]``, int64 labels), so every MNIST family can train on them
(``dataset=`` of ``mnist_mlp``).

* Fashion-MNIST and KMNIST are drop-in MNIST replacements: the same four IDX ``.gz`` files
  (same names, 28 x 28 grey images, 60,000 + 10,000), read by MNIST's own IDX reader.
* CIFAR-10 is read from its *binary* release ``cifar-10-binary.tar.gz`` (never the pickled
  Python one, which would run code on load): fixed 3,073-byte records (a label byte, then the
  1,024 red, green and blue bytes of a 32 x 32 image) in ``data_batch_1..5.bin`` and
  ``test_batch.bin``, read from the archive in memory (nothing is extracted). ``grey=True``
  (the default, as Celo's grey CIFAR-10) gives luminance images ``0.299 R + 0.587 G + 0.114 B``
  of 1,024 pixels, else 3,072 values (channels first).

Checksums are the official ones: the md5 sums torchvision lists for Fashion-MNIST and KMNIST,
and the one the CIFAR page lists for its binary version. Where a dataset lives: ``data_dir``
if given (MNIST's folder ``.../data/mnist`` there means its sibling ``.../data/<name>``);
else, when ``$L2L_DATA_DIR`` (MNIST's folder) is set, the sibling ``<name>`` folder of it;
else ``~/.cache/l2l/<name>``. Splits follow MNIST's: validation is the last 10,000 training images.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2l.tasks.base import check_split
from l2l.tasks.mnist_data import (
    ENV_VAR,
    MNIST,
    MNISTChecksumError,
    MNISTFormatError,
    MNISTNotFoundError,
    _read_idx,
    download_from_mirrors,
    file_md5,
)


@dataclass(frozen=True)
class ImageDataset:
    """Where a dataset comes from and how its files are read."""

    name: str
    files: dict[str, str]  #: file name -> md5 of the official release
    mirrors: tuple[str, ...]
    kind: str  #: "idx" (MNIST's four files) or "cifar10_binary"
    num_train: int  #: training images before the validation split


IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

DATASETS: dict[str, ImageDataset] = {
    "fashion_mnist": ImageDataset(
        "fashion_mnist", dict(zip(IDX_NAMES, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), "idx", 50_000),
    "kmnist": ImageDataset(
        "kmnist", dict(zip(IDX_NAMES, (
            "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"))),
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",), "idx", 50_000),
    "cifar10": ImageDataset(
        "cifar10", {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        ("https://www.cs.toronto.edu/~kriz/",), "cifar10_binary", 40_000),
}
CIFAR_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{k}.bin" for k in range(1, 6)) + (
    "cifar-10-batches-bin/test_batch.bin",)
CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclass(frozen=True)
class ImageData(MNIST):
    """MNIST's tensors with the dataset's own training/validation boundary."""

    num_train: int = 50_000

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        check_split(name)
        if name == "train":
            return self.train_images[:self.num_train], self.train_labels[:self.num_train]
        if name == "valid":
            return self.train_images[self.num_train:], self.train_labels[self.num_train:]
        return self.test_images, self.test_labels

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(*(t.to(device) for t in self._tensors()), num_train=self.num_train)


def dataset_spec(name: str) -> ImageDataset:
    spec = DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown image dataset {name!r}: choose mnist or one of "
                         f"{', '.join(DATASETS)}")
    return spec


def resolve_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The dataset's folder (see the module's docstring). A ``data_dir`` named after another
    dataset (MNIST's ``.../mnist``, the ``data_dir=`` of a run) means its sibling
    ``.../<name>``: the datasets sit side by side, and MNIST's files have the same names."""
    if data_dir is not None and str(data_dir) != "":
        folder = Path(data_dir).expanduser()
        others = {"mnist", *DATASETS} - {name}
        return folder.parent / name if folder.name in others else folder
    if os.environ.get(ENV_VAR, ""):
        return Path(os.environ[ENV_VAR]).expanduser().parent / name
    cache = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "l2l" / name


def _verify(spec: ImageDataset, path: Path) -> None:
    got, want = file_md5(path), spec.files[path.name]
    if got != want:
        raise MNISTChecksumError(f"{spec.name} file {path} is corrupt or not the official "
                                 f"release: md5 {got}, expected {want}. Delete it and let l2l "
                                 "download it again, or replace it with a good copy")


def read_cifar10_binary(archive: Path, grey: bool = True) -> ImageData:
    """CIFAR-10's binary records from ``cifar-10-binary.tar.gz``, read in memory."""
    arrays = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in CIFAR_MEMBERS:
            try:
                info = tar.getmember(member)
            except KeyError as error:
                raise MNISTFormatError(f"{archive} has no {member}: not the CIFAR-10 binary "
                                       "release") from error
            handle = tar.extractfile(info) if info.isfile() else None
            if handle is None:
                raise MNISTFormatError(f"{archive}: {member} is not a regular file")
            raw = handle.read()
            if len(raw) % CIFAR_RECORD:
                raise MNISTFormatError(f"{archive}: {member} holds {len(raw)} bytes, not a "
                                       f"whole number of {CIFAR_RECORD}-byte records")
            arrays.append(np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD))
    train, test = np.concatenate(arrays[:-1]), arrays[-1]

    def images(records: np.ndarray) -> torch.Tensor:
        x = records[:, 1:].astype(np.float32) / 255.0  # (N, 3 * 1024), channels first
        if grey:
            rgb = x.reshape(len(x), 3, 1024)
            x = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def labels(records: np.ndarray) -> torch.Tensor:
        y = records[:, 0].astype(np.int64)
        if y.size and y.max() > 9:
            raise MNISTFormatError(f"{archive}: a label above 9: not CIFAR-10 records")
        return torch.from_numpy(y)

    num_train = len(train) - min(10_000, len(train) // 5)
    return ImageData(images(train), labels(train), images(test), labels(test),
                     num_train=num_train)


def read_idx_dataset(folder: Path, num_train: int) -> ImageData:
    """The four MNIST-format IDX files of ``folder`` (any number of images)."""
    def read(name: str, magic: int, image: bool) -> np.ndarray:
        with gzip.open(folder / name, "rb") as handle:
            count = int.from_bytes(handle.read(8)[4:8], "big")  # the header's first dimension
        return _read_idx(folder / name, magic, (count, 28, 28) if image else (count,))

    tr_x = read(IDX_NAMES[0], 2051, True)
    tr_y = read(IDX_NAMES[1], 2049, False)
    te_x = read(IDX_NAMES[2], 2051, True)
    te_y = read(IDX_NAMES[3], 2049, False)
    num_train = min(num_train, len(tr_x) - min(10_000, len(tr_x) // 6))

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.reshape(len(x), 784).astype(np.float32) / 255.0)

    return ImageData(images(tr_x), torch.from_numpy(tr_y.astype(np.int64)), images(te_x),
                     torch.from_numpy(te_y.astype(np.int64)), num_train=num_train)


_LOADED: dict[tuple, ImageData] = {}


def load_image_dataset(name: str, data_dir: str | os.PathLike[str] | None = None,
                       download: bool = True, device: torch.device | str | None = "cpu", *,
                       grey: bool = True, mirrors: tuple[str, ...] | None = None,
                       timeout: float = 60.0, progress: bool = True) -> ImageData:
    """Load ``name`` (``fashion_mnist``, ``kmnist``, ``cifar10``), downloading missing files
    first if ``download``; every file is md5-verified before it is parsed. Raises
    ``MNISTNotFoundError`` (missing, no download), ``MNISTDownloadError`` (every mirror failed)
    or ``MNISTChecksumError`` (a corrupt file), each naming the folder or file."""
    spec = dataset_spec(name)
    folder = resolve_dir(name, data_dir)
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        if not download:
            raise MNISTNotFoundError(f"{name} data not found: {folder} lacks "
                                     f"{', '.join(missing)} and downloads are disabled; copy "
                                     "the official files there or allow downloads")
        download_from_mirrors({f: spec.files[f] for f in missing}, folder,
                              spec.mirrors if mirrors is None else mirrors, what=spec.name,
                              timeout=timeout, progress=progress,
                              fix=lambda: f"copy the official files {', '.join(spec.files)} "
                              "there")
    stats = tuple((f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns)
                  for f in spec.files)
    key = (name, str(folder.resolve()), stats, grey)
    data = _LOADED.get(key)
    if data is None:
        for file in spec.files:
            _verify(spec, folder / file)
        data = _LOADED[key] = (read_cifar10_binary(folder / "cifar-10-binary.tar.gz", grey)
                               if spec.kind == "cifar10_binary"
                               else read_idx_dataset(folder, spec.num_train))
    dev = torch.device("cpu" if device is None else device)
    return data if dev.type == "cpu" else data.to(dev)


__all__ = ["DATASETS", "ImageData", "ImageDataset", "load_image_dataset", "read_cifar10_binary",
           "read_idx_dataset", "resolve_dir"]
