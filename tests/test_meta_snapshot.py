"""The typed meta-training snapshot (l2l/meta_snapshot.py) reads every ``latest.pt`` l2l wrote.

tests/fixtures holds ``latest.pt`` files written by the l2l before the snapshot existed (commit
828601f, tests/fixtures/make_old_checkpoints.py), stopped after 3 of 6 meta-iterations, beside the
weights and history the same runs reached uninterrupted. Today's code must resume them exactly as
it resumes its own format, and to float precision of those runs (made on another CPU).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from l2l import checkpoint
from l2l.meta_snapshot import RESUME_FIELDS, MetaSnapshot
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.registry import build_optimizer
from l2l.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _case(case: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_old", FIXTURES / "make_old_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES[case]


@pytest.mark.parametrize("case", ["tbptt", "pes"])
def test_an_old_format_latest_checkpoint_resumes_bit_for_bit(tmp_path, case):
    name, settings = _case(case)
    (tmp_path / "checkpoints").mkdir()
    shutil.copyfile(FIXTURES / f"{case}_latest.pt", tmp_path / "checkpoints" / "latest.pt")
    trainer = MetaTrainer(build_optimizer(name), build_task("quadratic", dim=3),
                          MetaConfig(**settings), run_dir=tmp_path)
    assert trainer.resumed_from is not None and trainer.iteration == 3
    trainer.train()
    # bit for bit against the same state resumed from today's format on this machine (the
    # fixture's own uninterrupted run was computed on another CPU, whose float sums may differ
    # in the last bit), and to float precision against that run
    old_payload = checkpoint.load(FIXTURES / f"{case}_latest.pt")
    today = tmp_path / "today"
    (today / "checkpoints").mkdir(parents=True)
    snapshot = MetaSnapshot.from_payload(old_payload, str(FIXTURES / f"{case}_latest.pt"))
    checkpoint.save_atomic(snapshot.to_payload(), today / "checkpoints" / "latest.pt")
    reference = MetaTrainer(build_optimizer(name), build_task("quadratic", dim=3),
                            MetaConfig(**settings), run_dir=today)
    reference.train()
    expected = torch.load(FIXTURES / f"{case}_final.pt", weights_only=True)
    for key, value in expected["weights"].items():
        assert torch.equal(trainer.optimizer.state_dict()[key],
                           reference.optimizer.state_dict()[key]), key
        torch.testing.assert_close(trainer.optimizer.state_dict()[key], value)
    assert trainer.history == reference.history
    assert trainer.history.keys() == expected["history"].keys()
    for key, values in expected["history"].items():
        assert trainer.history[key] == pytest.approx(values, rel=1e-5), key
    # and what it writes now is the same format: the keys of the old file, nothing lost
    assert set(checkpoint.load(trainer.latest_path)) == set(old_payload)


def test_the_snapshot_round_trips_the_paper_lstm_latest_checkpoint():
    path = ROOT / "docs" / "results" / "mnist" / "paper_lstm_s0_latest.pt"
    payload = checkpoint.load(path)
    snapshot = MetaSnapshot.from_payload(payload, str(path))
    assert snapshot.population is None and snapshot.iteration > 0
    again = snapshot.to_payload()
    assert set(again) == set(payload) - {"format"}
    for key in RESUME_FIELDS:
        assert type(again[key]) is type(payload[key]), key
    assert torch.equal(again["rng"], payload["rng"])


def test_a_snapshot_without_population_state_is_refused_for_a_population_run(tmp_path):
    name, settings = _case("tbptt")
    (tmp_path / "checkpoints").mkdir()
    shutil.copyfile(FIXTURES / "tbptt_latest.pt", tmp_path / "checkpoints" / "latest.pt")
    pes = {**settings, "estimator": "pes", "particles": 2}
    with pytest.raises(checkpoint.CheckpointError, match="other settings .*estimator: "
                       "checkpoint 'auto', now 'pes'"):
        MetaTrainer(build_optimizer(name), build_task("quadratic", dim=3), MetaConfig(**pes),
                    run_dir=tmp_path)
    payload = checkpoint.load(tmp_path / "checkpoints" / "latest.pt")
    payload["meta_config"].update(estimator="pes", particles=2)
    checkpoint.save_atomic(payload, tmp_path / "checkpoints" / "latest.pt")
    with pytest.raises(checkpoint.CheckpointError, match="holds no population state for "
                       "meta.estimator=pes"):
        MetaTrainer(build_optimizer(name), build_task("quadratic", dim=3), MetaConfig(**pes),
                    run_dir=tmp_path)


def test_a_population_split_over_two_processes_resumes_only_with_two(tmp_path):
    name, settings = _case("pes")
    payload = checkpoint.load(FIXTURES / "pes_latest.pt")
    payload["population"] = {"ranks": [payload["population"]] * 2}
    payload["estimator"] = {"ranks": [payload["estimator"]] * 2}
    checkpoint.save_atomic(payload, tmp_path / "checkpoints" / "latest.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"holds a population split over 2 "
                       r"process\(es\), this run has 1: resume it with 2"):
        MetaTrainer(build_optimizer(name), build_task("quadratic", dim=3),
                    MetaConfig(**settings), run_dir=tmp_path)
