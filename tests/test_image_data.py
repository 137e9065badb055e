"""Fashion-MNIST, KMNIST and CIFAR-10 loaders on small fixture files in the official formats
(no network): parsing, checksums, missing files, a download from a local mirror, and an MLP
family trained on them."""

from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from l2l.tasks import build_task
from l2l.tasks import image_data as data
from l2l.tasks.mnist_data import (
    MNISTChecksumError,
    MNISTFormatError,
    MNISTNotFoundError,
    file_md5,
)

RNG = np.random.default_rng(0)


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def make_idx(folder: Path, train: int = 12, test: int = 4) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_x": RNG.integers(0, 256, (train, 28, 28)),
              "train_y": RNG.integers(0, 10, train),
              "test_x": RNG.integers(0, 256, (test, 28, 28)), "test_y": RNG.integers(0, 10, test)}
    for name, key, magic in zip(data.IDX_NAMES, arrays, (2051, 2049, 2051, 2049)):
        _idx(folder / name, magic, arrays[key])
    return arrays


def make_cifar(folder: Path, per_batch: int = 3, test: int = 2) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    records = {m: np.concatenate([RNG.integers(0, 10, (n, 1)), RNG.integers(0, 256, (n, 3072))],
                                 axis=1).astype(np.uint8)
               for m, n in zip(data.CIFAR_MEMBERS, [per_batch] * 5 + [test])}
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for member, array in records.items():
            raw = array.tobytes()
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return records


@pytest.fixture
def official(monkeypatch):
    """Make the fixture files' md5 sums the 'official' ones for the test."""
    def trust(name: str, folder: Path) -> None:
        spec = data.DATASETS[name]
        sums = {f: file_md5(folder / f) for f in spec.files}
        monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(spec, files=sums))
        data._LOADED.clear()

    yield trust
    data._LOADED.clear()


@pytest.mark.parametrize("name", ["fashion_mnist", "kmnist"])
def test_an_idx_dataset_is_read_with_its_splits(tmp_path, official, name):
    arrays = make_idx(tmp_path / name)
    official(name, tmp_path / name)
    loaded = data.load_image_dataset(name, tmp_path / name, download=False)
    assert loaded.train_images.shape == (12, 784) and loaded.test_images.shape == (4, 784)
    assert torch.equal(loaded.train_images[3] * 255,
                       torch.tensor(arrays["train_x"][3].ravel(), dtype=torch.float32))
    assert loaded.test_labels.tolist() == arrays["test_y"].tolist()
    train, valid = loaded.split("train")[0], loaded.split("valid")[0]
    assert (len(train), len(valid)) == (10, 2)  # the last sixth validates, as MNIST's 10,000


def test_cifar10_binary_records_are_read_from_the_archive_grey_or_colour(tmp_path, official):
    records = make_cifar(tmp_path / "cifar10")
    official("cifar10", tmp_path / "cifar10")
    colour = data.load_image_dataset("cifar10", tmp_path / "cifar10", download=False, grey=False)
    first = records[data.CIFAR_MEMBERS[0]][0]
    assert colour.train_images.shape == (15, 3072) and colour.test_images.shape == (2, 3072)
    assert colour.train_labels[0] == first[0]
    assert torch.allclose(colour.train_images[0] * 255,
                          torch.tensor(first[1:], dtype=torch.float32))
    grey = data.load_image_dataset("cifar10", tmp_path / "cifar10", download=False)
    r, g, b = (first[1 + 1024 * k:1 + 1024 * (k + 1)] / 255.0 for k in range(3))
    assert grey.train_images.shape == (15, 1024)
    assert np.allclose(grey.train_images[0].numpy(), 0.299 * r + 0.587 * g + 0.114 * b,
                       atol=1e-6)
    assert grey.test_labels.tolist() == records[data.CIFAR_MEMBERS[-1]][:, 0].tolist()
    assert len(grey.split("train")[0]) == 12 and len(grey.split("valid")[0]) == 3


def test_a_cifar_archive_without_its_records_is_refused(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 5
        tar.addfile(info, io.BytesIO(bytes(5)))
    with pytest.raises(MNISTFormatError, match="not a whole number|has no"):
        data.read_cifar10_binary(tmp_path / "cifar-10-binary.tar.gz")


def test_a_missing_or_corrupt_file_is_named(tmp_path, official):
    with pytest.raises(MNISTNotFoundError, match="fashion_mnist data not found"):
        data.load_image_dataset("fashion_mnist", tmp_path / "none", download=False)
    make_idx(tmp_path / "kmnist")  # not the official sums
    with pytest.raises(MNISTChecksumError, match="corrupt or not the official release"):
        data.load_image_dataset("kmnist", tmp_path / "kmnist", download=False)
    with pytest.raises(ValueError, match="unknown image dataset"):
        data.load_image_dataset("svhn")


def test_a_download_is_checked_against_the_official_md5(tmp_path, official, monkeypatch):
    make_idx(tmp_path / "mirror")
    official("fashion_mnist", tmp_path / "mirror")
    target = tmp_path / "fashion_mnist"
    loaded = data.load_image_dataset("fashion_mnist", target, mirrors=(
        (tmp_path / "mirror").as_uri() + "/",), progress=False)
    assert loaded.train_images.shape == (12, 784)
    assert sorted(p.name for p in target.iterdir()) == sorted(data.IDX_NAMES)  # no temp files
    wrong = dataclasses.replace(data.DATASETS["fashion_mnist"],
                                files=dict.fromkeys(data.IDX_NAMES, "0" * 32))
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", wrong)
    with pytest.raises(MNISTNotFoundError, match="could not download"):
        data.load_image_dataset("fashion_mnist", tmp_path / "other", mirrors=(
            (tmp_path / "mirror").as_uri() + "/",), progress=False)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_mnist_folder_means_its_sibling_and_the_mlp_trains_on_other_datasets(tmp_path, official):
    make_idx(tmp_path / "fashion_mnist")
    official("fashion_mnist", tmp_path / "fashion_mnist")
    make_cifar(tmp_path / "cifar10")
    official("cifar10", tmp_path / "cifar10")
    assert data.resolve_dir("fashion_mnist", tmp_path / "mnist") == tmp_path / "fashion_mnist"
    for name, expected in (("fashion_mnist", 64 * 8 + 8 + 8 * 10 + 10),
                           ("cifar10", 64 * 8 + 8 + 8 * 10 + 10)):
        family = build_task("mnist_mlp", hidden_sizes=[8], resolution=8, dataset=name,
                            data_dir=str(tmp_path / "mnist"), download=False)
        assert family.num_params == expected
        instances = family.sample(2, 0, "valid")
        loss, grads = instances.loss_and_grad(instances.init_params, 0)
        assert torch.isfinite(loss).all() and grads.shape == (2, expected)
    with pytest.raises(ValueError, match="unknown image dataset"):
        build_task("mnist_mlp", dataset="svhn")
