from __future__ import annotations

import pytest
import torch
from torch import nn

from l2l.tasks import MNISTMLPFamily, build_task
from l2l.tasks.mnist_mlp import hash_indices, mix32

ACT_MODULES = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}

VARIANTS = {
    "base": {},
    "40_units": {"hidden_sizes": (40,)},
    "2_layers": {"hidden_sizes": (20, 20)},
    "relu": {"activation": "relu"},
    "tanh": {"activation": "tanh"},
}


@pytest.fixture
def make(mnist_dir, mnist):
    def _make(**kwargs) -> MNISTMLPFamily:
        return MNISTMLPFamily(data_dir=mnist_dir, download=False, **kwargs)

    return _make


def reference_net(fam: MNISTMLPFamily, params_row: torch.Tensor) -> nn.Sequential:
    """A plain nn.Sequential holding one instance's weights (nn.Linear weight = W^T)."""
    layers = fam.unflatten(params_row.unsqueeze(0))
    mods: list[nn.Module] = []
    for k, (W, b) in enumerate(layers):
        lin = nn.Linear(W.shape[1], W.shape[2])
        with torch.no_grad():
            lin.weight.copy_(W[0].T)
            lin.bias.copy_(b[0])
        mods.append(lin)
        if k < len(layers) - 1:
            mods.append(ACT_MODULES[fam.activation]())
    return nn.Sequential(*mods)


def reference_flat_grad(net: nn.Sequential) -> torch.Tensor:
    parts = []
    for m in net:
        if isinstance(m, nn.Linear):
            parts += [m.weight.grad.T.reshape(-1), m.bias.grad]
    return torch.cat(parts)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_loss_and_grad_equal_nn_sequential(make, mnist, variant):
    fam = make(**VARIANTS[variant])
    B = 3
    inst = fam.sample(B, seed=11, split="train")
    g = torch.Generator().manual_seed(1)
    # away from the tiny init so the nonlinearity matters
    params = inst.init_params + 0.1 * torch.randn(inst.init_params.shape, generator=g)
    for step in (0, 13):
        losses, grads = inst.loss_and_grad(params, step)
        idx = inst.minibatch_indices(step)
        assert idx.shape == (B, 128)
        for i in range(B):
            x = mnist.train_images[idx[i]]  # train split = first 50,000 training images
            y = mnist.train_labels[idx[i]]
            net = reference_net(fam, params[i])
            ref = nn.functional.cross_entropy(net(x), y)
            ref.backward()
            assert abs(losses[i].item() - ref.item()) <= 1e-6
            assert (grads[i] - reference_flat_grad(net)).abs().max().item() <= 1e-6


def test_evaluate_matches_reference_on_whole_split(make, mnist):
    fam = make(hidden_sizes=(20, 20))
    inst = fam.sample(2, seed=0, split="test")
    params = inst.init_params + 0.3 * torch.randn(
        inst.init_params.shape, generator=torch.Generator().manual_seed(0)
    )
    out = inst.evaluate(params)
    assert set(out) == {"loss", "accuracy"} and out["loss"].shape == (2,)
    for i in range(2):
        net = reference_net(fam, params[i])
        with torch.no_grad():
            logits = net(mnist.test_images)
        ref_loss = nn.functional.cross_entropy(logits, mnist.test_labels)
        ref_acc = (logits.argmax(1) == mnist.test_labels).float().mean()
        assert abs(out["loss"][i].item() - ref_loss.item()) < 1e-5
        assert abs(out["accuracy"][i].item() - ref_acc.item()) < 1e-6
        assert 0.0 <= out["accuracy"][i].item() <= 1.0


def test_layout_and_sizes(make):
    assert make().num_params == 784 * 20 + 20 + 20 * 10 + 10 == 15910
    fam = make(hidden_sizes=(20, 20))
    assert fam.num_params == 784 * 20 + 20 + 20 * 20 + 20 + 20 * 10 + 10
    p = torch.arange(2 * fam.num_params, dtype=torch.float32).view(2, -1)
    layers = fam.unflatten(p)
    assert [tuple(W.shape[1:]) for W, _ in layers] == [(784, 20), (20, 20), (20, 10)]
    # weight (row-major, in x out) first, then bias, layer by layer
    assert layers[0][0][1, 0, 1].item() == fam.num_params + 1
    assert layers[0][1][0, 0].item() == 784 * 20
    assert layers[1][0][0, 0, 0].item() == 784 * 20 + 20
    assert torch.equal(fam.flatten(layers), p)
    with pytest.raises(ValueError, match="shape"):
        fam.unflatten(p[:, :-1])


def test_default_init(make):
    inst = make().sample(8, seed=0)
    p = inst.init_params
    assert p.shape == (8, 15910) and p.dtype == torch.float32
    assert abs(p.std().item() - 0.01) < 5e-4 and abs(p.mean().item()) < 5e-4
    assert (p[:, -10:] != 0).all()  # biases are random too (official code)


def test_instance_independence(make):
    fam = make()
    batch = fam.sample(4, seed=5, split="valid")
    for i in range(4):
        one = fam.sample(1, seed=5, split="valid", offset=i)
        assert torch.equal(one.init_params[0], batch.init_params[i])
        for step in (0, 1, 7, 99):
            assert torch.equal(one.minibatch_indices(step)[0], batch.minibatch_indices(step)[i])
            assert torch.allclose(
                one.loss(one.init_params, step)[0],
                batch.loss(batch.init_params, step)[i],
                rtol=0,
                atol=1e-6,
            )


def test_same_seed_same_instances_other_seed_or_split_differ(make):
    fam = make()
    a, b = fam.sample(3, seed=1), fam.sample(3, seed=1)
    assert torch.equal(a.init_params, b.init_params)
    for step in (0, 3):
        assert torch.equal(a.minibatch_indices(step), b.minibatch_indices(step))
        assert torch.equal(a.loss(a.init_params, step), b.loss(b.init_params, step))
    for other in (fam.sample(3, seed=2), fam.sample(3, seed=1, split="valid")):
        assert not torch.equal(a.init_params, other.init_params)
        assert not torch.equal(a.minibatch_indices(0), other.minibatch_indices(0))
    # instances of one batch differ; steps give new minibatches
    assert not torch.equal(a.minibatch_indices(0)[0], a.minibatch_indices(0)[1])
    assert not torch.equal(a.minibatch_indices(0), a.minibatch_indices(1))
    # minibatches do not depend on which optimizer ran before: indices ignore params entirely
    a.loss(a.init_params + 1.0, 0)
    assert torch.equal(a.minibatch_indices(3), b.minibatch_indices(3))


def test_splits_are_disjoint(make, mnist):
    fam = make()
    tr = fam.sample(1, seed=0, split="train")
    va = fam.sample(1, seed=0, split="valid")
    te = fam.sample(1, seed=0, split="test")
    assert torch.equal(tr.images, mnist.train_images[:50000])
    assert torch.equal(va.images, mnist.train_images[50000:])
    assert torch.equal(te.images, mnist.test_images)
    assert torch.equal(va.labels, mnist.train_labels[50000:])
    assert not torch.equal(te.images, mnist.train_images[50000:])
    # the train and valid views occupy disjoint memory of the one training tensor
    row = 784 * tr.images.element_size()
    tr_end = tr.images.data_ptr() + tr.images.shape[0] * row
    assert tr_end <= va.images.data_ptr()
    # a sampled minibatch of the valid split holds valid images
    x, y = va.minibatch(4)
    idx = va.minibatch_indices(4)
    assert torch.equal(x[0], mnist.train_images[50000 + idx[0]])
    assert torch.equal(y[0], mnist.train_labels[50000 + idx[0]])


def test_minibatch_indices_in_range_and_uniform():
    ids = torch.arange(3, dtype=torch.int64).view(3, 1)
    steps = torch.arange(700, dtype=torch.int64)
    # valid-sized split: 3 x 700 x 128 = 268,800 draws must reach all 10,000 examples
    idx = hash_indices(12345, ids, steps, 128, 10_000)
    assert idx.shape == (3, 700, 128)
    assert idx.min() >= 0 and idx.max() < 10_000
    counts = torch.bincount(idx.flatten(), minlength=10_000)
    assert (counts > 0).all()
    # train-sized split: 50 bins of 1,000 indices each, chi-square with 49 dof (mean 49, sd 10)
    idx = hash_indices(999, ids, steps, 128, 50_000)
    assert idx.min() >= 0 and idx.max() < 50_000
    binned = torch.bincount(idx.flatten() // 1000, minlength=50).double()
    expected = idx.numel() / 50
    chi2 = ((binned - expected) ** 2 / expected).sum().item()
    assert chi2 < 120, chi2
    # low-bit structure: parity of indices is balanced, and consecutive positions uncorrelated
    assert abs((idx % 2).double().mean().item() - 0.5) < 0.01
    a, b = idx[..., :-1].double().flatten(), idx[..., 1:].double().flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.01


def test_mix32_is_a_32bit_bijection_sample():
    x = torch.arange(0, 2**20, dtype=torch.int64) * 4093 % (2**32)
    h = mix32(x)
    assert h.min() >= 0 and h.max() < 2**32
    assert torch.unique(h).numel() == x.numel()


def test_build_task(make, mnist_dir):
    # the paper's variants (mnist_40, mnist_2layer, mnist_relu) are conf/task presets now:
    # build_task knows families only (tests/test_train.py builds every preset)
    fam = build_task("mnist_mlp", hidden_sizes=[40], activation="tanh", data_dir=mnist_dir,
                     download=False)
    assert isinstance(fam, MNISTMLPFamily)
    assert fam.hidden_sizes == (40,) and fam.activation == "tanh" and fam.name == "mnist_mlp"
    assert build_task("mnist_mlp").hidden_sizes == (20,)
    with pytest.raises(ValueError, match="unknown task family 'mnist_80'.*mnist_mlp"):
        build_task("mnist_80")


def test_float64_sample(make):
    inst = make().sample(2, seed=0, dtype=torch.float64)
    assert inst.init_params.dtype == torch.float64 and inst.images.dtype == torch.float64
    loss, grad = inst.loss_and_grad(inst.init_params, 0)
    assert loss.dtype == torch.float64 and grad.shape == (2, 15910)
    f32 = make().sample(2, seed=0)
    assert torch.allclose(f32.loss(f32.init_params, 0).double(), loss, atol=1e-5)


def test_invalid_configurations():
    with pytest.raises(ValueError, match="unknown activation 'gelu'.*sigmoid"):
        MNISTMLPFamily(activation="gelu")
    with pytest.raises(ValueError, match="hidden_sizes is empty"):
        MNISTMLPFamily(hidden_sizes=())
    with pytest.raises(ValueError, match="hidden size"):
        MNISTMLPFamily(hidden_sizes=(20, 0))
    with pytest.raises(ValueError, match="hidden size"):
        MNISTMLPFamily(hidden_sizes=(-3,))
    with pytest.raises(ValueError, match="hidden_sizes must be a sequence"):
        MNISTMLPFamily(hidden_sizes=20)
    with pytest.raises(ValueError, match="batch_size"):
        MNISTMLPFamily(batch_size=0)
    with pytest.raises(ValueError, match="init_std"):
        MNISTMLPFamily(init_std=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(make):
    fam = make()
    cpu = fam.sample(4, seed=3, split="valid")
    gpu = fam.sample(4, seed=3, split="valid", device="cuda")
    assert gpu.init_params.is_cuda and gpu.images.is_cuda
    assert torch.equal(cpu.init_params, gpu.init_params.cpu())
    for step in (0, 5):
        assert torch.equal(cpu.minibatch_indices(step), gpu.minibatch_indices(step).cpu())
        lc, gc = cpu.loss_and_grad(cpu.init_params, step)
        lg, gg = gpu.loss_and_grad(gpu.init_params, step)
        assert torch.allclose(lc, lg.cpu(), atol=1e-5) and torch.allclose(gc, gg.cpu(), atol=1e-5)
    ev = gpu.evaluate(gpu.init_params)
    assert ev["accuracy"].is_cuda
