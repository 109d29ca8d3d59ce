"""End to end: a short MNIST run must learn; fit's bookkeeping follows Nielsen's rule."""

import numpy as np
import pytest

import cnnlab
from cnnlab import models, nn, optim, recipes
from cnnlab.data import Augment, DataLoader, load_dataset
from cnnlab.train import eval_loader, evaluate, fit


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def test_short_mnist_run_learns(mnist):
    """4,000 training images, 2 epochs of the article's 3-map net: well above chance."""
    cnnlab.manual_seed(0)
    model = models.build("article")
    x, y = mnist.train
    loader = DataLoader(x[:4000], y[:4000], batch_size=32, seed=0)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    val = eval_loader(mnist.validation[0][:1000], mnist.validation[1][:1000], 0.1307, 0.3081)
    test = eval_loader(mnist.test[0][:2000], mnist.test[1][:2000], 0.1307, 0.3081)
    h = fit(model, opt, loader, epochs=2, validation=val, test=test, progress=False, log=None)
    assert len(h.epochs) == 2
    assert h.test_accuracy > 0.90, h.test_accuracy
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    # the model holds the best-validation weights, so evaluating it reproduces the reported number
    best = h.epochs[h.best_epoch - 1]
    assert evaluate(model, test)["accuracy"] == pytest.approx(best["test_accuracy"])
    assert h.test_accuracy == best["test_accuracy"]
    assert h.best_validation_accuracy == max(e["validation_accuracy"] for e in h.epochs)


def test_training_is_reproducible_with_a_seed(mnist):
    x, y = mnist.train

    def run():
        cnnlab.manual_seed(3)
        model = models.build("default")
        loader = DataLoader(x[:256], y[:256], batch_size=64, seed=3, augment=Augment(max_shift=2))
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit(model, opt, loader, epochs=1, progress=False, log=None)
        return [p.numpy().copy() for p in model.parameters()]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_and_history_fields(mnist):
    cnnlab.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, y = mnist.train
    loader = DataLoader(x[:500], y[:500], batch_size=50, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.0)  # lr 0: never improves after epoch 1
    val = eval_loader(mnist.validation[0][:200], mnist.validation[1][:200], 0.1307, 0.3081)
    h = fit(model, opt, loader, epochs=10, validation=val, early_stopping=2, progress=False, log=None)
    assert h.stopped_early and len(h.epochs) == 3 and h.best_epoch == 1
    rec = h.epochs[0]
    for key in ("train_loss", "train_accuracy", "validation_accuracy", "seconds", "images_per_second", "lr"):
        assert key in rec


def test_keyboard_interrupt_ends_cleanly(mnist):
    class Stop(optim.SGD):
        calls = 0

        def step(self):
            Stop.calls += 1
            if Stop.calls == 3:
                raise KeyboardInterrupt
            super().step()

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, y = mnist.train
    loader = DataLoader(x[:500], y[:500], batch_size=50, seed=0)
    h = fit(model, Stop(model.parameters(), lr=0.1), loader, epochs=3, progress=False, log=None)
    assert h.interrupted and h.epochs == []


def test_divergence_is_reported(mnist):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, y = mnist.train
    loader = DataLoader(x[:200], y[:200], batch_size=50, seed=0)
    model.layers[1].weight.data[0, 0] = np.inf  # as after an overflowing update
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(model, optim.SGD(model.parameters(), lr=0.1), loader, epochs=2, progress=False, log=None)


@pytest.mark.parametrize("name", models.names())
def test_every_model_builds_and_runs(name):
    model = models.build(name)
    out = model(cnnlab.tensor(np.zeros((2, 1, 28, 28), np.float32)))
    assert out.shape == (2, 10)


def test_nielsen_parameter_counts():
    # Counted from the book's layer sizes.
    assert models.build("nielsen-fc").num_parameters() == 784 * 100 + 100 + 100 * 10 + 10
    assert models.build("nielsen-conv1").num_parameters() == 520 + 2880 * 100 + 100 + 1010
    assert models.build("article").num_parameters() == 3 * 26 + 432 * 10 + 10


def test_cs231n_three_layer_net_as_its_assignment_builds_it():
    model = models.build("cs231n")
    # conv 32 x (7x7x1 + 1), FC 32*14*14 -> 100, FC 100 -> 10
    assert model.num_parameters() == 32 * 50 + 32 * 14 * 14 * 100 + 100 + 1010
    conv, fc1, fc2 = (m for m in model.layers if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert conv.padding == (3, 3)  # "same" output size: 28x28 maps, 14x14 after the pool
    for m in (conv, fc1, fc2):  # weights N(0, 1e-3^2), biases zero
        assert abs(float(m.weight.data.std()) - 1e-3) < 1e-4 and not m.bias.data.any()
    with pytest.raises(ValueError, match="odd"):
        models.build({"name": "cs231n", "kwargs": {"size": 4}})


def test_vgg_small_parameter_count_and_shapes():
    # 3x3 convs without bias (batch norm follows): 1->32, 32->32, 32->64, 64->64; BN 2 per map; FC 3136->256->10
    convs = 9 * (1 * 32 + 32 * 32 + 32 * 64 + 64 * 64)
    bn = 2 * (32 + 32 + 64 + 64)
    assert models.build("vgg-small").num_parameters() == convs + bn + 64 * 7 * 7 * 256 + 256 + 2570
    assert recipes.get("fashion-best").augment.hflip and recipes.get("fashion").augment.hflip
    assert not recipes.get("default").augment.hflip and not recipes.get("best").augment.hflip
