from __future__ import annotations

import pytest

import baselines
from l2l.learned.base import LearnedOptimizer
from l2l.learned.lstm import LSTMOptimizer
from l2l.registry import (
    baseline_names,
    build_optimizer,
    is_learned,
    learned_names,
    optimizer_class,
    optimizers,
)


def test_every_name_builds_its_class():
    assert baseline_names() == ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta",
                                "adam", "nadam")
    assert {"lstm", "rnnprop", "adam_anchored", "learnable_adam",
            "learnable_momentum"} <= set(learned_names())
    for name in optimizers():
        opt = build_optimizer(name)
        assert opt.name == name
        assert is_learned(name) == isinstance(opt, LearnedOptimizer)
    assert isinstance(build_optimizer("lstm", hidden_size=7), LSTMOptimizer)


def test_learned_and_hand_designed_are_listed_apart():
    assert not set(baseline_names()) & set(learned_names())
    assert not is_learned("adam") and is_learned("rnnprop")
    with pytest.raises(ValueError, match="unknown optimizer"):
        is_learned("adamw")
    assert optimizer_class("LSTM") is LSTMOptimizer


def test_impossible_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="hidden_size"):
        build_optimizer("lstm", hidden_size=2.5e9)
    with pytest.raises(ValueError, match="hidden_size"):
        build_optimizer("rnnprop", hidden_size=0)


def test_hyperparameters_from_a_config():
    adam = build_optimizer("Adam", lr=0.01, betas=[0.8, 0.9])
    assert adam == baselines.Adam(lr=0.01, betas=(0.8, 0.9))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw'.*sgd, momentum, nag"):
        build_optimizer("adamw")


def test_unknown_hyperparameter_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown hyperparameter.*'momentum'.*valid ones are lr"):
        build_optimizer("adam", momentum=0.9)


def test_impossible_value_is_rejected_by_name():
    with pytest.raises(ValueError, match="lr"):
        build_optimizer("sgd", lr=-0.1)


@pytest.mark.slow
def test_baselines_import_before_l2l():
    """The README's order (``import baselines`` first) must not hit a circular import: the
    learned optimizers import ``baselines``, so ``import l2l`` must stay light."""
    import subprocess
    import sys

    code = ("import baselines; from l2l.tasks import build_task; import l2l; "
            "assert l2l.build_optimizer('adam_anchored').name == 'adam_anchored'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
