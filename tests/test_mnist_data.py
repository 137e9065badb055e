from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch

from l2l.tasks import mnist_data
from l2l.tasks.mnist_data import (
    FILES,
    MNISTChecksumError,
    MNISTDownloadError,
    MNISTNotFoundError,
    download_mnist,
    file_md5,
    load_mnist,
    resolve_data_dir,
)

LABELS = "t10k-labels-idx1-ubyte.gz"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """An HTTP server on 127.0.0.1 (ephemeral port) serving ``directory``; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def copy_files(src: Path, dst: Path, names=tuple(FILES)) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / name, dst / name)


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# The parsed dataset.


def test_known_facts(mnist):
    assert mnist.train_images.shape == (60000, 784) and mnist.test_images.shape == (10000, 784)
    assert mnist.train_images.dtype == torch.float32 and mnist.train_labels.dtype == torch.int64
    assert mnist.train_images.min() == 0.0 and mnist.train_images.max() == 1.0
    assert mnist.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(mnist.train_labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert torch.bincount(mnist.test_labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]


def test_splits(mnist):
    tr_x, tr_y = mnist.split("train")
    va_x, va_y = mnist.split("valid")
    te_x, te_y = mnist.split("test")
    assert tr_x.shape == (50000, 784) and va_x.shape == (10000, 784) and te_x.shape[0] == 10000
    assert torch.equal(torch.cat([tr_x, va_x]), mnist.train_images)
    assert torch.equal(torch.cat([tr_y, va_y]), mnist.train_labels)
    assert te_y is mnist.test_labels
    with pytest.raises(ValueError, match="split"):
        mnist.split("validation")


def test_cached_in_process(mnist_dir, mnist):
    assert load_mnist(mnist_dir, download=False) is mnist


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("L2L_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("L2L_DATA_DIR")
    assert resolve_data_dir(None) == tmp_path / "xdg" / "l2l" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir(None) == Path.home() / ".cache" / "l2l" / "mnist"


# ---------------------------------------------------------------------------------------------
# Missing and corrupt files.


def test_missing_dir_without_download(tmp_path):
    target = tmp_path / "nowhere"
    with pytest.raises(MNISTNotFoundError) as err:
        load_mnist(target, download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(target) in msg and "L2L_DATA_DIR" in msg and "download" in msg
    for name in FILES:
        assert name in msg
    assert not target.exists()


def test_corrupt_local_file(mnist_dir, tmp_path):
    copy_files(mnist_dir, tmp_path)
    corrupt(tmp_path / LABELS)
    with pytest.raises(MNISTChecksumError) as err:
        load_mnist(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / LABELS) in msg and "md5" in msg and "Delete" in msg


def test_bad_idx_header(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        header = [2049, 5, 28, 28]  # a label file's magic where an image file is expected
        f.write(b"".join(v.to_bytes(4, "big") for v in header) + bytes(5 * 28 * 28))
    with pytest.raises(mnist_data.MNISTFormatError, match="magic 2049"):
        mnist_data._read_idx(path, 2051, (5, 28, 28))
    with gzip.open(path, "wb") as f:
        f.write(bytes(6))
    with pytest.raises(mnist_data.MNISTFormatError, match="too short"):
        mnist_data._read_idx(path, 2051, (5, 28, 28))


# ---------------------------------------------------------------------------------------------
# Downloading from a local mirror.


def test_download_from_local_mirror(mnist_dir, tmp_path, capsys):
    served = tmp_path / "served"
    copy_files(mnist_dir, served)
    target = tmp_path / "empty" / "mnist"
    with serve(served) as url:
        # the first mirror is dead (nothing listens on port 1): the second one must be used
        data = load_mnist(target, mirrors=["http://127.0.0.1:1/", url], timeout=10)
    for name, (md5, size) in FILES.items():
        assert file_md5(target / name) == md5 and (target / name).stat().st_size == size
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)  # no temp files left
    assert data.train_labels[:3].tolist() == [5, 0, 4]
    assert "downloading" in capsys.readouterr().err  # the progress bar went to stderr


def test_corrupt_mirror_rejected(mnist_dir, tmp_path):
    served = tmp_path / "served"
    copy_files(mnist_dir, served)
    corrupt(served / LABELS)
    target = tmp_path / "target"
    others = [n for n in FILES if n != LABELS]
    copy_files(mnist_dir, target, others)
    with serve(served) as url, pytest.raises(MNISTDownloadError) as err:
        load_mnist(target, mirrors=[url], timeout=10, progress=False)
    msg = str(err.value).lower()
    assert "md5" in msg or "checksum" in msg
    assert LABELS in str(err.value) and str(target) in str(err.value)
    # neither the corrupt file nor a partial download remains
    assert sorted(p.name for p in target.iterdir()) == sorted(others)


def test_all_mirrors_fail(tmp_path):
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    target = tmp_path / "target"
    unreachable = (tmp_path / "no_such_mirror").as_uri() + "/"
    with serve(empty) as url, pytest.raises(MNISTDownloadError) as err:
        download_mnist(target, files=[LABELS], mirrors=[url, unreachable], timeout=10,
                       progress=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "404" in msg and LABELS in msg and str(target) in msg and "L2L_DATA_DIR" in msg
    assert "\n" not in msg and url in msg and unreachable in msg  # one line, every mirror named
    assert list(target.iterdir()) == []
