"""evaluate_optimizer: an optimizer on a task's held-out test problems, as one record."""

from __future__ import annotations

import pytest

from l2l.evaluation import evaluate_optimizer, run_optimizer, summarize
from l2l.registry import build_optimizer
from l2l.tasks import build_task


def test_the_record_is_the_run_on_the_test_split_of_the_seed():
    task = build_task("quadratic")
    adam = build_optimizer("adam", lr=0.1)
    record = evaluate_optimizer(adam, task, instances=3, seed=7, steps=5, name="adam",
                                learned=False, tuned_lr=0.1, threshold=1.0)
    for split, same in (("test", True), ("valid", False)):
        run = run_optimizer(adam, task.sample(3, 7, split), 5)
        assert (summarize(run)["final_loss_mean"] == record.final_loss_mean) is same, split
    assert record.instances == 3 and len(record.mean_curve) == 6
    assert record.name == "adam" and record.tuned_lr == 0.1 and record.threshold == 1.0
    assert record.hyperparameters["lr"] == 0.1 and record.learned is False
    assert isinstance(record.hyperparameters["betas"], list)  # plain values for summary.json


def test_steps_are_reported_to_the_progress_callback():
    seen: list[int] = []
    evaluate_optimizer(build_optimizer("sgd", lr=0.01), build_task("quadratic"), instances=2,
                       seed=0, steps=4, name="sgd", learned=False, tuned_lr=None,
                       threshold=None, progress=seen.append)
    assert seen == [1, 2, 3, 4]


def test_negative_steps_are_refused():
    with pytest.raises(ValueError, match="steps must be >= 0"):
        evaluate_optimizer(build_optimizer("sgd"), build_task("quadratic"), instances=1,
                           seed=0, steps=-1, name="sgd", learned=False, tuned_lr=None,
                           threshold=None)
