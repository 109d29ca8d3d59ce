"""The demo of a model with its own forward (resnet-small): feature maps through forward hooks,
named by module path, its first Conv2d's filters and Grad-CAM of its last, over the JSON API."""

import pytest
from serve_helpers import drawn_png
from starlette.testclient import TestClient

import cnnlab
from cnnlab import checkpoint, models, optim, runs
from cnnlab.data import DataLoader, load_dataset
from cnnlab.serve.app import create_app
from cnnlab.train import fit


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """resnet-small after two SGD steps on 64 MNIST images."""
    cnnlab.manual_seed(0)
    model = models.build("resnet-small")
    images, labels = (a[:64] for a in load_dataset("mnist").train)
    fit(runs.runnable(model).train(), optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        DataLoader(images, labels, batch_size=32, seed=0), epochs=1, progress=False, log=None)
    d = tmp_path_factory.mktemp("runs") / "resnet"
    checkpoint.save_run(d, model, models.spec_of(model), {"dataset": "mnist", "validation": 10000,
                                                            "model": "resnet-small"})
    return d


def test_the_demo_shows_resnet_small(resnet_run):
    with TestClient(create_app([resnet_run]), raise_server_exceptions=False) as client:
        info = client.get("/api/runs/0").json()
        assert info["architecture"] == "resnet-small" and info["filters"]["layer"] == "stem.0"
        assert info["filters"]["count"] == 16
        r = client.post("/api/runs/0/predict", content=drawn_png(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    a = r.json()
    paths = [layer["path"] for layer in a["layers"]]
    assert paths[:3] == ["stem.0", "stem.2", "stem.3"] and "block2.shortcut.0" in paths
    assert [layer["index"] for layer in a["layers"]] == list(range(len(paths)))
    assert all(layer["field"] is None for layer in a["layers"])
    shapes = {layer["path"]: layer["shape"] for layer in a["layers"]}
    assert shapes["stem.0"] == [16, 28, 28] and shapes["block2.relu"] == [32, 7, 7]
    assert abs(sum(a["probabilities"]) - 1) < 1e-6
    cam = a["gradcam"]
    if cam is not None:  # Grad-CAM proper of the last Conv2d, over the 28x28 input
        assert cam["layer"] == "block2.shortcut.0" and cam["size"] == [7, 7]
        assert (cam["map"]["width"], cam["map"]["height"]) == (28, 28)
