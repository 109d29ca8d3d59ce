"""The speedrun recipe (cnnlab.speedrun) and `cnnlab speedrun`: it trains, is deterministic, checks
its settings; what it measures is reported, never asserted (benchmarks/time_to_99.py)."""

import json

import numpy as np
import pytest

from cnnlab import speedrun
from cnnlab.cli import main
from cnnlab.data import MNIST_MEAN, MNIST_STD
from cnnlab.errors import SettingError


@pytest.fixture(scope="module")
def small_data():
    d = speedrun.load_data()
    # 2,048 training images, 2,000 test images: enough to see learning, quick on two cores
    return speedrun.SpeedrunData(d.train_x[:2048], d.train_y[:2048], d.test_x[:2000], d.test_y[:2000])


def test_net_shapes_and_parameter_count():
    net = speedrun.speedrun_net(16, 32, 128)
    n = sum(p.data.size for p in net.parameters())
    # conv 16*25+16, bn 2*16, conv 32*16*9+32, bn 2*32, fc 800*128+128, fc 128*10+10
    assert n == (416 + 32) + (4640 + 64) + 102528 + 1290
    from cnnlab import Tensor
    assert net(Tensor(np.zeros((3, 1, 28, 28), np.float32))).shape == (3, 10)


def test_normalise_matches_the_loaders_statistics():
    img = np.array([[[0, 255]]], dtype=np.uint8)
    x = speedrun.normalise(img)
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], [(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)


def test_run_learns_and_is_deterministic(small_data):
    cfg = speedrun.SpeedrunConfig(train_size=1024, batch_size=128)
    speedrun.warm_up(cfg, small_data)
    a = speedrun.run(cfg, small_data, seed=3)
    b = speedrun.run(cfg, small_data, seed=3)
    assert a.accuracy == b.accuracy  # same seed, same bits
    assert a.accuracy > 0.4, a.accuracy  # 8 steps from chance (0.1)
    assert a.seconds >= a.train_seconds > 0 and a.eval_seconds > 0
    # the accuracy is the trained model's on the test images, recomputed independently
    model = speedrun.train(cfg, small_data, seed=3)
    model.eval()
    from cnnlab import Tensor, no_grad
    with no_grad():
        pred = model(Tensor(small_data.test_x)).data.argmax(1)
    assert a.accuracy == float(np.mean(pred == small_data.test_y))


def test_summary():
    rs = [speedrun.SpeedrunResult(s, t, t - 0.1, 0.1, acc, 2 * t) for s, t, acc in
          ((0, 3.0, 0.991), (1, 5.0, 0.993), (2, 4.0, 0.989))]
    s = speedrun.summary(rs)
    assert s["median_seconds"] == 4.0 and s["max_seconds"] == 5.0 and s["min_accuracy"] == 0.989


@pytest.mark.parametrize("change", [{"c1": 0}, {"batch_size": 2.5}, {"max_lr": 0}, {"pct_start": 1.0},
                                   {"label_smoothing": 1.0}, {"train_size": True}, {"translate": 9},
                                   {"translate": -1}, {"translate": True}])
def test_bad_settings_are_named(change):
    with pytest.raises(SettingError) as e:
        speedrun.SpeedrunConfig(**change)
    assert e.value.setting == next(iter(change))


def test_batches_follow_the_pass_order_and_shift_with_the_background(small_data):
    cfg = speedrun.SpeedrunConfig(train_size=300, batch_size=128)
    plain = list(speedrun.batches(cfg, small_data, seed=2))
    order = speedrun.pass_order(len(small_data.train_x), 300, seed=2)
    assert [len(y) for _, y in plain] == [128, 128, 44]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain]), small_data.train_x[order])
    shifted = list(speedrun.batches(speedrun.SpeedrunConfig(train_size=300, batch_size=128, translate=2),
                                    small_data, seed=2))
    background = np.float32(-MNIST_MEAN / MNIST_STD)
    moved = 0
    for (x, y), (x0, y0) in zip(shifted, plain):
        np.testing.assert_array_equal(y, y0)
        for a, b in zip(x[:, 0], x0[:, 0]):
            # a is b moved by (dy, dx), |dy|, |dx| <= 2, the uncovered border the background
            found = False
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    ref = np.full_like(b, background)
                    ref[max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
                        b[max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)]
                    found = found or np.allclose(a, ref, atol=1e-6)
            assert found
            moved += not np.array_equal(a, b)
    assert moved > 200  # most images moved (a few draw dy = dx = 0)


def test_pass_order_sees_every_image_once_per_pass():
    order = speedrun.pass_order(10, 25, seed=1)
    assert len(order) == 25
    for p in range(2):
        assert sorted(order[10 * p:10 * (p + 1)]) == list(range(10))
    assert len(set(order[20:])) == 5
    assert list(speedrun.pass_order(10, 7, seed=1)) == list(order[:7])


@pytest.mark.parametrize("argv, word", [(["--seeds", "x"], "--seeds"), (["--c1", "0"], "--c1"),
                                         (["--target", "2"], "--target"), (["--batch-size", "0"], "--batch-size")])
def test_cli_bad_arguments_one_line(capsys, argv, word):
    assert main(["speedrun"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0] and err[0].startswith("cnnlab speedrun: error:")


def test_cli_runs_and_writes_json(capsys, tmp_path):
    out = tmp_path / "r.json"
    rc = main(["speedrun", "--seeds", "0", "--train-size", "1024", "--batch-size", "128", "--target", "0.2",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "seed 0:" in text and "median" in text
    saved = json.loads(out.read_text())
    assert saved["config"]["train_size"] == 1024 and len(saved["results"]) == 1
    assert saved["results"][0]["accuracy"] >= 0.2


def test_cli_exit_code_1_when_a_seed_misses(capsys, monkeypatch):
    def fake_run(config, data, seed):
        return speedrun.SpeedrunResult(seed, 1.0, 0.9, 0.1, 0.5 if seed else 0.995, 1.0)
    monkeypatch.setattr(speedrun, "run", fake_run)
    monkeypatch.setattr(speedrun, "warm_up", lambda config, data: 0.0)
    assert main(["speedrun", "--seeds", "0,1"]) == 1
    assert "NOT every seed" in capsys.readouterr().out
    assert main(["speedrun", "--seeds", "0"]) == 0


def test_help_lists_the_command_and_its_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "speedrun" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["speedrun", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 40000)" in out and "(default: 0,1,2,3,4)" in out and "(default: 16)" in out
