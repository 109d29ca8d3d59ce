"""cnnlab.distributed in one process: no MPI needed (tests/distributed/test_mpi.py runs two)."""

import json

import numpy as np
import pytest

from cnnlab import Tensor, backend, committee, distributed, nn, optim
from cnnlab import functional as F
from cnnlab.data import Augment, DataLoader, RowsOf, random_elastic, shard_rows
from cnnlab.train import fit


@pytest.mark.parametrize("total,count", [(0, 3), (5, 3), (64, 2), (63, 2), (7, 7), (100, 8)])
def test_shards_are_disjoint_contiguous_and_cover(total, count):
    rows = [shard_rows(total, r, count) for r in range(count)]
    assert rows[0][0] == 0 and rows[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))  # contiguous, disjoint, in rank order
    sizes = [e - s for s, e in rows]
    assert max(sizes) - min(sizes) <= 1


def test_sharded_batches_are_the_whole_batch_split_in_rows():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (203, 12, 12), dtype=np.uint8), np.arange(203)
    aug = Augment(max_shift=2, max_degrees=10, max_scale=0.1, hflip=True, erase=0.5, elastic=8.0)
    whole = list(DataLoader(images, labels, 40, seed=3, augment=aug))
    parts = [list(DataLoader(images, labels, 40, seed=3, augment=aug, shard=(r, 3))) for r in range(3)]
    seen = []
    for b, (x, y) in enumerate(whole):
        assert np.array_equal(np.concatenate([p[b][0] for p in parts]), x)
        assert np.array_equal(np.concatenate([p[b][1] for p in parts]), y)
        seen += [p[b][1] for p in parts]
    assert sorted(np.concatenate(seen)) == list(range(203))  # every image once per epoch
    loader = DataLoader(images, labels, 40, shard=(2, 3))
    assert len(loader) == 6 and loader.batch_rows(5) == (3, 2, 3)


def test_rows_of_refuses_a_draw_without_the_batch_first():
    rng = RowsOf(np.random.default_rng(0), 10, 4, 7)
    assert rng.random(3).shape == (3,)
    with pytest.raises(ValueError, match="batch first"):
        rng.uniform(size=(2, 3))


def test_elastic_draws_the_same_numbers_as_before():
    batch = np.random.default_rng(1).random((3, 1, 9, 9)).astype(np.float32)
    old = np.random.default_rng(5)  # the old single (2, N, H, W) draw of the fields
    new = random_elastic(batch, 6.0, 3.0, np.random.default_rng(5))
    field = 6.0 * (_gauss(9) @ old.uniform(-1.0, 1.0, size=(2, 3, 9, 9)) @ _gauss(9).T)
    from cnnlab.data import elastic_images

    assert np.array_equal(new, elastic_images(batch, field[0], field[1]))


def _gauss(n):
    from cnnlab.data import gaussian_matrix

    return gaussian_matrix(n, 3.0)


def test_dropout_masks_of_the_shards_are_the_whole_batch_mask():
    x = Tensor(np.ones((10, 6), np.float32))
    backend.manual_seed(4)
    whole = F.dropout(x, 0.5).data
    parts = []
    for start, stop in ((0, 4), (4, 7), (7, 10)):
        backend.manual_seed(4)
        backend.set_batch_rows((10, start, stop))
        try:
            parts.append(F.dropout(Tensor(np.ones((stop - start, 6), np.float32)), 0.5).data)
        finally:
            backend.set_batch_rows(None)
    assert np.array_equal(np.concatenate(parts), whole)


def test_one_process_world_without_a_launcher(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.init()
    assert (world.rank, world.size, world.lead) == (0, 1, True)
    a = np.arange(3.0)
    assert world.allreduce(a) is a and world.broadcast(a) is a
    assert distributed.map_tasks(lambda t: t * t, [1, 2, 3], world) == [1, 4, 9]
    monkeypatch.setenv("PMI_SIZE", "4")
    assert distributed.launched_size() == 4


def test_sync_batch_norm_in_one_process_is_batch_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4, 4))
    plain = nn.Sequential(nn.BatchNorm2d(3)).double()
    synced = nn.Sequential(nn.BatchNorm2d(3)).double()
    assert distributed.convert_sync_batchnorm(synced, distributed.local()) == 1
    assert list(synced.state_dict()) == list(plain.state_dict())  # the same names: runs save alike
    outs = []
    for model in (plain, synced):
        xt = Tensor(x.copy(), requires_grad=True)
        out = model(xt)
        (out * Tensor(np.arange(out.size, dtype=np.float64).reshape(out.shape))).sum().backward()
        outs.append((out.data, xt.grad.data, model.layers[0].weight.grad.data, model.state_dict()["0.running_var"].data))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert distributed.revert_sync_batchnorm(synced) == 1 and type(synced.layers[0]) is nn.BatchNorm2d


def test_data_parallel_of_one_process_is_plain_training():
    rng = np.random.default_rng(0)
    x, y = rng.random((90, 1, 6, 6)), rng.integers(0, 3, 90)

    def run(parallel):
        backend.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                              nn.Linear(8, 3)).double()
        dp = distributed.DataParallel(model, distributed.local()) if parallel else None
        loader = DataLoader(x, y, 32, dtype=np.float64, shard=(0, 1) if parallel else None)
        fit(model, optim.SGD(model.parameters(), lr=0.1), dp.loader(loader) if dp else loader, 2, progress=False,
            log=None, parallel=dp)
        return model.state_dict()

    a, b = run(False), run(True)
    assert max(float(np.abs(a[k].data - b[k].data).max()) for k in a) < 1e-12


def test_parse_seeds():
    assert committee.parse_seeds("0-3,7,2") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError):
        committee.parse_seeds("a-b")


@pytest.mark.parametrize("compiled", [True, False])
def test_sync_batch_norm_relu_matches_the_fused_kernel(compiled):
    from cnnlab import kernels

    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4, 5, 5)).astype(np.float32)
    results = []
    for sync in (False, True):
        model = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())
        model.layers[0].weight.data[...] = rng.normal(size=4).astype(np.float32) if not results else results[0][3]
        if sync:
            distributed.convert_sync_batchnorm(model, distributed.local())
        with kernels.compiled(compiled if sync else True):  # the reference: the one-process fused kernel
            xt = Tensor(x.copy(), requires_grad=True)
            out = model(xt)
            (out * Tensor(np.linspace(-1, 1, out.size, dtype=np.float32).reshape(out.shape))).sum().backward()
        results.append((out.data, xt.grad.data, model.layers[0].weight.grad.data,
                        model.layers[0].weight.data.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)


def test_messages_between_processes_round_trip_without_pickle():
    from cnnlab.distributed.world import pack, unpack

    obj = (3, {"seed": 1, "probabilities": {"test": np.arange(6, dtype=np.float32).reshape(2, 3)},
               "state": {"0.weight": np.ones((2, 2), np.float64)}, "spec": {"name": "fast", "kwargs": {}},
               "keys": {1: "a"}, "raw": b"\x00\xff", "n": np.int64(5), "none": None, "list": [1.5, "x"]})
    back = unpack(pack(obj))
    assert back[0] == 3 and back[1]["keys"] == {1: "a"} and back[1]["raw"] == b"\x00\xff"
    np.testing.assert_array_equal(back[1]["probabilities"]["test"], obj[1]["probabilities"]["test"])
    assert back[1]["probabilities"]["test"].dtype == np.float32 and back[1]["n"] == 5
    assert back[1]["spec"] == {"name": "fast", "kwargs": {}} and back[1]["list"] == [1.5, "x"]
    assert isinstance(json.loads(pack(obj)), dict)  # plain JSON: reading it runs no code
    with pytest.raises(Exception, match="cannot send a set"):
        pack({"bad": {1, 2}})
