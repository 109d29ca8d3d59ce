"""Test-time augmentation and the ensemble's method chosen on validation accuracy, not on the test set."""

import json
import shutil

import numpy as np
import pytest

from cnnlab import checkpoint, runs
from cnnlab.cli import main
from cnnlab.cli.evaluate import report_ensemble
from cnnlab.data import MNIST_MEAN, MNIST_STD
from cnnlab.data.augment import shift_images
from cnnlab.ensemble import METHODS
from cnnlab.train import eval_loader, evaluate, tta_views


def _naive_shift(img, dy, dx):
    h, w = img.shape
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = img[y - dy, x - dx]
    return out


def test_tta_views_are_the_image_its_mirror_and_their_one_pixel_shifts():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 6, 5), dtype=np.uint8)
    assert len(tta_views(images)) == 1 and tta_views(images)[0] is images
    mirror = tta_views(images, mirror=True)
    assert len(mirror) == 2 and np.array_equal(mirror[1], images[:, :, ::-1])
    shifts = tta_views(images, shift=True)
    assert len(shifts) == 5
    for view, (dy, dx) in zip(shifts[1:], ((1, 0), (-1, 0), (0, 1), (0, -1))):
        for i in range(3):
            assert np.array_equal(view[i], _naive_shift(images[i], dy, dx))
    both = tta_views(images, mirror=True, shift=True)
    assert len(both) == 10
    assert np.array_equal(both[6], shift_images(images[:, :, ::-1], 1, 0))  # the mirror's shifts come last
    assert all(v.dtype == np.uint8 and v.shape == images.shape for v in both)


def test_report_ensemble_chooses_on_validation_and_breaks_ties_toward_the_simpler(capsys):
    labels = np.array([0, 1, 2, 0])
    splits = {"validation": (None, labels), "test": (None, labels)}

    def onehot(pred, confidence=0.9):
        p = np.full((len(pred), 3), (1 - confidence) / 2)
        p[np.arange(len(pred)), pred] = confidence
        return p

    # Plain: three members, two wrong on image 3 with low confidence, one right with high confidence.
    # The vote follows the two (3/4 right); the average follows the confident one (4/4 right).
    plain = [onehot([0, 1, 2, 1], 0.4), onehot([0, 1, 2, 1], 0.4), onehot([0, 1, 2, 0], 0.99)]
    probabilities = {("plain", "validation"): plain, ("plain", "test"): plain}
    report_ensemble(3, ["plain"], splits, probabilities, METHODS)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "ensemble of 3: validation accuracy 75.00% by plurality vote, 100.00% by averaged probabilities"
    assert lines[-1] == "chosen on validation: averaged probabilities; its test accuracy 100.00%"

    # The choice is made on validation alone: here the test set favours the vote, validation the average.
    test_set = [onehot([0, 1, 2, 0], 0.4), onehot([0, 1, 2, 0], 0.4), onehot([0, 1, 2, 1], 0.99)]
    probabilities = {("plain", "validation"): plain, ("plain", "test"): test_set,
                     ("shift", "validation"): plain, ("shift", "test"): plain}
    report_ensemble(3, ["plain", "shift"], splits, probabilities, METHODS)
    lines = capsys.readouterr().out.strip().splitlines()
    # plain-average and shift-average tie on validation (100%): the first, plain, wins; its test score is 75%
    assert lines[-1] == "chosen on validation: averaged probabilities; its test accuracy 75.00%"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A briefly trained article net (its weights are the point, not its accuracy)."""
    from helpers import save_short_run

    return save_short_run(tmp_path_factory.mktemp("tta") / "r", "article", 2000, nesterov=False)


def test_shift_tta_matches_a_hand_computed_average(small_run, capsys):
    from cnnlab.data import load_dataset

    assert main(["evaluate", "--shift-tta", str(small_run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    split = load_dataset("mnist")
    model = runs.load(small_run).model
    reported = {}
    for name, part in (("test", lines[0].split("; validation")[0]), ("validation", lines[0].split("; validation")[1])):
        reported[name] = float(part.split("with 1-px shift averaging ")[1].split("%")[0])
        x, y = getattr(split, name)
        views = [eval_loader(shift_images(x, dy, dx), y, MNIST_MEAN, MNIST_STD)
                 for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
        p = sum(evaluate(model, v, return_predictions=True)["probabilities"] for v in views) / 5
        assert reported[name] == pytest.approx(100 * float((p.argmax(1) == y).mean()), abs=0.005)
    plain_val = float(lines[0].split("validation ")[1].split("%")[0])
    chosen = "1-px shift averaging" if reported["validation"] > plain_val else "no averaging"
    assert lines[-1].startswith(f"chosen on validation: {chosen}; its test accuracy ")


def test_runs_with_other_validation_splits_are_measured_on_test_only(small_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(small_run, other)
    cfg = json.loads((other / checkpoint.CONFIG).read_text())
    (other / checkpoint.CONFIG).write_text(json.dumps({**cfg, "validation": 5000}))
    assert main(["evaluate", str(small_run), str(other)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    # the second run trained on images 50,000-54,999, the first run's validation images: no validation
    assert "validation" not in out[1]
    assert [line for line in out if line.startswith("ensemble")] == [out[2]] and "test accuracy" in out[2]
    assert not any(line.startswith("chosen") for line in out)


def test_evaluate_batch_size_does_not_change_the_result(small_run):
    from cnnlab.data import load_dataset

    model = runs.load(small_run).model
    x, y = load_dataset("mnist").test
    x, y = x[:700], y[:700]
    a = evaluate(model, eval_loader(x, y, MNIST_MEAN, MNIST_STD), return_predictions=True)
    b = evaluate(model, eval_loader(x, y, MNIST_MEAN, MNIST_STD, batch_size=1000), return_predictions=True)
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-5, atol=1e-6)
