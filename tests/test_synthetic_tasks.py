"""The synthetic task families (no data needed): deterministic from (seed, split, instance, step),
gradients equal to closed forms and finite differences, the structure their docstrings promise,
one-line errors for bad arguments, and every optimizer and mode runs on them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from l2l.evaluation import run_optimizer, tune_learning_rate
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.protocol import lr_grid
from l2l.registry import build_optimizer, optimizers
from l2l.tasks import (
    CharRNNFamily,
    ConditionedQuadraticFamily,
    GaussianLogRegFamily,
    RosenbrockFamily,
    TeacherStudentFamily,
    build_task,
    mlp,
)
from l2l.tasks.char_rnn import grammar_corpus
from l2l.tasks.synthetic_common import DatasetInstances

ROOT = Path(__file__).resolve().parents[1]

#: small variants of every synthetic family (fast, and covering their options)
CASES = {
    "conditioned_quadratic": ("conditioned_quadratic", {"dim": 6, "condition": 50.0}),
    "conditioned_quadratic_axis": ("conditioned_quadratic",
                                   {"dim": 5, "rotate": False, "init_std": 0.5}),
    "rosenbrock": ("rosenbrock", {"dim": 5}),
    "gaussian_logreg": ("gaussian_logreg", {"dim": 4, "num_examples": 64, "batch_size": 8,
                                            "l2": 0.01, "init_std": 0.1}),
    "teacher_student": ("teacher_student", {"input_dim": 3, "hidden_sizes": [4, 3],
                                            "output_dim": 2, "num_examples": 40,
                                            "batch_size": 6}),
    "teacher_student_relu_normal": ("teacher_student", {"input_dim": 3, "hidden_sizes": [5],
                                                        "activation": "relu", "init": "normal",
                                                        "init_std": 0.3, "num_examples": 30,
                                                        "batch_size": 4}),
    "char_rnn": ("char_rnn", {"hidden": 3, "seq_len": 4, "batch_size": 3, "corpus_chars": 2000,
                              "eval_windows": 8}),
    "augmented_teacher_student": ("augmented", {
        "task": {"family": "teacher_student", "kwargs": {"input_dim": 3, "hidden_sizes": [4],
                                                         "num_examples": 20, "batch_size": 5}},
        "param_scale_range": 1.0, "loss_scale_range": 0.5}),
}
PRESETS = ["conditioned_quadratic", "conditioned_quadratic_100d", "rosenbrock",
           "gaussian_logreg", "teacher_student", "char_rnn", "teacher_student_augmented"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These problems are tiny: extra torch threads only contend (10x slower on a busy 2-core
    machine); the setting is restored for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _family(case: str):
    name, kwargs = CASES[case]
    return build_task(name, **kwargs)


def _perturbed(inst, scale: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return inst.init_params + scale * torch.randn(inst.init_params.shape, generator=g,
                                                  dtype=inst.init_params.dtype)


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("case", list(CASES))
def test_instances_depend_on_seed_split_and_id_only(case):
    fam = _family(case)
    batch = fam.sample(4, seed=3, split="valid", dtype=torch.float64)
    params = _perturbed(batch)
    losses = {t: batch.loss(params, t) for t in (0, 5)}
    for i in range(4):
        one = fam.sample(1, seed=3, split="valid", offset=i, dtype=torch.float64)
        assert torch.equal(one.init_params[0], batch.init_params[i])
        for t in (0, 5):
            assert torch.allclose(one.loss(params[i : i + 1], t)[0], losses[t][i], rtol=1e-12)
    again = fam.sample(4, seed=3, split="valid", dtype=torch.float64)
    for t in (0, 5):
        assert torch.equal(again.loss(params, t), losses[t])
    # other seeds and splits are other problems (another start or another function), and so are
    # the instances of a batch (compared at one common point)
    common = params[:1].expand_as(params).contiguous()

    def problem(inst, row=slice(None)):
        return inst.init_params[row], inst.loss(common, 0)[row]

    for other in (fam.sample(4, seed=4, split="valid", dtype=torch.float64),
                  fam.sample(4, seed=3, split="test", dtype=torch.float64)):
        assert not all(torch.equal(a, b) for a, b in zip(problem(other), problem(batch)))
    assert not all(torch.equal(a, b) for a, b in zip(problem(batch, 0), problem(batch, 1)))


@pytest.mark.parametrize("case", list(CASES))
def test_repeat_tiles_the_same_problems_and_minibatches(case):
    fam = _family(case)
    batch = fam.sample(3, seed=1)
    twice = batch.repeat(2)
    assert twice.batch_size == 6 and torch.equal(twice.init_params[3:], batch.init_params)
    p = _perturbed(batch)
    for t in (0, 7):
        assert torch.equal(twice.loss(p.repeat(2, 1), t)[3:], batch.loss(p, t))


@pytest.mark.parametrize("case", list(CASES))
def test_float32_and_float64_hold_the_same_problem(case):
    fam = _family(case)
    a, b = fam.sample(3, seed=2, dtype=torch.float32), fam.sample(3, seed=2, dtype=torch.float64)
    assert torch.allclose(a.init_params.double(), b.init_params, atol=1e-6)
    p = _perturbed(b)
    assert torch.allclose(a.loss(p.float(), 3).double(), b.loss(p, 3), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0] in ("gaussian_logreg",
                                                                        "teacher_student")])
def test_minibatches_are_hashed_per_step_and_the_loss_reads_them(case):
    fam = _family(case)
    inst = fam.sample(3, seed=0, dtype=torch.float64)
    assert isinstance(inst, DatasetInstances)
    i0, i1 = inst.minibatch_indices(0), inst.minibatch_indices(1)
    assert i0.shape == (3, fam.batch_size) and not torch.equal(i0, i1)
    assert int(i0.min()) >= 0 and int(i0.max()) < fam.num_examples
    assert torch.equal(inst.minibatch_indices(1), i1)
    p = _perturbed(inst)
    for i in range(3):
        x, y = inst.x[i, i1[i]].unsqueeze(0), inst.y[i, i1[i]].unsqueeze(0)
        ref = inst.batch_loss(p[i : i + 1], x, y)
        assert torch.allclose(inst.loss(p, 1)[i], ref[0], rtol=1e-12)
    # evaluate: the full-dataset objective, which is not a minibatch's
    full = inst.evaluate(p)["loss"]
    assert torch.allclose(full, inst.batch_loss(p, inst.x, inst.y), rtol=1e-12)
    assert not torch.allclose(full, inst.loss(p, 1))
    with pytest.raises(ValueError, match="step"):
        inst.minibatch_indices(-1)


# ---------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_finite_differences(case):
    fam = _family(case)
    inst = fam.sample(2, seed=5, dtype=torch.float64)
    p = _perturbed(inst, 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: inst.loss(q, 2), (p,), eps=1e-6, atol=1e-5)
    losses, grads = inst.loss_and_grad(p.detach(), 2)
    assert grads.shape == p.shape and torch.allclose(losses, inst.loss(p, 2).detach())


def test_conditioned_quadratic_gradient_and_spectrum():
    fam = ConditionedQuadraticFamily(dim=8, condition=1e3)
    inst = fam.sample(3, seed=0, dtype=torch.float64)
    p = _perturbed(inst, 1.0)
    losses, grads = inst.loss_and_grad(p, 0)
    for i in range(3):
        r = p[i] - inst.target[i]
        assert torch.allclose(grads[i], inst.A[i] @ r, rtol=1e-10)
        assert torch.allclose(losses[i], 0.5 * r @ inst.A[i] @ r, rtol=1e-12)
        eig = torch.linalg.eigvalsh(inst.A[i])
        assert torch.allclose(eig, fam.eigenvalues().flip(0), rtol=1e-9)
        assert not torch.allclose(inst.A[i], torch.diag(torch.diagonal(inst.A[i])))  # rotated
    assert fam.eigenvalues()[0] == pytest.approx(1e3) and fam.eigenvalues()[-1] == 1.0
    assert torch.equal(inst.loss(inst.target, 9), inst.minimum())
    assert torch.equal(inst.init_params, torch.zeros(3, 8))  # init_std=0: from the origin
    axis = ConditionedQuadraticFamily(dim=8, rotate=False).sample(2, seed=0)
    assert torch.equal(axis.A[0], torch.diag(torch.diagonal(axis.A[0])))
    assert not torch.equal(axis.A[0], axis.A[1])  # the eigenvalues in each its own order
    assert fam.param_shapes == [("theta", (8,))]


def test_rosenbrock_closed_form_and_minimum():
    fam = RosenbrockFamily(dim=2)
    inst = fam.sample(2, seed=0, dtype=torch.float64)
    classic = torch.tensor([[-1.2, 1.0], [1.0, 1.0]], dtype=torch.float64)
    losses, grads = inst.loss_and_grad(classic, 0)
    assert losses[0].item() == pytest.approx(24.2) and losses[1].item() == 0.0
    x, y = -1.2, 1.0
    assert grads[0].tolist() == pytest.approx([-400 * x * (y - x * x) - 2 * (1 - x),
                                               200 * (y - x * x)])
    assert grads[1].abs().max() == 0.0
    big = RosenbrockFamily(dim=6, init_radius=0.5).sample(50, seed=0)
    assert big.init_params.abs().max() <= 0.5 and big.init_params.min() < -0.4
    assert torch.equal(big.minimum(), torch.zeros(50))
    assert RosenbrockFamily(curvature=1.0).sample(1, 0).loss(torch.ones(1, 10), 0).item() == 0


def test_gaussian_logreg_gradient_spectrum_and_labels():
    fam = GaussianLogRegFamily(dim=5, condition=100.0, num_examples=4000, batch_size=16,
                               l2=0.1)
    inst = fam.sample(2, seed=1, dtype=torch.float64)
    p = _perturbed(inst, 0.5)
    losses, grads = inst.loss_and_grad(p, 3)
    x, y = inst.minibatch(3)
    for i in range(2):
        w, b = p[i, :-1], p[i, -1]
        s = torch.sigmoid(x[i] @ w + b)
        want = torch.cat([x[i].T @ (s - y[i]) / 16 + 0.1 * w, ((s - y[i]).mean()).view(1)])
        assert torch.allclose(grads[i], want, rtol=1e-10)
        cov = torch.linalg.eigvalsh(inst.x[i].T @ inst.x[i] / 4000).flip(0)
        assert cov[0] / cov[-1] == pytest.approx(100.0, rel=0.2)
        assert 0.35 < inst.y[i].mean() < 0.65
    assert set(inst.y.unique().tolist()) == {0.0, 1.0}
    assert fam.param_shapes == [("w", (5,)), ("b", (1,))]
    assert inst.evaluate(inst.init_params)["accuracy"].shape == (2,)


def test_gaussian_logreg_learns_and_noise_controls_its_ceiling():
    accs = {}
    for noise in (0.0, 2.0):
        inst = GaussianLogRegFamily(dim=4, condition=4.0, noise=noise,
                                    num_examples=256).sample(2, seed=0)
        params = inst.init_params
        for step in range(100):
            _, grad = inst.loss_and_grad(params, step)
            params = params - 1.0 * grad
        accs[noise] = inst.evaluate(params)["accuracy"]
    assert (accs[0.0] > 0.9).all() and (accs[2.0] < 0.8).all()


def test_teacher_student_equals_nn_sequential():
    fam = TeacherStudentFamily(input_dim=3, hidden_sizes=(4, 3), activation="relu",
                               output_dim=2, num_examples=50, batch_size=7)
    inst = fam.sample(2, seed=0)
    p = _perturbed(inst)
    losses, grads = inst.loss_and_grad(p, 4)
    x, y = inst.minibatch(4)
    for i in range(2):
        layers = fam.param_shapes
        assert [s for _, s in layers] == [(3, 4), (4,), (4, 3), (3,), (3, 2), (2,)]
        lins = [nn.Linear(3, 4), nn.Linear(4, 3), nn.Linear(3, 2)]
        off = 0
        with torch.no_grad():
            for lin in lins:
                i_, o_ = lin.in_features, lin.out_features
                lin.weight.copy_(p[i, off : off + i_ * o_].view(i_, o_).T)
                off += i_ * o_
                lin.bias.copy_(p[i, off : off + o_])
                off += o_
        net = nn.Sequential(lins[0], nn.ReLU(), lins[1], nn.ReLU(), lins[2])
        ref = nn.functional.mse_loss(net(x[i]), y[i])
        ref.backward()
        want = torch.cat([t for lin in lins for t in (lin.weight.grad.T.reshape(-1),
                                                      lin.bias.grad)])
        # float32 tolerances: the batched and nn.Linear paths sum in different orders
        torch.testing.assert_close(losses[i], ref.detach())
        torch.testing.assert_close(grads[i], want)


def test_teacher_student_targets_init_and_learning():
    fam = TeacherStudentFamily(input_dim=8, hidden_sizes=(32,), num_examples=512, noise=0.1)
    inst = fam.sample(2, seed=0)
    # a standardised teacher plus noise: mean 0 and variance 1 + noise^2 up to sampling error
    assert inst.y.mean(dim=1).abs().max() < 0.02
    assert torch.allclose(inst.y.var(dim=1), torch.full((2, 1), 1.01), atol=0.05)
    (W0, b0), (_, b1) = mlp.unflatten(inst.init_params, fam.shapes)
    assert abs(W0.std().item() - (5 / 3) / 8**0.5) < 0.1 and (b0 == 0).all() and (b1 == 0).all()
    result = run_optimizer(build_optimizer("adam", lr=0.02), inst, 100)
    assert (result.metrics["loss"] < 0.3).all()  # from about 2: the student fits the teacher


def test_grammar_corpus_is_fixed_text():
    text = grammar_corpus(5000)
    assert len(text) == 5000 and text == grammar_corpus(5000)
    assert text.startswith("some tree that waits chases some red teacher that sees no teacher. ")
    assert set(text) <= set(" .abcdefghijklmnopqrstuvwxyz") and text != grammar_corpus(5000, 1)


def test_char_rnn_equals_nn_rnn_and_reads_its_split():
    fam = CharRNNFamily(hidden=6, seq_len=5, batch_size=3, corpus_chars=3000, eval_windows=4)
    assert fam.vocab_size == len(fam.vocab) and fam.num_params == sum(
        math.prod(s) for _, s in fam.param_shapes)
    inst = fam.sample(2, seed=0, split="valid", dtype=torch.float64)
    assert torch.equal(inst.tokens, fam.split_tokens("valid")) and inst.tokens.shape == (300,)
    text = grammar_corpus(3000)[2400:2700]
    assert "".join(fam.vocab[k] for k in inst.tokens.tolist()) == text
    p = _perturbed(inst, 0.3)
    losses, grads = inst.loss_and_grad(p, 2)
    win = inst.windows(inst.window_starts(2))
    assert win.shape == (2, 3, 6) and torch.equal(win[:, :, 1:-1], inst.windows(
        inst.window_starts(2) + 1)[:, :, :-2])
    for i in range(2):
        E, W, b, Vo, c = (t[0] for t in fam.unflatten(p[i : i + 1]))
        rnn = nn.RNN(fam.vocab_size, 6, batch_first=True, dtype=torch.float64)
        head = nn.Linear(6, fam.vocab_size, dtype=torch.float64)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(E.T)
            rnn.weight_hh_l0.copy_(W.T)
            rnn.bias_ih_l0.copy_(b)
            rnn.bias_hh_l0.zero_()
            head.weight.copy_(Vo.T)
            head.bias.copy_(c)
        x = nn.functional.one_hot(win[i, :, :-1], fam.vocab_size).double()
        out, _ = rnn(x)
        ref = nn.functional.cross_entropy(head(out).flatten(0, 1), win[i, :, 1:].flatten())
        ref.backward()
        want = torch.cat([rnn.weight_ih_l0.grad.T.reshape(-1), rnn.weight_hh_l0.grad.T.reshape(-1),
                          rnn.bias_ih_l0.grad, head.weight.grad.T.reshape(-1), head.bias.grad])
        assert abs(losses[i].item() - ref.item()) < 1e-10
        assert (grads[i] - want).abs().max() < 1e-10
    ev = inst.evaluate(p)
    assert set(ev) == {"loss", "accuracy"} and (ev["loss"] > 0).all()


def test_char_rnn_learns():
    fam = CharRNNFamily()
    inst = fam.sample(2, seed=0, split="test")
    start = inst.evaluate(inst.init_params)["loss"]
    result = run_optimizer(build_optimizer("adam", lr=0.03), inst, 60)
    assert (result.metrics["loss"] < 0.6 * start).all() and (result.metrics["accuracy"] > 0.4).all()


# ---------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("conditioned_quadratic", {"dim": 0}, "dim must be a positive int"),
        ("conditioned_quadratic", {"condition": 0.5}, r"condition must lie in \[1.0"),
        ("conditioned_quadratic", {"condition": float("inf")}, "condition"),
        ("conditioned_quadratic", {"rotate": "yes"}, "rotate must be true or false"),
        ("conditioned_quadratic", {"init_std": -1.0}, "init_std"),
        ("rosenbrock", {"dim": 1}, "dim must be an int >= 2"),
        ("rosenbrock", {"curvature": 0.0}, r"curvature must lie in \(0.0"),
        ("rosenbrock", {"init_radius": -1.0}, "init_radius"),
        ("gaussian_logreg", {"num_examples": 0}, "num_examples"),
        ("gaussian_logreg", {"batch_size": 2.5}, "batch_size"),
        ("gaussian_logreg", {"noise": -0.1}, "noise"),
        ("gaussian_logreg", {"l2": "big"}, "l2 must be a number"),
        ("gaussian_logreg", {"condition": 0.0}, "condition"),
        ("teacher_student", {"hidden_sizes": 32}, "hidden_sizes must be a list"),
        ("teacher_student", {"hidden_sizes": [32, 0]}, "every size in hidden_sizes"),
        ("teacher_student", {"teacher_sizes": ["a"]}, "teacher_sizes"),
        ("teacher_student", {"activation": "gelu"}, "unknown activation 'gelu'.*tanh"),
        ("teacher_student", {"teacher_activation": "swish"}, "unknown activation 'swish'"),
        ("teacher_student", {"init": "xavier"}, "unknown init 'xavier'.*fan_in"),
        ("teacher_student", {"num_examples": 1}, "num_examples must be >= 2"),
        ("teacher_student", {"output_dim": 0}, "output_dim"),
        ("teacher_student", {"input_dim": -3}, "input_dim"),
        ("teacher_student", {"noise": float("nan")}, "noise"),
        ("char_rnn", {"hidden": 0}, "hidden must be a positive int"),
        ("char_rnn", {"seq_len": 1.5}, "seq_len"),
        ("char_rnn", {"batch_size": -1}, "batch_size"),
        ("char_rnn", {"eval_windows": 0}, "eval_windows"),
        ("char_rnn", {"init_gain": -1.0}, "init_std|init_gain"),
        ("char_rnn", {"corpus_chars": 100, "seq_len": 16}, "corpus_chars=100 leaves the valid"),
    ],
)
def test_bad_arguments_raise_one_line_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        build_task(name, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["rosenbrock", "gaussian_logreg", "teacher_student"])
def test_sample_arguments_are_checked(case):
    fam = _family(case)
    with pytest.raises(ValueError, match="split"):
        fam.sample(2, seed=0, split="training")
    with pytest.raises(ValueError, match="batch_size"):
        fam.sample(0, seed=0)
    with pytest.raises(ValueError, match="unknown argument.*valid arguments"):
        build_task(CASES[case][0], width=3)


# ---------------------------------------------------------------------------------------------
# Every optimizer and mode


@pytest.mark.parametrize("case", list(CASES))
def test_every_optimizer_runs_and_tunes_on_every_family(case):
    fam = _family(case)
    inst = fam.sample(2, seed=0, split="test")
    for name in optimizers():
        result = run_optimizer(build_optimizer(name), inst, 3)
        assert result.losses.shape == (4, 2), name
        assert torch.isfinite(result.losses[0]).all(), name
    tuned = tune_learning_rate(build_optimizer("adam"), fam, grid=lr_grid(1e-3, 1.0, 1),
                               num_instances=2, steps=5, seed=0)
    assert any(math.isfinite(s) for s in tuned.scores)


@pytest.mark.parametrize(("case", "optimizer"), [
    ("conditioned_quadratic", "lstm"), ("rosenbrock", "adam_anchored"),
    ("gaussian_logreg", "rnnprop"), ("teacher_student", "adam_anchored"),
    ("teacher_student", "lstm"), ("char_rnn", "rnnprop")])
def test_meta_training_runs_on_every_family(case, optimizer):
    torch.manual_seed(0)
    config = MetaConfig(iterations=2, horizon=6, unroll=3, batch_size=2, meta_lr=1e-3,
                        val_every=2, val_instances=2, compile=False,
                        objective="log_relative")
    result = MetaTrainer(build_optimizer(optimizer), _family(case), config).train()
    assert result["skipped"] == 0
    assert all(math.isfinite(v) for v in result["history"]["val_loss"])


# ---------------------------------------------------------------------------------------------
# The presets, through train.py


@pytest.mark.slow
def test_train_py_evaluates_every_preset(tmp_path):
    """``train.py mode=evaluate`` on each preset, as one sweep (one process start for all)."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "mode=evaluate", "optimizer=adam",
         f"task={','.join(PRESETS)}", "eval.instances=2", "eval.steps=5", "threads=1",
         "logger=none", "progress=false", f"hydra.sweep.dir={sweep}",
         "hydra.sweep.subdir=${hydra.job.num}", "~hydra.callbacks.aggregate"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for num, preset in enumerate(PRESETS):
        summary = json.loads((sweep / str(num) / "summary.json").read_text())
        (entry,) = summary["optimizers"]
        assert summary["task"] == preset and entry["name"] == "adam"
        assert math.isfinite(entry["final_loss_mean"]), preset
