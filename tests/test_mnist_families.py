"""The CNN and logistic-regression MNIST families: equal to nn.Module references, deterministic,
sharing the MLP's data, minibatches and evaluation (``l2l.tasks.mnist_common``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2l.tasks import (
    FAMILIES,
    AugmentedFamily,
    CharRNNFamily,
    ConditionedQuadraticFamily,
    GaussianLogRegFamily,
    MixtureFamily,
    MNISTAutoencoderFamily,
    MNISTCNNFamily,
    MNISTInstances,
    MNISTLogRegFamily,
    MNISTMLPFamily,
    RosenbrockFamily,
    TeacherStudentFamily,
    build_task,
)

ACT_MODULES = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}

CNN_VARIANTS = {
    "default": {},
    "tanh_3_blocks": {"channels": (2, 3, 5), "activation": "tanh"},
    "5x5_normal_init": {"channels": (3,), "kernel_size": 5, "init": "normal", "init_std": 0.1},
}


@pytest.fixture
def cnn(mnist_dir, mnist):
    def _make(**kwargs) -> MNISTCNNFamily:
        return MNISTCNNFamily(data_dir=mnist_dir, download=False, **kwargs)

    return _make


@pytest.fixture
def logreg(mnist_dir, mnist):
    def _make(**kwargs) -> MNISTLogRegFamily:
        return MNISTLogRegFamily(data_dir=mnist_dir, download=False, **kwargs)

    return _make


def cnn_reference(fam: MNISTCNNFamily, row: torch.Tensor) -> nn.Sequential:
    """An nn.Sequential holding one instance's CNN weights (nn.Linear weight = W_head^T)."""
    convs, W_head, b_head = fam.unflatten(row.unsqueeze(0))
    mods: list[nn.Module] = [nn.Unflatten(1, (1, 28, 28))]
    for W, b in convs:
        co, ci, k, _ = W.shape[1:]
        conv = nn.Conv2d(ci, co, k, padding=k // 2)
        with torch.no_grad():
            conv.weight.copy_(W[0])
            conv.bias.copy_(b[0])
        mods += [conv, ACT_MODULES[fam.activation](), nn.MaxPool2d(2)]
    head = nn.Linear(fam.features, 10)
    with torch.no_grad():
        head.weight.copy_(W_head[0].T)
        head.bias.copy_(b_head[0])
    return nn.Sequential(*mods, nn.Flatten(), head)


def cnn_reference_grad(net: nn.Sequential) -> torch.Tensor:
    parts = []
    for m in net:
        if isinstance(m, nn.Conv2d):
            parts += [m.weight.grad.reshape(-1), m.bias.grad]
        elif isinstance(m, nn.Linear):
            parts += [m.weight.grad.T.reshape(-1), m.bias.grad]
    return torch.cat(parts)


def logreg_reference(fam: MNISTLogRegFamily, row: torch.Tensor) -> nn.Linear:
    W, b = fam.unflatten(row.unsqueeze(0))
    lin = nn.Linear(784, 10)
    with torch.no_grad():
        lin.weight.copy_(W[0].T)
        lin.bias.copy_(b[0])
    return lin


def _check_against_reference(inst, params, images, labels, make_ref, ref_grad, tol):
    """Batched losses and gradients equal a per-instance nn.Module's, at two steps."""
    for step in (0, 9):
        losses, grads = inst.loss_and_grad(params, step)
        idx = inst.minibatch_indices(step)
        for i in range(params.shape[0]):
            net = make_ref(params[i])
            ref = nn.functional.cross_entropy(net(images[idx[i]]), labels[idx[i]])
            ref.backward()
            assert abs(losses[i].item() - ref.item()) <= tol
            assert (grads[i] - ref_grad(net)).abs().max().item() <= tol


@pytest.mark.parametrize("variant", list(CNN_VARIANTS))
def test_cnn_loss_and_grad_equal_nn_sequential(cnn, mnist, variant):
    fam = cnn(**CNN_VARIANTS[variant], batch_size=32)
    inst = fam.sample(3, seed=2, split="train")
    params = inst.init_params + 0.05 * torch.randn(
        inst.init_params.shape, generator=torch.Generator().manual_seed(3)
    )
    images, labels = mnist.train_images[:50000], mnist.train_labels[:50000]
    _check_against_reference(
        inst, params, images, labels, lambda row: cnn_reference(fam, row), cnn_reference_grad,
        tol=1e-5,
    )


def test_logreg_loss_and_grad_equal_nn_linear(logreg, mnist):
    fam = logreg()
    inst = fam.sample(3, seed=2, split="valid")
    params = inst.init_params + 0.1 * torch.randn(
        inst.init_params.shape, generator=torch.Generator().manual_seed(4)
    )
    images, labels = mnist.train_images[50000:], mnist.train_labels[50000:]

    def grad(lin: nn.Linear) -> torch.Tensor:
        return torch.cat([lin.weight.grad.T.reshape(-1), lin.bias.grad])

    _check_against_reference(
        inst, params, images, labels, lambda row: logreg_reference(fam, row), grad, tol=1e-6
    )


def test_layouts_and_sizes(cnn, logreg):
    fam = cnn()
    assert fam.num_params == (4 * 9 + 4) + (8 * 4 * 9 + 8) + (8 * 7 * 7 * 10 + 10) == 4266
    assert cnn(channels=(2, 3, 5)).features == 5 * 3 * 3
    p = torch.arange(2 * fam.num_params, dtype=torch.float32).view(2, -1)
    convs, W_head, b_head = fam.unflatten(p)
    assert [tuple(W.shape[1:]) for W, _ in convs] == [(4, 1, 3, 3), (8, 4, 3, 3)]
    assert convs[0][1][0, 0].item() == 36 and convs[1][0][0, 0, 0, 0, 0].item() == 40
    assert W_head.shape == (2, 392, 10) and b_head[0, -1].item() == fam.num_params - 1
    assert torch.equal(fam.flatten(convs, W_head, b_head), p)
    lr = logreg()
    assert lr.num_params == 7850
    q = torch.randn(2, 7850)
    assert torch.equal(lr.flatten(*lr.unflatten(q)), q)
    for f, bad in ((fam, p[:, :-1]), (lr, q[:, 1:])):
        with pytest.raises(ValueError, match="shape"):
            f.unflatten(bad)


def test_cnn_fan_in_init(cnn):
    fam = cnn()
    p = fam.sample(64, seed=0).init_params
    convs, W_head, b_head = fam.unflatten(p)
    assert abs(convs[0][0].std().item() - (2 / 9) ** 0.5) < 0.03  # He: gain sqrt(2), fan-in 9
    assert abs(convs[1][0].std().item() - (2 / 36) ** 0.5) < 0.01
    assert abs(W_head.std().item() - 392**-0.5) < 0.002
    assert (convs[0][1] == 0).all() and (b_head == 0).all()
    q = cnn(init="normal", init_std=0.01).sample(8, seed=0).init_params
    assert abs(q.std().item() - 0.01) < 5e-4 and (q[:, -10:] != 0).all()


@pytest.mark.parametrize("kind", ["cnn", "logreg"])
def test_instance_independence_and_repeat(cnn, logreg, kind):
    fam = cnn() if kind == "cnn" else logreg()
    batch = fam.sample(3, seed=5, split="test")
    assert isinstance(batch, MNISTInstances)
    losses = {s: batch.loss(batch.init_params, s) for s in (0, 4)}
    for i in range(3):
        one = fam.sample(1, seed=5, split="test", offset=i)
        assert torch.equal(one.init_params[0], batch.init_params[i])
        for step in (0, 4):
            assert torch.equal(one.minibatch_indices(step)[0], batch.minibatch_indices(step)[i])
            assert torch.allclose(one.loss(one.init_params, step)[0], losses[step][i], atol=1e-6)
    twice = batch.repeat(2)
    assert twice.batch_size == 6 and torch.equal(twice.init_params[3:], batch.init_params)
    assert torch.equal(twice.minibatch_indices(4)[3:], batch.minibatch_indices(4))
    assert torch.allclose(twice.loss(twice.init_params, 4)[3:], losses[4], atol=1e-6)
    # other seeds and splits are other problems; steps give new minibatches
    assert not torch.equal(fam.sample(3, seed=6, split="test").init_params, batch.init_params)
    assert not torch.equal(batch.minibatch_indices(0), batch.minibatch_indices(1))


def test_families_use_their_own_seeds_but_the_same_splits(cnn, logreg, mnist_dir, mnist):
    mlp = MNISTMLPFamily(data_dir=mnist_dir, download=False)
    a, b, c = (f.sample(1, seed=0, split="valid") for f in (mlp, cnn(), logreg()))
    assert a.images.data_ptr() == b.images.data_ptr() == c.images.data_ptr()
    assert torch.equal(b.images, mnist.train_images[50000:])
    assert not torch.equal(a.minibatch_indices(0), b.minibatch_indices(0))


@pytest.mark.parametrize("kind", ["cnn", "logreg"])
def test_evaluate_matches_reference_on_whole_split(cnn, logreg, mnist, kind):
    fam = cnn(channels=(2, 4)) if kind == "cnn" else logreg()
    inst = fam.sample(2, seed=1, split="test")
    params = inst.init_params + 0.05 * torch.randn(
        inst.init_params.shape, generator=torch.Generator().manual_seed(0)
    )
    out = inst.evaluate(params)
    assert set(out) == {"loss", "accuracy"} and out["accuracy"].shape == (2,)
    for i in range(2):
        ref = cnn_reference(fam, params[i]) if kind == "cnn" else logreg_reference(fam, params[i])
        with torch.no_grad():
            logits = ref(mnist.test_images)
        ref_loss = nn.functional.cross_entropy(logits, mnist.test_labels)
        ref_acc = (logits.argmax(1) == mnist.test_labels).float().mean()
        assert abs(out["loss"][i].item() - ref_loss.item()) < 1e-5
        assert abs(out["accuracy"][i].item() - ref_acc.item()) < 1e-6


def test_logreg_learns(logreg):
    """Convex and well-posed: 30 plain gradient steps reach ~85% test accuracy."""
    inst = logreg().sample(2, seed=0, split="test")
    params = inst.init_params
    for step in range(30):
        _, grad = inst.loss_and_grad(params, step)
        params = params - 0.5 * grad
    assert (inst.evaluate(params)["accuracy"] > 0.8).all()


def test_build_task_registry_and_bad_kwargs(mnist_dir):
    assert set(FAMILIES) == {"quadratic", "mnist_mlp", "mnist_cnn", "mnist_logreg", "mixture",
                             "conditioned_quadratic", "rosenbrock", "gaussian_logreg",
                             "teacher_student", "mnist_autoencoder", "char_rnn", "augmented"}
    fam = build_task("mnist_cnn", channels=[2, 2], data_dir=mnist_dir)
    assert isinstance(fam, MNISTCNNFamily) and fam.channels == (2, 2)
    assert fam.name == "mnist_cnn"
    assert isinstance(build_task("mnist_logreg"), MNISTLogRegFamily)
    with pytest.raises(ValueError, match="unknown task family 'mnist_40'.*mnist_cnn.*preset"):
        build_task("mnist_40")
    with pytest.raises(ValueError, match="unknown argument.*hidden_sizes.*valid.*channels"):
        build_task("mnist_cnn", hidden_sizes=[20])
    with pytest.raises(ValueError, match="unknown argument.*activation"):
        build_task("mnist_logreg", activation="relu")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": ()}, "channels is empty"),
        ({"channels": 4}, "channels must be a sequence"),
        ({"channels": (4, 0)}, "channel count"),
        ({"channels": (1, 1, 1, 1, 1)}, "at most 4"),
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"activation": "gelu"}, "unknown activation 'gelu'.*relu"),
        ({"init": "xavier"}, "unknown init 'xavier'.*fan_in"),
        ({"init_std": -1.0}, "init_std"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_cnn_invalid_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MNISTCNNFamily(**kwargs)


def test_logreg_invalid_configurations():
    with pytest.raises(ValueError, match="init_std"):
        MNISTLogRegFamily(init_std=float("nan"))
    with pytest.raises(ValueError, match="batch_size"):
        MNISTLogRegFamily(batch_size=True)


@pytest.mark.slow  # composes every preset/command (Hydra: ~0.2 s each)
def test_conf_task_presets_build_their_family():
    """Each preset is defined once, in conf/task: ``family`` + ``kwargs`` give the family."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    want = {
        "mnist": (MNISTMLPFamily, {"hidden_sizes": (20,), "activation": "sigmoid"}),
        "mnist_40": (MNISTMLPFamily, {"hidden_sizes": (40,), "activation": "sigmoid"}),
        "mnist_2layer": (MNISTMLPFamily, {"hidden_sizes": (20, 20)}),
        "mnist_relu": (MNISTMLPFamily, {"hidden_sizes": (20,), "activation": "relu"}),
        "mnist_cnn": (MNISTCNNFamily, {"channels": (4, 8), "num_params": 4266}),
        "mnist_logreg": (MNISTLogRegFamily, {"num_params": 7850}),
        "mnist_mixture": (MixtureFamily, {}),
        "quadratic": (type(build_task("quadratic")), {"w_dist": "normal"}),
        "quadratic_official": (type(build_task("quadratic")), {"w_dist": "uniform"}),
        "conditioned_quadratic": (ConditionedQuadraticFamily, {"dim": 20, "condition": 100.0}),
        "conditioned_quadratic_100d": (ConditionedQuadraticFamily,
                                       {"dim": 100, "condition": 1e4}),
        "rosenbrock": (RosenbrockFamily, {"dim": 10, "curvature": 100.0}),
        "gaussian_logreg": (GaussianLogRegFamily, {"num_params": 21}),
        "teacher_student": (TeacherStudentFamily, {"num_params": 577}),
        "mnist_8x8": (MNISTMLPFamily, {"resolution": 8, "num_params": 2410}),
        "mnist_14x14": (MNISTMLPFamily, {"resolution": 14, "num_params": 4150}),
        "mnist_8x8_relu_2layer": (MNISTMLPFamily, {"activation": "relu", "num_params": 3466}),
        "mnist_14x14_tanh_wide": (MNISTMLPFamily, {"activation": "tanh", "num_params": 13258}),
        "mnist_autoencoder": (MNISTAutoencoderFamily, {"resolution": 14, "num_params": 12772}),
        "char_rnn": (CharRNNFamily, {"num_params": 2811, "vocab_size": 27}),
        "teacher_student_augmented": (AugmentedFamily, {"num_params": 577,
                                                        "param_scale_range": 1.0}),
        "suite_train": (MixtureFamily, {"weights": [0.2] * 5}),
    }
    assert {p.stem for p in (conf / "task").glob("*.yaml")} == set(want)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for preset, (cls, attrs) in want.items():
            task = OmegaConf.to_container(
                compose(config_name="config", overrides=[f"task={preset}"]).task, resolve=True
            )
            assert task["name"] == preset
            fam = build_task(task["family"], **task["kwargs"])
            assert type(fam) is cls, preset
            for attr, value in attrs.items():
                assert getattr(fam, attr) == value, (preset, attr)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["cnn", "logreg"])
def test_cuda_matches_cpu(cnn, logreg, kind):
    fam = cnn() if kind == "cnn" else logreg()
    cpu = fam.sample(4, seed=3, split="valid")
    gpu = fam.sample(4, seed=3, split="valid", device="cuda")
    assert torch.equal(cpu.init_params, gpu.init_params.cpu())
    for step in (0, 5):
        assert torch.equal(cpu.minibatch_indices(step), gpu.minibatch_indices(step).cpu())
        lc, gc = cpu.loss_and_grad(cpu.init_params, step)
        lg, gg = gpu.loss_and_grad(gpu.init_params, step)
        assert torch.allclose(lc, lg.cpu(), atol=1e-4) and torch.allclose(gc, gg.cpu(), atol=1e-4)
    ev_c, ev_g = cpu.evaluate(cpu.init_params), gpu.evaluate(gpu.init_params)
    assert torch.allclose(ev_c["loss"], ev_g["loss"].cpu(), atol=1e-4)


def test_every_family_lists_its_tensors_in_flat_order(mnist_dir):
    """``param_shapes`` (for per-tensor views such as augmentation) covers the flat vector."""
    import math

    for name, cls in FAMILIES.items():
        if name in ("mixture", "augmented"):
            continue
        kwargs = {"data_dir": mnist_dir} if "data_dir" in cls.__init__.__code__.co_varnames else {}
        fam = build_task(name, **kwargs)
        assert sum(math.prod(s) for _, s in fam.param_shapes) == fam.num_params, name
    cnn = MNISTCNNFamily(data_dir=mnist_dir)
    p = torch.arange(cnn.num_params, dtype=torch.float32).view(1, -1)
    convs, W_head, _ = cnn.unflatten(p)
    assert [s for _, s in cnn.param_shapes][2] == tuple(convs[1][0].shape[1:])
    assert cnn.param_shapes[-2] == ("head.W", tuple(W_head.shape[1:]))
    assert MNISTLogRegFamily().param_shapes == [("W", (784, 10)), ("b", (10,))]
