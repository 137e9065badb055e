"""Meta-training: it learns, it resumes exactly, it survives bad numbers, it rejects bad files."""

from __future__ import annotations

import math

import pytest
import torch

from l2l import checkpoint
from l2l.evaluation import run_optimizer, tune_learning_rate
from l2l.learned.lstm import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer, MetaTrainingDiverged
from l2l.protocol import lr_grid
from l2l.registry import build_optimizer
from l2l.tasks import build_task
from l2l.tasks.base import Instances, TaskFamily


def _quadratic_lstm(seed: int = 0) -> LSTMOptimizer:
    torch.manual_seed(seed)
    return LSTMOptimizer(preprocessing="none", output_scale=1.0)


@pytest.mark.slow
def test_meta_training_beats_untrained_and_tuned_sgd():
    """Paper's quadratic setting, shortened: a minute of meta-training must clearly pay off."""
    task = build_task("quadratic")
    config = MetaConfig(iterations=60, horizon=50, unroll=10, batch_size=16, meta_lr=0.01,
                        val_every=60, val_instances=64)
    trainer = MetaTrainer(_quadratic_lstm(), task, config)
    untrained = trainer.validate()
    result = trainer.train()
    trained = result["history"]["val_loss"][-1]
    assert result["skipped"] == 0
    sgd = tune_learning_rate(build_optimizer("sgd"), task, grid=lr_grid(), num_instances=64,
                             steps=50, seed=0)
    best_sgd = min(sgd.scores)
    assert math.isfinite(best_sgd)
    print(f'untrained {untrained:.4g}, trained {trained:.4g}, best SGD {best_sgd:.4g}')
    assert trained < untrained / 10
    assert trained < 0.8 * best_sgd, (trained, best_sgd)


def _config(**overrides) -> MetaConfig:
    base = dict(iterations=6, horizon=20, unroll=10, batch_size=4, meta_lr=0.01, val_every=2,
                val_instances=8, checkpoint_every=1)
    return MetaConfig(**{**base, **overrides})


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_weights(tmp_path):
    task = build_task("quadratic")
    straight = MetaTrainer(_quadratic_lstm(), task, _config(), run_dir=tmp_path / "a")
    straight.train()

    first = MetaTrainer(_quadratic_lstm(), task, _config(), run_dir=tmp_path / "b")
    first.train(stop_after=3)  # "killed" after iteration 3
    del first
    # The same command again: a fresh process would build a fresh (differently seeded) LSTM.
    resumed = MetaTrainer(_quadratic_lstm(seed=99), task, _config(), run_dir=tmp_path / "b")
    assert resumed.iteration == 3
    resumed.train()
    for (name, a), b in zip(straight.optimizer.state_dict().items(),
                            resumed.optimizer.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert straight.history == resumed.history
    best = checkpoint.load_learned_optimizer(tmp_path / "b" / "checkpoints" / "best.pt")
    assert isinstance(best, LSTMOptimizer)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    task = build_task("quadratic")
    first = MetaTrainer(_quadratic_lstm(), task, _config(), run_dir=tmp_path)
    first.train(stop_after=3)
    previous = tmp_path / "checkpoints" / "previous.pt"
    assert previous.exists()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"this is not a checkpoint")
    with pytest.warns(RuntimeWarning, match="corrupt.*trying the previous"):
        resumed = MetaTrainer(_quadratic_lstm(seed=5), task, _config(), run_dir=tmp_path)
    assert resumed.resumed_from == previous and resumed.iteration == 2


def test_truncated_checkpoint_is_rejected(tmp_path):
    trainer = MetaTrainer(_quadratic_lstm(), build_task("quadratic"), _config(), run_dir=tmp_path)
    trainer.train(stop_after=1)
    path = tmp_path / "checkpoints" / "latest.pt"
    path.write_bytes(path.read_bytes()[: 200])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(path)


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    task = build_task("quadratic")
    MetaTrainer(_quadratic_lstm(), task, _config(), run_dir=tmp_path).train(stop_after=1)
    other = LSTMOptimizer(hidden_size=7, preprocessing="none")
    with pytest.raises(checkpoint.CheckpointError, match="different lstm config.*hidden_size"):
        MetaTrainer(other, task, _config(), run_dir=tmp_path)


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "x": Evil()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused") as error:
        checkpoint.load(path)
    assert "weights_only=False" not in str(error.value)  # torch's unsafe advice is never shown


def test_not_a_checkpoint_of_ours(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="not an l2l checkpoint"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.pt")


class _PoisonedInstances(Instances):
    """A quadratic whose loss turns NaN from step ``bad_from`` on."""

    def __init__(self, inner: Instances, bad_from: int) -> None:
        self.inner, self.bad_from = inner, bad_from
        self.init_params = inner.init_params

    def loss(self, params, step):
        loss = self.inner.loss(params, step)
        return loss * math.nan if step >= self.bad_from else loss


class _Poisoned(TaskFamily):
    def __init__(self, bad_from: int) -> None:
        self.inner, self.bad_from = build_task("quadratic"), bad_from

    @property
    def num_params(self):
        return self.inner.num_params

    def sample(self, batch_size, seed, split="train", **kwargs):
        inner = self.inner.sample(batch_size, seed, split, **kwargs)
        return _PoisonedInstances(inner, self.bad_from if split == "train" else 10**9)


def test_nan_losses_skip_the_meta_step_and_then_stop_the_run(tmp_path):
    net = _quadratic_lstm()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = MetaTrainer(net, _Poisoned(bad_from=3), _config(max_consecutive_skips=3),
                          run_dir=tmp_path)
    with pytest.raises(MetaTrainingDiverged, match=r"3 meta-steps in a row.*meta_lr"):
        trainer.train()
    assert trainer.skipped == 3
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by a non-finite meta-step"
    assert (tmp_path / "checkpoints" / "latest.pt").exists()


def test_evaluation_reports_divergence_without_crashing():
    task = build_task("quadratic")
    instances = task.sample(6, 0, "test")
    result = run_optimizer(build_optimizer("sgd", lr=1.0), instances, 30)
    assert bool(result.diverged.all())
    assert torch.isfinite(result.losses[0]).all()  # the curve is kept up to divergence
    assert torch.isnan(result.final_loss).all()
    calm = run_optimizer(build_optimizer("sgd", lr=1e-3), instances, 30)
    assert not bool(calm.diverged.any())


def test_evaluation_steps_in_place_freezing_only_the_diverged_instances():
    """run_optimizer uses the frozen in-place step_; it must equal the pure update loop, and an
    instance that diverges keeps its last parameters while the others carry on."""
    task = build_task("quadratic")
    instances = task.sample(4, 0, "test")
    start = instances.init_params.clone()
    lr = torch.tensor([[1e-3], [1e-2], [1.0], [3e-2]], dtype=start.dtype)  # instance 2 diverges
    opt = build_optimizer("momentum", lr=lr)
    result = run_optimizer(opt, instances, 40, with_metrics=False)
    assert result.diverged.tolist() == [False, False, True, False]
    assert torch.equal(instances.init_params, start)  # the instances' start is not stepped
    params, state = start.clone(), opt.init(start)
    with torch.no_grad():
        for t in range(40):
            loss, grads = instances.loss_and_grad(params, t)
            update, state = opt.update(grads, state, params)
            params = params + update
    keep = torch.tensor([True, True, False, True])
    assert torch.allclose(result.final_params[keep], params[keep], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(result.final_params[2]).all()  # frozen at its last finite point


def test_meta_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="meta.unroll"):
        MetaConfig(unroll=0)
    with pytest.raises(ValueError, match="meta.meta_lr"):
        MetaConfig(meta_lr=-1.0)
    with pytest.raises(ValueError, match="meta.objective"):
        MetaConfig(objective="magic")
    with pytest.raises(ValueError, match="meta.unroll=40 is longer than meta.horizon=20"):
        MetaConfig(unroll=40, horizon=20)


def test_baseline_cannot_be_meta_trained():
    with pytest.raises(ValueError, match="no learnable parameters"):
        MetaTrainer(build_optimizer("adam"), build_task("quadratic"), _config())


def test_unknown_estimator_lists_the_valid_ones():
    with pytest.raises(ValueError,
                       match="unknown meta.estimator 'magic'.*tbptt.*autograd.*pes.*surrogate"):
        MetaTrainer(_quadratic_lstm(), build_task("quadratic"), _config(estimator="magic"))
    with pytest.raises(ValueError, match="first-order only"):
        MetaTrainer(_quadratic_lstm(), build_task("quadratic"),
                    _config(estimator="surrogate", second_order=True))


def test_callbacks_see_the_train_begin_and_its_end_also_when_it_is_interrupted():
    """``on_train_begin`` before the first task, ``on_train_end`` after the last, with the
    result, or with ``None`` when a callback's stop request interrupts the run (the progress
    bar closes and the signal handlers are restored either way)."""
    from l2l.meta_training import Callback, MetaTrainingInterrupted

    class Record(Callback):
        def __init__(self, stop_at: int | None = None) -> None:
            self.events: list = []
            self.stop_at = stop_at

        def on_train_begin(self, trainer):
            self.events.append(("begin", trainer.iteration))

        def on_task_end(self, trainer, iteration, meta_loss):
            self.events.append(("task", iteration))

        def on_train_end(self, trainer, result):
            self.events.append(("end", None if result is None else result["iterations"]))

        def stop_requested(self, trainer):
            return "asked" if trainer.iteration == self.stop_at else None

    config = MetaConfig(iterations=3, horizon=4, unroll=2, batch_size=2, val_every=3,
                        val_instances=2)
    done = Record()
    MetaTrainer(_quadratic_lstm(), build_task("quadratic"), config, callbacks=[done]).train()
    assert done.events == [("begin", 0), ("task", 1), ("task", 2), ("task", 3), ("end", 3)]
    stopped = Record(stop_at=1)
    with pytest.raises(MetaTrainingInterrupted, match="asked"):
        MetaTrainer(_quadratic_lstm(), build_task("quadratic"), config,
                    callbacks=[stopped]).train()
    assert stopped.events == [("begin", 0), ("task", 1), ("end", None)]


def test_each_meta_iteration_records_its_wall_time_without_validation(monkeypatch):
    """``trainer.seconds`` (logged as ``meta/seconds``) is the last meta-iteration's own time:
    the validations (here each moving the clock on by an hour) are not in it."""
    import time

    from l2l import meta_training
    from l2l.meta_training import Callback

    class Record(Callback):
        def __init__(self) -> None:
            self.spent: list[float] = []

        def on_task_end(self, trainer, iteration, meta_loss):
            self.spent.append(trainer.seconds)

    record = Record()
    config = MetaConfig(iterations=3, horizon=4, unroll=2, batch_size=2, val_every=1,
                        val_instances=2)
    trainer = MetaTrainer(_quadratic_lstm(), build_task("quadratic"), config,
                          callbacks=[record])
    before = trainer.seconds
    assert math.isnan(before)  # nothing run yet
    skipped = [0.0]  # the clock's jumps: an hour per validation
    real = time.perf_counter
    monkeypatch.setattr(meta_training.time, "perf_counter", lambda: real() + skipped[0])
    score = trainer.validator.score
    trainer.validator.score = lambda opt: (skipped.__setitem__(0, skipped[0] + 3600),
                                           score(opt))[1]
    trainer.train()
    assert skipped[0] == 4 * 3600  # the untrained optimizer's, then one per meta-iteration
    assert len(record.spent) == 3
    assert all(0 < s < 3600 for s in record.spent), record.spent  # no fake hour in it
