"""``benchmarks/bench_estimators.py`` measures what it claims about memory.

* the bytes autograd saves per particle are flat in the truncation for PES and ES and grow
  with it for autograd and the surrogate;
* the peak RSS of one estimate in a fresh process (the measure a user's job is killed by)
  shows the same on the MNIST MLP: autograd's grows by megabytes from 2 to 8 steps, PES's does
  not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_estimators

    return bench_estimators


def _saved(bench, name: str, K: int) -> int:
    from l2l.estimators import estimator_classes
    from l2l.objectives import build_objective
    from l2l.registry import build_optimizer

    task = bench.build_preset("quadratic", None)
    opt = build_optimizer("learnable_adam")
    if name in bench.POPULATION:
        est = estimator_classes()[name](opt.update, build_objective("sum"), optimizer=opt)
        pop = bench.population(task, opt, 4, 4 * K, offsets=False)
        return bench.saved_bytes(lambda: est.estimate_population(pop, K))
    _, run = bench.tbptt(name, task, opt, 4)
    return bench.saved_bytes(lambda: run(K))


def test_saved_bytes_are_flat_for_the_forward_only_estimators_and_grow_for_backprop(bench):
    for name in ("pes", "es"):
        assert _saved(bench, name, 2) == _saved(bench, name, 16) > 0
    for name in ("surrogate", "autograd"):
        assert _saved(bench, name, 16) > 4 * _saved(bench, name, 2)


def test_the_peak_rss_of_an_estimate_grows_with_the_truncation_for_autograd_only(bench,
                                                                                 mnist_dir):
    def rss(name: str, K: int) -> int:
        spec = {"preset": "mnist", "optimizer": "learnable_adam", "estimator": name,
                "particles": 4, "steps": K, "data_dir": str(mnist_dir)}
        peak = bench.peak_rss_bytes(bench.__file__, spec)
        if peak is None:
            pytest.skip("the kernel does not let a process reset its RSS high-water mark")
        return peak

    autograd = rss("autograd", 8) - rss("autograd", 2)
    pes = rss("pes", 8) - rss("pes", 2)
    assert autograd > 8 * 2**20  # ~22 MiB measured for 4 particles
    assert abs(pes) < 0.1 * autograd
