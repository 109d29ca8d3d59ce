"""`cnnlab evaluate --corruptions`: the table's numbers are the library's, recomputed by hand, and bad
requests are refused in one line."""

import json
import shutil

import numpy as np
import pytest

from cnnlab import checkpoint, robustness, runs
from cnnlab.cli import main
from cnnlab.data import MNIST_MEAN, MNIST_STD, corruptions, load_dataset
from cnnlab.train import eval_loader, evaluate


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """An untrained, seeded article net saved as a run (its weights are the point, not its accuracy)."""
    import cnnlab
    from cnnlab import models

    out = tmp_path_factory.mktemp("corrupt") / "r"
    cnnlab.manual_seed(0)
    checkpoint.save_run(out, models.build("article"), models.spec("article"), {"dataset": "mnist", "validation": 10000},
                        {"test_accuracy": None})
    return out


def test_table_rows_are_accuracies_on_the_corrupted_first_n_test_images(small_run, capsys):
    assert main(["evaluate", "--corruptions", "--limit", "40", "--no-progress", str(small_run)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[0] == "corruption" and lines[1].split()[0] == "clean"
    rows = {line.split()[0]: float(line.split()[-1]) for line in lines[1:-1]}
    assert list(rows) == ["clean"] + corruptions.names()
    assert lines[-1].startswith("mean (corrupted)")
    assert float(lines[-1].split()[-1]) == pytest.approx(np.mean([rows[n] for n in corruptions.names()]), abs=0.01)
    x, y = load_dataset("mnist", validation=0).test
    x, y = x[:40], y[:40]
    model = runs.load(small_run).model
    for name in ("clean", "thick", "gaussian_blur"):
        images = x if name == "clean" else corruptions.corrupt(name, x, seed=0)
        acc = evaluate(model, eval_loader(images, y, MNIST_MEAN, MNIST_STD))["accuracy"]
        assert rows[name] == pytest.approx(100 * acc, abs=0.005), name
    assert "40 test images, corruption seed 0" in captured.err


def test_library_table_and_seed(small_run):
    x, y = load_dataset("mnist", validation=0).test
    model = runs.load(small_run).model
    seen = []
    a = robustness.evaluate_corruptions(model, x[:30], y[:30], MNIST_MEAN, MNIST_STD, names=["rotate", "thin"],
                                        seed=1, on_result=lambda n, acc: seen.append(n))
    assert seen == ["clean", "rotate", "thin"] and a["n"] == 30 and a["seed"] == 1
    assert a["mean"] == pytest.approx((a["corruptions"]["rotate"] + a["corruptions"]["thin"]) / 2)
    text = robustness.format_table({"A": a, "B": a})
    value = f"{100 * a['corruptions']['rotate']:.2f}"
    assert text.splitlines()[0].split() == ["corruption", "A", "B"] and text.splitlines()[2].split() == ["rotate", value, value]
    cache = {}
    b = robustness.evaluate_corruptions(model, x[:30], y[:30], MNIST_MEAN, MNIST_STD, names=["rotate", "thin"],
                                        seed=1, cache=cache)
    assert b == a and sorted(cache) == ["rotate", "thin"]
    np.testing.assert_array_equal(cache["thin"], corruptions.corrupt("thin", x[:30], seed=1))
    cache["thin"] = np.zeros_like(cache["thin"])  # what is cached is what is measured
    c = robustness.evaluate_corruptions(model, x[:30], y[:30], MNIST_MEAN, MNIST_STD, names=["thin"], seed=1,
                                        cache=cache)
    blank = evaluate(model, eval_loader(cache["thin"], y[:30], MNIST_MEAN, MNIST_STD))["accuracy"]
    assert c["corruptions"]["thin"] == blank
    with pytest.raises(ValueError, match="unknown corruption 'smudge'"):
        robustness.evaluate_corruptions(model, x[:5], y[:5], MNIST_MEAN, MNIST_STD, names=["smudge"])


@pytest.mark.parametrize("argv, message", [
    (["--corruptions", "--limit", "0"], "--limit: must be >= 1"),
    (["--limit", "5"], "--limit: only with --corruptions"),
    (["--corruptions", "--shift-tta"], "without test-time augmentation"),
])
def test_bad_requests_are_one_line_and_a_usage_error(small_run, capsys, argv, message):
    assert main(["evaluate", *argv, str(small_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_fashion_run_is_refused(small_run, tmp_path, capsys):
    other = tmp_path / "fashion"
    shutil.copytree(small_run, other)
    cfg = json.loads((other / checkpoint.CONFIG).read_text())
    (other / checkpoint.CONFIG).write_text(json.dumps({**cfg, "dataset": "fashion-mnist"}))
    assert main(["evaluate", "--corruptions", "--limit", "5", str(other)]) == 3  # a run it cannot use
    assert "corrupts MNIST's test digits" in capsys.readouterr().err
