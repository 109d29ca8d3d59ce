"""cnnlab from scripts: `python -m cnnlab`, `--json` on stdout, one exit code per kind of outcome
(docs/scripting.md)."""

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

from cnnlab import models, recipes, runs
from cnnlab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny real run: the article's net, one epoch on 300 images, 1,000 held out for validation."""
    config = recipes.get("article").replace(epochs=1, train_size=300, validation=1000)
    return runs.train(config, out=tmp_path_factory.mktemp("runs") / "r", progress=False, log=None).dir


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "one.png"
    img = Image.new("L", (150, 200), 255)
    ImageDraw.Draw(img).line([(75, 30), (75, 170)], fill=0, width=16)
    img.save(path)
    return path


def json_out(capsys, argv, code=0):
    """The one JSON document a command prints, checked to be all of stdout."""
    assert main(argv) == code
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_python_dash_m_cnnlab_is_the_command():
    def cnnlab(*args):
        return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=120)

    done = cnnlab("models", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)["recipes"]] == recipes.names()
    done = cnnlab("--version")
    assert done.returncode == 0 and done.stdout.startswith("cnnlab ")
    done = cnnlab("summary")  # argparse: a usage line, exit 2, named as the command
    assert done.returncode == 2 and done.stderr.startswith("usage: cnnlab summary") and done.stdout == ""


def test_models_json(capsys):
    doc, _ = json_out(capsys, ["models", "--json"])
    assert [r["name"] for r in doc["recipes"]] == recipes.names() and doc["architectures"] == models.names()
    default = doc["recipes"][0]
    assert default["parameters"] == 317162 and isinstance(default["parameters"], int)
    assert {r["name"]: r["book_accuracy"] for r in doc["recipes"]}["nielsen-fc"] == recipes.describe(
        "nielsen-fc").book_accuracy


def test_summary_json_matches_the_text(capsys):
    doc, _ = json_out(capsys, ["summary", "article", "--json"])
    assert doc["name"] == "article" and doc["parameters"] == 4408 == sum(r["parameters"] for r in doc["layers"])
    assert doc["layers"][0] == {"index": 0, "layer": "Conv2d(1, 3, kernel_size=(5, 5), stride=(1, 1))",
                                "output_shape": [3, 24, 24], "parameters": 78, "runs_as": "ConvMaxPoolAct #0"}
    assert "share 78 parameters" in doc["shared_weights"]
    assert main(["summary", "article"]) == 0
    text = capsys.readouterr().out
    assert all(r["layer"] in text for r in doc["layers"]) and "total parameters: 4,408" in text


def test_evaluate_json(run_dir, capsys):
    doc, _ = json_out(capsys, ["evaluate", str(run_dir), "--json", "--no-progress"])
    (r,) = doc["runs"]
    assert r["run"] == str(run_dir) and r["model"] == "article" and r["dataset"] == "mnist"
    assert r["test"]["n"] == 10000 and r["validation"]["n"] == 1000
    assert r["test"]["correct"] == round(r["test"]["accuracy"] * 10000)
    assert r["test"]["accuracy"] == r["recorded_test_accuracy"] == runs.load(run_dir).test_accuracy
    assert doc["ensemble"] is None and doc["chosen"] is None and doc["tta"] == []
    # the text gives the same numbers
    assert main(["evaluate", str(run_dir), "--no-progress"]) == 0
    assert f"test accuracy {100 * r['test']['accuracy']:.2f}%" in capsys.readouterr().out
    # two copies of one run: an ensemble that scores as the run does, the vote chosen on a tie
    doc, _ = json_out(capsys, ["evaluate", str(run_dir), str(run_dir), "--shift-tta", "--json", "--no-progress"])
    assert doc["tta"] == ["shift"] and 0 <= doc["runs"][0]["test"]["tta_accuracy"] <= 1
    scores = {(s["tta"], s["method"]): s for s in doc["ensemble"]["scores"]}
    assert doc["ensemble"]["members"] == 2 and len(scores) == 4
    assert scores[(False, "plurality vote")]["test"] == r["test"]["accuracy"]
    assert doc["chosen"]["method"] == "plurality vote"


def test_predict_json_and_partial_failure(run_dir, digit, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    doc, err = json_out(capsys, ["predict", str(run_dir), str(digit), str(bad), "--json", "--top", "2"], code=1)
    good, broken = doc["images"]
    assert doc["classes"] == [str(d) for d in range(10)] and good["image"] == str(digit)
    assert good["label"] == doc["classes"][good["class"]] and len(good["top"]) == 2
    assert good["top"][0]["probability"] >= good["top"][1]["probability"] and good["probability"] == \
        good["top"][0]["probability"]
    assert broken["image"] == str(bad) and "notes.png" in broken["error"]
    assert err.count("\n") == 1 and "cnnlab predict: error:" in err  # the error is on stderr too
    assert main(["predict", str(run_dir), str(digit)]) == 0
    assert capsys.readouterr().out.startswith(f"{digit}: {good['label']}")


@pytest.mark.parametrize("argv, code, words", [
    (["predict"], 2, "the following arguments are required"),  # argparse
    (["train", "--epochs", "x"], 2, "invalid int value"),
    (["train", "--epochs", "0", "--dry-run"], 2, "--epochs must be at least 1"),  # a flag's value
    (["summary", "no-such-model"], 2, "unknown model 'no-such-model'"),
    (["show", "curves", "{run}", "--layer", "0"], 2, "--layer is only used by `show filters`"),
    (["ensemble", "article", "--seeds", "a-b"], 2, "seeds must look like 0-15"),
    (["example", "seq1d", "--epochs", "0"], 2, "--epochs must be at least 1"),
    (["evaluate", "{run}", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["evaluate", "{missing}", "--json"], 3, "no such run directory"),  # what the command line names
    (["predict", "{run}", "{missing}.png", "--json"], 3, "no such file"),  # no picture could be read
    (["evaluate", "{run}", "--mirror-tta"], 3, "not trained with --hflip"),
])
def test_exit_codes(run_dir, tmp_path, capsys, argv, code, words):
    argv = [a.format(run=run_dir, missing=tmp_path / "missing") for a in argv]
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse's own errors
        got = exc.code
    captured = capsys.readouterr()
    assert got == code and words in captured.err and captured.out == "", captured
    assert f"cnnlab {argv[0]}: error: " in captured.err and "Traceback" not in captured.err


def test_interrupted_is_130_and_a_diverged_training_1(run_dir, monkeypatch, capsys):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "load", stop)
    assert main(["evaluate", str(run_dir)]) == 130 and capsys.readouterr().err == "interrupted\n"

    def diverge(*args, **kwargs):
        raise FloatingPointError("training diverged: the train loss is nan in epoch 1, batch 3")

    monkeypatch.setattr(runs, "train", diverge)
    assert main(["train", "--dry-run", "--no-progress"]) == 1
    assert capsys.readouterr().err == "cnnlab train: error: training diverged: the train loss is nan in epoch 1, batch 3\n"


def test_a_reader_that_goes_away_is_141(monkeypatch):
    def gone(*args, **kwargs):
        raise BrokenPipeError

    monkeypatch.setattr("cnnlab.cli.summary.print_json", gone)
    monkeypatch.setattr(sys, "stdout", open(subprocess.os.devnull, "w"))  # main points stdout's fd at /dev/null
    assert main(["models", "--json"]) == 141
