"""Horizon variation: ``meta.lengths=log_uniform`` draws each TBPTT task's horizon (the
population estimators draw one per particle episode: tests/test_meta_estimators.py)."""

from __future__ import annotations

from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.registry import build_optimizer
from l2l.tasks import build_task


def test_tbptt_draws_each_tasks_horizon_with_log_uniform_lengths():
    """Horizon variation for the TBPTT estimators: a task's unrolls cover its drawn horizon."""
    config = MetaConfig(iterations=6, horizon=40, unroll=5, val_every=6, val_instances=2,
                        lengths="log_uniform", min_length=5, max_length=40)
    trainer = MetaTrainer(build_optimizer("learnable_momentum"), build_task("quadratic"), config)
    horizons = [trainer.task_horizon(i) for i in range(40)]
    assert min(horizons) >= 5 and max(horizons) <= 40 and len(set(horizons)) > 5
    assert horizons == [trainer.task_horizon(i) for i in range(40)]  # a function of (seed, i)
    for iteration in range(3):
        trainer.iteration = iteration
        losses = trainer.train_task(trainer.sample_task(iteration))
        assert len(losses) == -(-horizons[iteration] // 5)
    constant = MetaTrainer(build_optimizer("learnable_momentum"), build_task("quadratic"),
                           MetaConfig(iterations=2, horizon=40, unroll=5, val_every=2))
    assert {constant.task_horizon(i) for i in range(10)} == {40}
