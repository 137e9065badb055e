"""Small-image MNIST MLPs (``resolution``) and the MNIST autoencoder: equal to nn.Module
references on pooled images, deterministic, and sharing MNIST's splits and minibatches."""

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

from l2l.evaluation import run_optimizer
from l2l.registry import build_optimizer
from l2l.tasks import MNISTAutoencoderFamily, MNISTMLPFamily, build_task, mlp
from l2l.tasks.mnist_common import pool_images

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["mnist_8x8", "mnist_14x14", "mnist_8x8_relu_2layer", "mnist_14x14_tanh_wide",
           "mnist_autoencoder"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small problems: extra torch threads only contend on a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _linears(sizes, row):
    """nn.Linear layers holding one instance's MLP weights (nn.Linear.weight = W^T)."""
    lins, off = [], 0
    for i, o in zip(sizes[:-1], sizes[1:], strict=True):
        lin = nn.Linear(i, o)
        with torch.no_grad():
            lin.weight.copy_(row[off : off + i * o].view(i, o).T)
            off += i * o
            lin.bias.copy_(row[off : off + o])
            off += o
        lins.append(lin)
    return lins


def _grad(lins):
    return torch.cat([t for lin in lins for t in (lin.weight.grad.T.reshape(-1), lin.bias.grad)])


def test_pooling_is_the_mean_of_each_block(mnist):
    x = mnist.test_images[:5]
    square = x.view(5, 28, 28)
    p14 = pool_images(x, 14).view(5, 14, 14)
    assert torch.allclose(p14[:, 3, 4], square[:, 6:8, 8:10].mean(dim=(1, 2)), atol=1e-6)
    p7 = pool_images(x, 7).view(5, 7, 7)
    assert torch.allclose(p7[:, 1, 2], square[:, 4:8, 8:12].mean(dim=(1, 2)), atol=1e-6)
    p8 = pool_images(x, 8)
    assert p8.shape == (5, 64) and float(p8.min()) >= 0 and float(p8.max()) <= 1
    assert pool_images(x, 28) is x


@pytest.mark.parametrize(("resolution", "hidden", "activation"),
                         [(8, (32,), "sigmoid"), (14, (6, 5), "relu")])
def test_small_image_mlp_equals_nn_sequential(mnist_dir, mnist, resolution, hidden, activation):
    fam = MNISTMLPFamily(hidden_sizes=hidden, activation=activation, resolution=resolution,
                         batch_size=16, data_dir=mnist_dir, download=False)
    sizes = (resolution**2, *hidden, 10)
    assert fam.num_params == sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    assert [s for _, s in fam.param_shapes][:2] == [(resolution**2, hidden[0]), (hidden[0],)]
    inst = fam.sample(2, seed=1, split="valid")
    images = pool_images(mnist.train_images[50000:], resolution)
    labels = mnist.train_labels[50000:]
    assert torch.equal(inst.images, images)
    params = inst.init_params + 0.1 * torch.randn(inst.init_params.shape,
                                                  generator=torch.Generator().manual_seed(0))
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
    losses, grads = inst.loss_and_grad(params, 3)
    idx = inst.minibatch_indices(3)
    for i in range(2):
        lins = _linears(sizes, params[i])
        mods = [m for lin in lins[:-1] for m in (lin, act())] + [lins[-1]]
        ref = nn.functional.cross_entropy(nn.Sequential(*mods)(images[idx[i]]), labels[idx[i]])
        ref.backward()
        assert abs(losses[i].item() - ref.item()) < 1e-5
        assert (grads[i] - _grad(lins)).abs().max() < 1e-5
    out = inst.evaluate(params)
    assert out["accuracy"].shape == (2,) and (out["loss"] > 0).all()


@pytest.mark.parametrize("resolution", [0, 29, 2.5, True])
def test_bad_resolution(resolution):
    with pytest.raises(ValueError, match=r"resolution must be an int in \[1, 28\]"):
        MNISTMLPFamily(resolution=resolution)
    with pytest.raises(ValueError, match="resolution"):
        MNISTAutoencoderFamily(resolution=resolution)


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_autoencoder_equals_nn_sequential(mnist_dir, mnist, loss):
    fam = MNISTAutoencoderFamily(hidden_sizes=(8,), loss=loss, resolution=7, batch_size=12,
                                 data_dir=mnist_dir, download=False)
    assert fam.num_params == 49 * 8 + 8 + 8 * 49 + 49
    assert fam.param_shapes == [("W0", (49, 8)), ("b0", (8,)), ("W1", (8, 49)), ("b1", (49,))]
    inst = fam.sample(2, seed=0, split="test")
    images = pool_images(mnist.test_images, 7)
    params = inst.init_params + 0.1 * torch.randn(inst.init_params.shape,
                                                  generator=torch.Generator().manual_seed(1))
    losses, grads = inst.loss_and_grad(params, 5)
    idx = inst.minibatch_indices(5)
    for i in range(2):
        lins = _linears((49, 8, 49), params[i])
        x = images[idx[i]]
        out = nn.Sequential(lins[0], nn.ReLU(), lins[1])(x)
        ref = (nn.functional.binary_cross_entropy_with_logits(out, x) if loss == "bce"
               else nn.functional.mse_loss(torch.sigmoid(out), x))
        ref.backward()
        assert abs(losses[i].item() - ref.item()) < 1e-6
        assert (grads[i] - _grad(lins)).abs().max() < 1e-6
    ev = inst.evaluate(params)
    with torch.no_grad():
        full = nn.Sequential(*_linears((49, 8, 49), params[0])[:1], nn.ReLU(),
                             *_linears((49, 8, 49), params[0])[1:])(images)
    want = (nn.functional.binary_cross_entropy_with_logits(full, images) if loss == "bce"
            else nn.functional.mse_loss(torch.sigmoid(full), images))
    assert abs(ev["loss"][0].item() - want.item()) < 1e-5
    assert abs(ev["mse"][0].item() - nn.functional.mse_loss(torch.sigmoid(full), images)) < 1e-5


def test_autoencoder_is_deterministic_and_learns(mnist_dir):
    fam = MNISTAutoencoderFamily(data_dir=mnist_dir, download=False, batch_size=32)
    batch = fam.sample(3, seed=4, split="train")
    one = fam.sample(1, seed=4, split="train", offset=2)
    assert torch.equal(one.init_params[0], batch.init_params[2])
    assert torch.equal(one.minibatch_indices(7)[0], batch.minibatch_indices(7)[2])
    assert torch.allclose(one.loss(one.init_params, 7)[0],
                          batch.loss(batch.init_params, 7)[2], atol=1e-6)
    twice = batch.repeat(2)
    assert torch.equal(twice.loss(twice.init_params, 1)[3:], batch.loss(batch.init_params, 1))
    assert not torch.equal(fam.sample(3, seed=5).init_params, batch.init_params)
    (W0, b0), _ = mlp.unflatten(batch.init_params, fam.shapes)
    assert abs(W0.std().item() - (2 / 196) ** 0.5) < 0.005 and (b0 == 0).all()
    result = run_optimizer(build_optimizer("adam", lr=0.02), batch, 30)
    assert (result.losses[-1] < 0.8 * result.losses[0]).all()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"hidden_sizes": []}, "hidden_sizes must hold at least one"),
    ({"hidden_sizes": 32}, "hidden_sizes must be a list"),
    ({"activation": "gelu"}, "unknown activation 'gelu'"),
    ({"loss": "l1"}, "unknown loss 'l1'.*bce, mse"),
    ({"init": "xavier"}, "unknown init 'xavier'"),
    ({"batch_size": 0}, "batch_size"),
    ({"init_std": -1.0}, "init_std"),
])
def test_autoencoder_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_task("mnist_autoencoder", **kwargs)


@pytest.mark.slow
def test_train_py_evaluates_every_small_mnist_preset(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "mode=evaluate", "optimizer=adam",
         f"task={','.join(PRESETS)}", "eval.instances=2", "eval.steps=5", "threads=1",
         "logger=none", "progress=false", f"data_dir={mnist_dir}", f"hydra.sweep.dir={sweep}",
         "hydra.sweep.subdir=${hydra.job.num}", "~hydra.callbacks.aggregate"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for num, preset in enumerate(PRESETS):
        summary = json.loads((sweep / str(num) / "summary.json").read_text())
        (entry,) = summary["optimizers"]
        assert summary["task"] == preset and math.isfinite(entry["final_loss_mean"]), preset
