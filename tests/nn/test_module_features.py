"""ModuleList, register_buffer and forward hooks, with PyTorch's names and rules, and hooks in models
that nn.fuse fused."""

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import nn

T = torch.nn


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)])
        self.register_buffer("scale", cnnlab.tensor(np.full(2, 3.0, np.float32)))
        self.register_buffer("scratch", cnnlab.zeros(5), persistent=False)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x * self.scale


class TorchBlocks(T.Module):
    def __init__(self):
        super().__init__()
        self.blocks = T.ModuleList([T.Linear(4, 4), T.ReLU(), T.Linear(4, 2)])
        self.register_buffer("scale", torch.full((2,), 3.0))
        self.register_buffer("scratch", torch.zeros(5), persistent=False)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x * self.scale


def test_module_list_and_buffers_name_and_compute_as_torch():
    ours, theirs = Blocks(), TorchBlocks()
    # the same names (cnnlab lists every parameter before the buffers; PyTorch goes module by module)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict()) == [
        "blocks.0.bias", "blocks.0.weight", "blocks.2.bias", "blocks.2.weight", "scale"]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()] == ["scale", "scratch"]
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(cnnlab.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6)
    assert len(ours.blocks) == 3 and isinstance(ours.blocks[1], nn.ReLU)
    assert isinstance(ours.blocks[1:], nn.ModuleList) and len(ours.blocks[1:]) == 2
    ours.blocks.append(nn.Identity()).extend([nn.Identity()])
    ours.blocks.insert(0, nn.Identity())
    assert len(ours.blocks) == 6 and list(ours.state_dict())[0] == "blocks.1.weight"
    with pytest.raises(TypeError, match="ModuleList: item 6 is a int, not a Module"):
        ours.blocks.append(3)
    with pytest.raises(NotImplementedError, match="iterate"):
        ours.blocks(cnnlab.tensor(x))


def test_buffers_move_with_the_model_and_are_not_trained():
    m = Blocks()
    assert all(p is not m.scale for p in m.parameters()) and not m.scale.requires_grad
    m.double()
    assert m.scale.dtype == np.float64 and m.scratch.dtype == np.float64  # cast with the model
    state = {k: v.numpy() * 2 for k, v in m.state_dict().items()}
    m.load_state_dict(state)
    np.testing.assert_array_equal(m.scale.numpy(), [6.0, 6.0])
    with pytest.raises(ValueError, match="missing: scale"):
        m.load_state_dict({k: v for k, v in state.items() if k != "scale"})
    m.register_buffer("scratch", m.scratch)  # persistent again
    assert "scratch" in m.state_dict()
    m.register_buffer("nothing", None)
    assert "nothing" not in m.state_dict()
    with pytest.raises(KeyError, match="already exists and is not a buffer"):
        m.register_buffer("blocks", cnnlab.zeros(1))
    with pytest.raises(TypeError, match="must be a Tensor"):
        m.register_buffer("arr", np.zeros(2))
    with pytest.raises(KeyError, match="without '.'"):
        m.register_buffer("a.b", cnnlab.zeros(1))


def test_forward_hooks_follow_torchs_rules():
    ours, theirs = Blocks(), TorchBlocks()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    seen = {}
    for name, model, wrap in (("ours", ours, cnnlab.tensor), ("torch", theirs, torch.tensor)):
        calls = []
        h1 = model.blocks[0].register_forward_hook(lambda m, args, out, c=calls: c.append(("post", out)))
        h2 = model.blocks[0].register_forward_pre_hook(lambda m, args, c=calls: c.append(("pre", args[0])))
        h3 = model.blocks[1].register_forward_hook(lambda m, args, out: out * 0)  # replaces the output
        h4 = model.blocks[2].register_forward_pre_hook(lambda m, args: args[0] + 1)  # replaces the input
        out = model(wrap(x))
        seen[name] = (np.asarray(out.detach()), [(k, np.asarray(v.detach())) for k, v in calls])
        for h in (h1, h2, h3, h4):
            h.remove()
        h1.remove()  # twice is harmless
        before = len(calls)
        model(wrap(x))
        assert len(calls) == before  # removed
    (o1, c1), (o2, c2) = seen["ours"], seen["torch"]
    np.testing.assert_allclose(o1, o2, rtol=1e-6)
    assert [k for k, _ in c1] == [k for k, _ in c2] == ["pre", "post"]
    for (_, a), (_, b) in zip(c1, c2):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not ours.blocks[0].has_forward_hooks()
    with ours.register_forward_hook(lambda m, a, o: None) as handle:
        assert ours.has_forward_hooks() and isinstance(handle, nn.RemovableHandle)
    assert not ours.has_forward_hooks()
    with pytest.raises(TypeError, match="hook must be callable"):
        ours.register_forward_hook(3)


@pytest.mark.parametrize("when", ["before fuse", "after fuse"])
def test_hooks_fire_in_fused_models(when):
    """A hooked layer inside a fused run: the fused module runs its layers one by one as written, so
    the hook sees its own layer's output, the same as in the unfused model."""
    cnnlab.manual_seed(0)
    conv, act, pool = nn.Conv2d(1, 3, 3), nn.Tanh(), nn.MaxPool2d(2)
    model = nn.Sequential(conv, act, pool, nn.Flatten(), nn.Linear(27, 4))
    x = cnnlab.tensor(np.random.default_rng(2).standard_normal((2, 1, 8, 8)).astype(np.float32))
    want_act, want_out = act(conv(x)).numpy(), model(x).numpy()
    got = []
    if when == "before fuse":
        handle = act.register_forward_hook(lambda m, a, o: got.append(o.numpy()))
        fused = nn.fuse(model)
    else:
        fused = nn.fuse(model)
        handle = act.register_forward_hook(lambda m, a, o: got.append(o.numpy()))
    assert isinstance(fused[0], nn.ConvMaxPoolAct) and fused[0].written() == [conv, act, pool]
    np.testing.assert_allclose(fused(x).numpy(), want_out, rtol=1e-5, atol=1e-6)
    assert len(got) == 1
    np.testing.assert_array_equal(got[0], want_act)  # the tanh's own output: before the pool, as written
    handle.remove()
    np.testing.assert_allclose(fused(x).numpy(), want_out, rtol=1e-5, atol=1e-6)  # fused path again
    assert len(got) == 1
