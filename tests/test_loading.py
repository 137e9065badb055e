"""One loader, l2l.load_optimizer: every kind of spec loads with its provenance, a bad spec is
one clear error with the closest names, and every checkpoint already on disk still loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import l2l
import l2l.pretrained
from l2l.checkpoint import CheckpointError
from l2l.learned.base import LearnedOptimizer
from l2l.loading import Provenance, file_sha256

ROOT = Path(__file__).resolve().parents[1]
ZOO_FILE = ROOT / "l2l" / "pretrained" / "lstm-quadratic.pt"


def test_a_zoo_name_loads_with_its_provenance():
    optimizer, where = l2l.load_optimizer("lstm-quadratic")
    assert isinstance(optimizer, LearnedOptimizer) and optimizer.name == "lstm"
    assert isinstance(where, Provenance)
    assert (where.kind, where.zoo_name, where.path) == ("zoo", "lstm-quadratic", ZOO_FILE)
    assert where.sha256 == file_sha256(ZOO_FILE)
    assert where.trained_on["name"] == "quadratic" and where.iteration > 0


def test_a_checkpoint_file_and_a_run_directory_load(tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copyfile(ZOO_FILE, copy)
    optimizer, where = l2l.load_optimizer(copy)
    assert (where.kind, where.path, where.zoo_name) == ("checkpoint", copy, None)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(ZOO_FILE, run / "checkpoints" / "best.pt")
    again, where = l2l.load_optimizer(run)
    assert where.kind == "run" and where.path == run / "checkpoints" / "best.pt"
    assert again.config == optimizer.config


def test_a_baseline_name_loads_with_its_hyperparameters():
    optimizer, where = l2l.load_optimizer("adam", lr=0.01)
    assert optimizer.name == "adam" and optimizer.hyperparameters()["lr"] == 0.01
    assert (where.kind, where.path, where.sha256) == ("baseline", None, None)
    assert where.hyperparameters == {"lr": 0.01}


@pytest.mark.parametrize(("spec", "expected"), [
    ("lstm-quadratc", "did you mean lstm-quadratic"),
    ("adma", "did you mean adam"),
    ("nowhere.pt", "checkpoint=nowhere.pt does not exist"),
    ("lstm", "lstm is a learned optimizer, which needs its trained weights"),
])
def test_a_bad_spec_is_one_clear_error(spec, expected):
    with pytest.raises(CheckpointError, match=expected) as refused:
        l2l.load_optimizer(spec)
    assert "\n" not in str(refused.value)


def test_a_run_directory_without_best_pt_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="has no checkpoints/best.pt"):
        l2l.load_optimizer(tmp_path)


def test_hyperparameters_with_a_checkpoint_are_refused():
    with pytest.raises(ValueError, match="stores its optimizer: drop them"):
        l2l.load_optimizer("lstm-quadratic", lr=0.1)


def test_the_documented_aliases_call_the_one_loader():
    assert l2l.pretrained.load("lstm-quadratic").config == \
        l2l.load_optimizer("lstm-quadratic").optimizer.config


@pytest.mark.parametrize("path", sorted([*(ROOT / "docs" / "results").rglob("*.pt"),
                                         *(ROOT / "l2l" / "pretrained").glob("*.pt")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_checkpoint_on_disk_still_loads(path):
    optimizer, where = l2l.load_optimizer(path)
    assert isinstance(optimizer, LearnedOptimizer) and where.path == path
