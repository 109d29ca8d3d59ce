import pytest

import cnnlab


@pytest.fixture(autouse=True)
def _seed():
    cnnlab.manual_seed(0)
    yield


def save_short_run(out, model_name, n_images, nesterov):
    """Train ``model_name`` one epoch on the first ``n_images`` MNIST images and save it as a run."""
    from cnnlab import checkpoint, models, optim
    from cnnlab.data import DataLoader, load_dataset
    from cnnlab.train import fit

    split = load_dataset("mnist")
    cnnlab.manual_seed(0)
    model = models.build(model_name)
    loader = DataLoader(*[a[:n_images] for a in split.train], batch_size=64, seed=0)
    fit(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov), loader, epochs=1,
        progress=False, log=None)
    checkpoint.save_run(out, model, models.spec(model_name), {"dataset": "mnist", "validation": 10000},
                        {"test_accuracy": None})
    return out
