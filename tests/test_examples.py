"""The 1-D and 3-D examples: their synthetic data, short training runs and the CLI command."""

import re

import numpy as np
import pytest

from cnnlab import examples as E
from cnnlab.cli import main


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("make, shape, n", [
    (E.make_sequences, (1, 128), 40),
    (E.make_volumes, (1, 16, 16, 16), 20),
])
def test_data_is_deterministic_balanced_and_shaped(make, shape, n):
    x, y = make(n, seed=3)
    assert x.shape == (n, *shape) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.bincount(y, minlength=4).tolist() == [n // 4] * 4
    assert _same(make(n, seed=3), (x, y))
    assert not np.array_equal(make(n, seed=4)[0], x)
    # Splits are drawn with [seed, split] seeds; they must differ from each other.
    assert not np.array_equal(make(n, seed=[3, 0])[0], make(n, seed=[3, 1])[0])


def test_sequence_motif_is_one_window_of_the_right_width():
    x, y = E.make_sequences(40, seed=1, noise=0.0)
    for signal in x[:, 0]:
        nonzero = np.flatnonzero(signal)
        # One contiguous motif 24-40 samples wide (a sine may touch zero inside, never outside).
        assert 24 - 2 <= nonzero[-1] - nonzero[0] + 1 <= 40
    pulses = x[y == 1, 0]
    assert all(np.ptp(p[p != 0]) < 1e-6 for p in pulses)  # square pulses are flat


def test_volume_shapes_are_what_their_labels_say():
    x, y = E.make_volumes(40, seed=2, noise=0.0)
    for vol, label in zip(x[:, 0], y):
        mask = vol > 0
        coords = np.argwhere(mask)
        extent = np.sort(coords.max(0) - coords.min(0) + 1)
        fill = mask.sum() / np.prod(extent)  # fraction of the bounding box that is filled
        centre = tuple(np.round(coords.mean(0)).astype(int))
        if label == 0:  # ball: solid at the centre, corners of its box empty
            assert mask[centre] and fill < 0.75
        elif label == 1:  # shell: hollow at the centre
            assert not mask[centre]
        elif label == 2:  # cube: fills its bounding box; sides equal up to one voxel of rounding
            assert fill == 1.0 and extent[2] - extent[0] <= 1
        else:  # rod: one long axis
            assert extent[2] >= 1.5 * extent[1]


def test_seq1d_short_run_beats_chance_and_is_reproducible():
    kwargs = dict(epochs=1, seed=0, n_train=1000, n_validation=200, n_test=400)
    lines = []
    result = E.run_example("seq1d", log=lines.append, **kwargs)
    assert set(result) >= {"name", "train_accuracy", "validation_accuracy", "test_accuracy", "seconds",
                           "parameters", "epochs"}
    assert result["name"] == "seq1d" and result["epochs"] == 1
    assert result["parameters"] == E.seq1d_model().num_parameters()
    # chance is 0.25; measured 0.8375 on the 400 test sequences (training through train.fit).
    # +-0.025 (10 sequences) for other machines' rounding; a model that learned nothing, or the
    # wrong thing, is far outside
    assert result["test_accuracy"] == pytest.approx(0.8375, abs=0.025)
    assert len(lines) == 2 and re.search(r"epoch +1/1", lines[0]) and "test accuracy" in lines[-1]
    again = E.run_example("seq1d", log=lambda _: None, **kwargs)
    for key in ("train_accuracy", "validation_accuracy", "test_accuracy"):
        assert again[key] == result[key]


def test_vol3d_short_run_beats_chance():
    result = E.run_example("vol3d", epochs=3, seed=0, n_train=400, n_validation=100, n_test=200,
                           log=lambda _: None)
    assert result["name"] == "vol3d" and result["epochs"] == 3
    # chance is 0.25; measured 0.77 on the 200 test volumes (training through train.fit; seeds 1
    # and 2 gave 0.685 and 0.26: three epochs on 400 volumes is short). +-0.04 (8 volumes) for
    # other machines' rounding over three epochs
    assert result["test_accuracy"] == pytest.approx(0.77, abs=0.04)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown example"):
        E.run_example("seq2d")
    with pytest.raises(ValueError, match="epochs"):
        E.run_example("seq1d", epochs=0)


def test_cli_example(capsys):
    assert main(["example", "seq1d", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "seq1d: test accuracy" in out and re.search(r"epoch +1/1", out)
