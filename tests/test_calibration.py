"""Temperature scaling (fitted on validation, stored in the run) and what `cnnlab predict` flags:
"not confident", and "not a digit?" for a line and a smudge but not for real digits."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab import calibration, checkpoint, runs
from cnnlab.cli import main
from cnnlab.data import load_mnist, shape_doubt, to_mnist_form


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 10))
    p = calibration.softmax(logits, 2.5)
    labels = np.array([rng.choice(10, p=row) for row in p])
    t = calibration.fit_temperature(logits, labels)
    assert abs(t - 2.5) < 0.2
    # the NLL is lowest there, and ECE of the true probabilities is small, of the raw ones large
    assert calibration.nll(logits, labels, t) < min(calibration.nll(logits, labels, t * 1.3),
                                                    calibration.nll(logits, labels, t / 1.3))
    assert calibration.expected_calibration_error(calibration.softmax(logits, t), labels) < 0.03
    assert calibration.expected_calibration_error(calibration.softmax(logits), labels) > 0.1
    with pytest.raises(ValueError, match="N > 0"):
        calibration.fit_temperature(np.zeros((0, 10)), np.zeros(0))


def test_ece_by_hand():
    # two bins used: confidence 0.9 right 1 of 2 (gap 0.4), confidence 0.6 right 2 of 2 (gap 0.4)
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert calibration.expected_calibration_error(p, np.array([0, 1, 1, 1]), bins=10) == pytest.approx(0.4)


def test_flags():
    assert calibration.flag(np.array([0.95, 0.05])) is None
    assert calibration.flag(np.array([0.6, 0.4])).startswith("not confident")
    assert calibration.flag(np.array([0.99, 0.01]), "a smudge?") == "not a digit? (a smudge?)"


def _line(path):
    img = Image.new("L", (200, 150), 235)
    ImageDraw.Draw(img).line([(30, 80), (170, 70)], fill=20, width=6)
    img.save(path)
    return path


def _smudge(path):
    img = Image.new("L", (200, 150), 235)
    ImageDraw.Draw(img).ellipse([(70, 45), (130, 105)], fill=60)
    img.save(path)
    return path


def test_a_line_and_a_smudge_are_no_digits_and_mnist_digits_are(tmp_path):
    assert "line" in shape_doubt(to_mnist_form(_line(tmp_path / "line.png")))
    assert "smudge" in shape_doubt(to_mnist_form(_smudge(tmp_path / "smudge.png")))
    test = load_mnist().test_images[:1000]
    flagged = sum(shape_doubt(img) is not None for img in test)
    assert flagged <= 3  # MNIST's own digits: 0.05% of the training set has a doubtful shape


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    from helpers import save_short_run

    return save_short_run(tmp_path_factory.mktemp("runs") / "r", "default", 1000, nesterov=True)


def test_calibrate_stores_the_temperature_and_predict_uses_it(short_run, tmp_path, capsys):
    assert runs.temperature(short_run) == 1.0  # an old run: as the network gives them
    assert main(["calibrate", str(short_run)]) == 0  # runs.calibrate
    assert "temperature" in capsys.readouterr().out
    record = json.loads((short_run / checkpoint.CALIBRATION).read_text())
    assert record["temperature"] == runs.temperature(short_run) > 0 and record["images"] == 10000
    assert record["nll_calibrated"] <= record["nll"] + 1e-12
    assert checkpoint.CALIBRATION not in (checkpoint.read_manifest(short_run) or {}).get("files", {})  # none: old run
    line, smudge = _line(tmp_path / "line.png"), _smudge(tmp_path / "smudge.png")
    assert main(["predict", str(short_run), str(line), str(smudge)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "[not a digit? (wider than any digit" in out[0] and "[not a digit? (a solid blob" in out[1]
    assert main(["show", "convert", str(line), "--run", str(short_run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0
    (short_run / checkpoint.CALIBRATION).write_text('{"temperature": -1}')
    assert main(["predict", str(short_run), str(line)]) == 3  # a run it cannot use: bad input
    assert "temperature" in capsys.readouterr().err


def test_training_calibrates_a_finished_run(tmp_path):
    config = runs.TrainConfig(model="default", epochs=1, train_size=500, validation=1000, batch_size=64)
    run = runs.train(config, out=tmp_path / "r", progress=False, log=None)
    manifest = checkpoint.read_manifest(run.dir)
    assert checkpoint.CALIBRATION in manifest["files"] and manifest["status"] == "finished"
    assert runs.load(run.dir) and runs.temperature(run.dir) > 0
    again = runs.calibrate(run.dir)  # calibrating again rewrites the file and its checksum in the manifest
    after = checkpoint.read_manifest(run.dir)
    assert after["status"] == "finished" and after["epochs_done"] == manifest["epochs_done"]
    assert runs.temperature(run.dir) == again["temperature"] and again["images"] == 1000
    (run.dir / checkpoint.CALIBRATION).write_text('{"temperature": 2.0}')  # changed behind the manifest's back
    with pytest.raises(checkpoint.RunError, match="calibration.json"):
        runs.temperature(run.dir)
