"""cnnlab.serve without the web: the engine's answers (prediction, feature maps, receptive fields,
Grad-CAM, the run's summary) and the checks on uploaded pictures."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from serve_helpers import drawn_png, photo_jpeg, png_bytes

from cnnlab import models, nn
from cnnlab.autograd import Tensor, no_grad
from cnnlab.serve import DemoRun, PictureError, find_runs, read_picture, receptive_fields
from cnnlab.serve.engine import MAX_MAPS


def decode(payload) -> np.ndarray:
    return np.frombuffer(base64.b64decode(payload["data"]), dtype=np.uint8)


@pytest.fixture(scope="module")
def default_demo(demo_runs):
    return DemoRun.load(demo_runs["default"])


# ------------------------------------------------------------------ receptive fields
@pytest.mark.parametrize("name", ["fast", "article", "lenet5", "alexnet"])
def test_receptive_fields_match_which_pixels_change_a_unit(name):
    """The formula against the definition: a unit's receptive field is the set of input pixels
    whose change changes it. Every pixel is pushed hard both ways (so a max-pool passes it on),
    all in one batch; a unit counts as changed if any of its channels does."""
    model = models.build(name)
    model.eval()
    layers = list(model.layers)
    fields = receptive_fields(layers)
    base = np.random.default_rng(0).normal(0, 0.1, (1, 1, 28, 28)).astype(np.float32)
    batch = np.repeat(base, 2 * 784 + 1, axis=0)
    for p in range(784):
        batch[1 + 2 * p, 0, p // 28, p % 28] += 1000
        batch[2 + 2 * p, 0, p // 28, p % 28] -= 1000
    with no_grad():
        t = Tensor(batch)
        for i, layer in enumerate(layers):
            t = layer(t)
            if i not in fields:
                break
            out = t.numpy()  # (1 + 2 * 784, C, H, W)
            changed = np.abs(out[1:] - out[:1]) > 1e-4 * (1 + np.abs(out[:1]))
            changed = changed.any(axis=1).reshape(784, 2, *out.shape[2:]).any(axis=1)  # (784, H, W)
            f = fields[i]
            h, w = out.shape[2:]
            for y, x in {(0, 0), (h // 2, w // 3), (h - 1, w - 1)}:
                rows, cols = np.nonzero(changed[:, y, x].reshape(28, 28))
                cy, cx = f["start"][0] + y * f["jump"][0], f["start"][1] + x * f["jump"][1]
                half = (f["size"][0] - 1) / 2, (f["size"][1] - 1) / 2
                expect = (max(0, int(np.ceil(cy - half[0]))), min(27, int(np.floor(cy + half[0]))),
                          max(0, int(np.ceil(cx - half[1]))), min(27, int(np.floor(cx + half[1]))))
                assert (rows.min(), rows.max(), cols.min(), cols.max()) == expect, (i, type(layer).__name__, y, x)


def test_receptive_fields_of_the_article_net():
    fields = receptive_fields(models.build("article").layers)
    assert fields[0] == {"size": [5, 5], "jump": [1, 1], "start": [2.0, 2.0]}  # 5x5 windows, stride 1
    assert fields[1] == {"size": [6, 6], "jump": [2, 2], "start": [2.5, 2.5]}  # + 2x2 pooling
    assert sorted(fields) == [0, 1, 2]  # up to Flatten


# ------------------------------------------------------------------ a prediction
def test_a_drawn_seven_and_everything_shown_about_it(default_demo):
    img, notes = read_picture(drawn_png())
    a = default_demo.predict(img, notes)
    assert a["name"] == "7" and a["class"] == 7
    assert np.isclose(sum(a["probabilities"]), 1.0) and a["probability"] == max(a["probabilities"])
    assert a["input"]["width"] == a["input"]["height"] == 28 and decode(a["input"]).max() == 255
    assert [s["caption"].split(":")[0].split(",")[0] for s in a["steps"]] == [
        "grayscale", "illumination (page) estimate", "flattened", "ink", "cropped to the ink", "28x28"]
    assert np.array_equal(decode(a["steps"][-1]), decode(a["input"]))
    assert max(a["steps"][0]["width"], a["steps"][0]["height"]) <= 160  # shrunk for the page
    # every conv, pooling and activation layer with 4-D output, batch norm not shown
    assert [(layer["index"], layer["kind"]) for layer in a["layers"]] == [
        (0, "conv"), (1, "pool"), (3, "activation"), (4, "conv"), (5, "pool"), (7, "activation")]
    for layer in a["layers"]:
        c, h, w = layer["shape"]
        maps = decode(layer["maps"])
        assert layer["shown"] == min(c, MAX_MAPS) and maps.size == layer["shown"] * h * w
        assert maps.min() == 0 and maps.max() == 255  # scaled from lo to hi
        assert layer["field"] is not None
    g = a["gradcam"]
    assert g is not None and g["layer"] == 7 and g["class"] == 7 and g["size"] == [4, 4]
    assert decode(g["cells"]).size == 16 and decode(g["cells"]).max() == 255
    assert decode(g["map"]).size == 28 * 28 and decode(g["map"]).max() > 200  # peaks between pixels
    assert a["ms"] > 0


def test_a_photographed_digit(default_demo):
    img, notes = read_picture(photo_jpeg())
    assert default_demo.predict(img, notes)["name"] == "4"


def test_predicting_leaves_the_model_as_it_was(default_demo):
    model = default_demo.model
    before = {k: np.array(v.numpy() if hasattr(v, "numpy") else v) for k, v in model.state_dict().items()}
    default_demo.predict(read_picture(drawn_png())[0])
    assert not model.training
    for p in model.parameters():
        assert p.grad is None and p.requires_grad  # Grad-CAM took gradients for the picture only
    after = model.state_dict()
    assert all(np.array_equal(before[k], np.asarray(after[k].numpy() if hasattr(after[k], "numpy") else after[k]))
               for k in before)


def test_grad_cam_is_the_definition(default_demo):
    """The map before placing: ReLU(sum_c dy_k/dA_c * A_c) unit by unit (element-wise Grad-CAM),
    with the gradient by central finite differences through the layers after A."""
    layers = default_demo.layers
    rng = np.random.default_rng(1)
    features = np.abs(rng.normal(0, 1, (1, 64, 4, 4)))
    head = layers[8:]

    def score(a):
        with no_grad():
            t = Tensor(a.astype(np.float32))
            for layer in head:
                t = layer(t)
        return float(t.numpy()[0, 3])

    eps = 1e-3  # small: the head is piecewise linear, and a larger step can cross a ReLU's kink
    grad = np.zeros_like(features)
    for idx in np.ndindex(features.shape):
        d = np.zeros_like(features)
        d[idx] = eps
        grad[idx] = (score(features + d) - score(features - d)) / (2 * eps)
    cam = np.maximum((grad[0] * features[0]).sum(0), 0)
    got = default_demo.grad_cam(7, features.astype(np.float32), 3)
    if cam.max() <= 0:
        assert got is None
        return
    assert np.allclose(decode(got["cells"]).reshape(4, 4) / 255, cam / cam.max(), atol=1 / 255)
    # placed over the input: each unit at the centre of its receptive field (7.5, 11.5, 15.5, 19.5
    # in this net), constant beyond the outermost ones, in between interpolated
    assert default_demo.fields[7]["start"] == [7.5, 7.5] and default_demo.fields[7]["jump"] == [4, 4]
    placed, cells = decode(got["map"]).reshape(28, 28), decode(got["cells"]).reshape(4, 4)
    assert (placed[:8, :8] == cells[0, 0]).all() and (placed[20:, 20:] == cells[3, 3]).all()
    assert (placed[:8, 20:] == cells[0, 3]).all() and (placed[20:, :8] == cells[3, 0]).all()


def test_grad_cam_of_a_linear_head_is_each_places_share_of_the_score(demo_runs):
    """The article's net: its pooled, rectified maps A feed one linear layer, so the class score is
    b_k + sum W_k A, and the map is exactly ReLU(sum_c W_k[c] A[c]) per place."""
    demo = DemoRun.load(demo_runs["article"])
    features = np.abs(np.random.default_rng(2).normal(0, 1, (1, 3, 12, 12))).astype(np.float32)
    k = 7
    w = demo.layers[-1].weight.numpy()[k].reshape(3, 12, 12).astype(np.float64)
    share = np.maximum((w * features[0]).sum(0), 0)
    got = decode(demo.grad_cam(2, features, k)["cells"]).reshape(12, 12)
    assert np.abs(got - np.rint(255 * share / share.max())).max() <= 1


def test_the_runs_summary(demo_runs):
    info = DemoRun.load(demo_runs["article"], 1).info
    assert info["id"] == 1 and info["name"] == "article" and info["dataset"] == "mnist"
    assert info["parameters"] == 4408 and info["classes"] == [str(i) for i in range(10)]
    assert [layer["shape"] for layer in info["layers"]] == [[3, 24, 24], [3, 12, 12], [3, 12, 12], [432], [10]]
    assert "share 78 parameters" in info["shared_weights"]
    assert 0.5 < info["test_accuracy"] <= 1
    f = info["filters"]
    assert f["layer"] == 0 and f["count"] == 3 and decode(f["maps"]).size == 3 * 25
    assert str(demo_runs["article"].parent) not in str(info)  # the page never sees server paths


def test_the_summary_of_a_run_saved_as_a_layer_spec_describes_it(demo_runs):
    from cnnlab import runs

    run = runs.load(demo_runs["article"])
    run.spec = models.layer_spec(run.model)  # as runs.train(config, model=a Sequential) saves it
    info = DemoRun(run).info
    assert info["architecture"] == "sequential" and info["description"] == models.describe(run.spec)
    assert info["description"].startswith("a Sequential of 5 layers")


def test_find_runs(demo_runs, tmp_path):
    assert find_runs(demo_runs["default"].parent) == sorted(demo_runs.values())
    assert find_runs(tmp_path / "none") == []


def test_a_blank_picture_is_refused_with_a_reason(default_demo):
    with pytest.raises(PictureError) as info:
        default_demo.predict(Image.new("RGB", (280, 280), "white"))
    assert info.value.status == 422 and str(info.value).startswith("no digit found")


def test_a_net_that_cannot_take_the_picture_is_refused(demo_runs):
    from cnnlab import runs

    run = runs.load(demo_runs["article"])
    run.model = nn.Linear(784, 10)  # any model with its own forward is shown (test_serve_open_models.py), not this
    with pytest.raises(ValueError, match=r"the demo cannot run this Linear on a 28x28 picture: .*784"):
        DemoRun(run)


# ------------------------------------------------------------------ uploads
def _png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims another size (a decompression bomb's trick)."""
    data = bytearray(png_bytes(Image.new("L", (4, 4), 255)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    return bytes(data)


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty"),
    (b"hello, I am a text file renamed to digit.png\n" * 3, 415, "not a picture"),
    (b"%PDF-1.4\n" + bytes(200), 415, "not a picture"),
    (_png_claiming(5000, 5000), 413, "megapixels"),
    (_png_claiming(100_000, 100_000), 413, "too many pixels"),
    (drawn_png()[:300], 400, "damaged"),
    (photo_jpeg()[:2000], 400, "damaged"),
])
def test_bad_uploads_say_what_is_wrong(data, status, words):
    with pytest.raises(PictureError) as info:
        read_picture(data, max_pixels=20_000_000)
    assert info.value.status == status and words in str(info.value)


def test_too_many_bytes_is_refused_before_decoding():
    with pytest.raises(PictureError) as info:
        read_picture(photo_jpeg(), max_bytes=1000)
    assert info.value.status == 413 and "the limit is 0.0 MB" in str(info.value)


def test_big_pictures_are_shrunk_and_photos_turned_upright():
    img, notes = read_picture(png_bytes(Image.new("L", (3000, 600), 255)))
    assert img.size == (1024, 205) and notes == ["shrunk from 3000x600 to 1024x205 pixels"]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; view rotated 90 degrees
    buf = io.BytesIO()
    Image.new("RGB", (60, 40), "white").save(buf, "JPEG", exif=exif)
    img, notes = read_picture(buf.getvalue())
    assert img.size == (40, 60) and notes == []
