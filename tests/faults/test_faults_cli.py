"""Fault cases as `cnnlab predict` meets them (issue 17): notes about animated pictures, pipes and
huge pictures as arguments, broken runs: a line on stderr each, never a traceback or a hang."""

import os

import numpy as np
import pytest
from faultkit import png_header, returns
from PIL import Image

from cnnlab import checkpoint, models
from cnnlab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An untrained article net as a run: predictions are arbitrary, the handling is what is tested."""
    path = tmp_path_factory.mktemp("runs") / "article"
    checkpoint.save_run(path, models.build("article"), models.spec("article"), {"dataset": "mnist"}, {})
    return path


def _digit(path):
    a = np.zeros((40, 40), np.uint8)
    a[8:32, 18:22] = 255
    Image.fromarray(a).save(path)
    return a


def test_predict_notes_the_frame_it_used(run, tmp_path, capsys):
    first = _digit(tmp_path / "still.png")
    frames = [Image.fromarray(first), Image.fromarray(255 - first)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert main(["predict", str(run), str(tmp_path / "anim.gif"), str(tmp_path / "still.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"cnnlab predict: note: {tmp_path / 'anim.gif'}: has 2 frames; the first is used"
    lines = captured.out.splitlines()
    assert lines[0].split(":")[1] == lines[1].split(":")[1]  # the first frame is the still picture


def test_predict_refuses_pipes_and_huge_pictures_and_goes_on(run, tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "huge.png").write_bytes(png_header(100_000, 100_000))
    _digit(tmp_path / "ok.png")
    argv = ["predict", str(run), str(tmp_path / "pipe.png"), str(tmp_path / "huge.png"), str(tmp_path / "ok.png")]
    assert returns(main, argv, fifo=tmp_path / "pipe.png") == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 2 and "Traceback" not in captured.err
    assert "pipe.png: is a named pipe (FIFO), not a regular file" in err[0]
    assert "huge.png: too many pixels" in err[1]
    assert captured.out.startswith(f"{tmp_path / 'ok.png'}: ")  # the good picture still gets its answer


@pytest.mark.parametrize("damage,match", [
    (lambda r: (r / "spec.json").write_text('{"name": "article", "kwargs": {"maps": 10000000}}'),
     "spec.json: kwargs.maps must be in 1..65536"),
    (lambda r: (r / "spec.json").write_text('["article"]'), "spec.json: must hold a JSON object"),
    (lambda r: ((r / "model.safetensors").unlink(), os.mkfifo(r / "model.safetensors")), "named pipe"),
])
def test_predict_with_a_broken_run_is_one_line(tmp_path, capsys, damage, match):
    r = tmp_path / "r"
    checkpoint.save_run(r, models.build("article"), models.spec("article"), {"dataset": "mnist"}, {})
    damage(r)
    _digit(tmp_path / "ok.png")
    assert returns(main, ["predict", str(r), str(tmp_path / "ok.png")], fifo=r / "model.safetensors") == 3
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err
