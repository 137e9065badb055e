from __future__ import annotations

import pytest

import baselines
from l2l.lstm_optimizer import LSTMOptimizer
from l2l.registry import BASELINES, OPTIMIZERS, build_optimizer


def test_every_name_builds_its_class():
    assert len(BASELINES) == 8
    for name in OPTIMIZERS:
        opt = build_optimizer(name)
        assert opt.name == name
    assert isinstance(build_optimizer("lstm", hidden_size=7), LSTMOptimizer)


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
