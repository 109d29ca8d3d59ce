"""`cnnlab show convert PICTURE`: every step of a picture's conversion in one PNG, drawn as far as
it got when the picture holds no digit."""

import numpy as np
from PIL import Image

from cnnlab import viz
from cnnlab.cli import main
from cnnlab.data import load_mnist
from photos import mnist_ink, photograph


def test_show_convert_draws_a_photo_and_a_refused_picture(tmp_path, capsys, monkeypatch):
    photo = tmp_path / "seven.png"
    photograph(mnist_ink(load_mnist().test_images[0]), "vignette", np.random.default_rng(0)).save(photo)
    monkeypatch.chdir(tmp_path)
    assert main(["show", "convert", str(photo)]) == 0
    out = tmp_path / "seven-convert.png"
    assert capsys.readouterr().out.strip() == "seven-convert.png" and Image.open(out).size == viz.png_size("convert")
    Image.new("L", (90, 70), 200).save(tmp_path / "blank.png")
    assert main(["show", "convert", str(tmp_path / "blank.png"), "--out", str(tmp_path / "b.png")]) == 0
    assert Image.open(tmp_path / "b.png").size == viz.png_size("convert")
    fig = viz.draw_conversion(tmp_path / "blank.png")
    assert "no digit found" in fig._suptitle.get_text()
    capsys.readouterr()
    assert main(["show", "convert", str(tmp_path / "missing.png")]) == 3  # bad input
    assert "no such picture file" in capsys.readouterr().err
    assert main(["show", "curves", str(tmp_path), "--run", str(tmp_path)]) == 2
    assert "--run is only used by `show convert`" in capsys.readouterr().err
