"""Fault cases of the autograd: no silently wrong or missing gradient, and errors that name the
operator and the shapes (issue 17: in-place changes after use, a second backward through a freed
graph, 0-d softmax, an empty batch)."""

import numpy as np
import pytest

import cnnlab
from cnnlab import functional as F
from cnnlab import models, nn, optim
from cnnlab.autograd import Tensor

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def leaf(values, **kw):
    return cnnlab.tensor(np.asarray(values, dtype=np.float64), requires_grad=True, **kw)


# ----------------------------------------------------------------------------- in-place changes
def _change_data_in_place(w):
    w.data -= 1.0  # the manual SGD step of micrograd-style code


def _change_with_setitem(w):
    with cnnlab.no_grad():
        w[0] = 5.0


def _change_with_add_(w):
    with cnnlab.no_grad():
        w.add_(1.0)


def _change_with_zero_(w):
    with cnnlab.no_grad():
        w.zero_()


def _change_with_sgd_step(w):  # the compiled (fused) SGD path writes into w.data
    w.grad = cnnlab.tensor(np.ones(w.shape))
    optim.SGD([w], lr=0.1, momentum=0.9).step()


def _change_with_adam_step(w):
    w.grad = cnnlab.tensor(np.ones(w.shape))
    optim.Adam([w], lr=0.1).step()


@pytest.mark.parametrize("change", [_change_data_in_place, _change_with_setitem, _change_with_add_,
                                    _change_with_zero_, _change_with_sgd_step, _change_with_adam_step])
def test_changing_a_saved_input_in_place_makes_backward_raise(change):
    w = leaf([1.0, 2.0, 3.0])
    loss = (w * w).sum()  # Mul saved w
    before = w.version
    change(w)
    assert w.version > before
    with pytest.raises(RuntimeError, match=r"Mul needs input \d of 2 \(shape \(3,\), float64\).*changed in place"):
        loss.backward()
    assert w.grad is None or change in (_change_with_sgd_step, _change_with_adam_step)


def test_changing_an_output_a_backward_uses_raises_naming_its_operator():
    x = leaf([0.0, 1.0])
    y = x.exp()  # Exp's backward uses its output
    with cnnlab.no_grad():
        y[0] = 100.0
    with pytest.raises(RuntimeError, match="Exp needs its output"):
        y.sum().backward()


def test_torch_raises_in_the_same_case():
    if torch is None:
        pytest.skip("PyTorch not installed")
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = (w * w).sum()
    with torch.no_grad():
        w.sub_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_in_place_changes_that_do_no_harm_pass():
    w = leaf([1.0, 2.0])
    (w * w).sum().backward()
    w.data -= 0.1 * w.grad.data  # after backward: the graph is gone, nothing to spoil
    w.grad = None
    (w * 3).sum().backward()  # a new graph sees the new version
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0])
    other = leaf([1.0])
    loss = (w * 2).sum()
    other.data += 1  # not in the graph
    loss.backward()
    w.data = w.data - 1.0  # a new array: what the graph saved is untouched
    assert w.version == 1


def test_a_training_loop_never_trips_the_check():
    model = models.build("article")
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = cnnlab.tensor(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))
    y = np.array([0, 1, 2, 3])
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_in_place_on_a_tensor_that_requires_grad_needs_no_grad():
    w = leaf([1.0, 2.0])
    for change in (lambda: w.__setitem__(0, 1.0), w.zero_, lambda: w.add_(1), lambda: w.mul_(2),
                   lambda: w.fill_(0), lambda: w.copy_(np.zeros(2))):
        with pytest.raises(RuntimeError, match="requires grad.*no_grad"):
            change()
    assert w.version == 0 and w.tolist() == [1.0, 2.0]


def test_in_place_methods_change_values_like_torch():
    t = cnnlab.tensor(np.arange(4.0))
    t.add_(1).mul_(2).sub_(1, alpha=2).div_(2)
    t[1] = -1.0
    t[cnnlab.tensor(np.array([2]))] = 9.0
    np.testing.assert_array_equal(t.numpy(), [0.0, -1.0, 9.0, 3.0])
    assert t.version == 6
    t.copy_(np.ones(4)).fill_(2.0)
    np.testing.assert_array_equal(t.numpy(), np.full(4, 2.0))


# ----------------------------------------------------------------------------- freed graphs
def test_second_backward_through_a_freed_graph_names_retain_graph():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"second time \(at Sum\).*retain_graph=True"):
        loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])  # not accumulated twice


def test_backward_through_a_shared_part_freed_by_another_backward():
    x = leaf([1.0, 2.0])
    h = x * x  # shared
    (h * 2).sum().backward()
    with pytest.raises(RuntimeError, match=r"second time \(at Mul\).*retain_graph"):
        (h * 3).sum().backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])
    assert not loss.is_leaf  # a freed node stays a non-leaf, as in PyTorch


# ----------------------------------------------------------------------------- 0-d and empty inputs
def test_softmax_of_a_0d_tensor_is_one_like_torch():
    x = leaf(2.0)
    y = F.softmax(x)
    assert y.shape == () and y.item() == 1.0
    y.backward()
    assert x.grad.item() == 0.0
    assert F.log_softmax(leaf(2.0), 0).item() == 0.0
    if torch is not None:
        assert torch.softmax(torch.tensor(2.0), 0).item() == 1.0


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("shape,dim", [((), 1), ((), -2), ((2, 3), 2), ((2, 3), -3)])
def test_softmax_dim_out_of_range_names_operator_and_shape(fn, shape, dim):
    with pytest.raises(IndexError, match=rf"{fn.__name__}: dim {dim} is out of range for a tensor of shape "
                                         rf"\({', '.join(map(str, shape))}"):
        fn(cnnlab.tensor(np.zeros(shape)), dim)


def test_reductions_check_dims_and_empty_maxima():
    x = cnnlab.tensor(np.zeros((2, 3)))
    with pytest.raises(IndexError, match=r"sum: dim 2 is out of range .*\(2, 3\)"):
        x.sum(2)
    assert cnnlab.tensor(3.0).mean(0).item() == 3.0  # 0-d: dim 0 and -1 reduce the one element
    with pytest.raises(ValueError, match=r"amax: reduces an empty dimension of shape \(0, 3\)"):
        cnnlab.tensor(np.zeros((0, 3))).amax(0)
    assert cnnlab.tensor(np.zeros((0, 3))).amax(1).shape == (0,)  # as torch


def test_reshape_errors_name_shapes():
    with pytest.raises(ValueError, match=r"reshape: cannot make a tensor of shape \(0, 3\).*ambiguous"):
        cnnlab.tensor(np.zeros((0, 3))).reshape(-1, 0)
    with pytest.raises(ValueError, match=r"reshape: .*shape \(2, 3\) \(6 elements\) into shape \(4,\)"):
        cnnlab.tensor(np.zeros((2, 3))).reshape(4)


@pytest.mark.parametrize("name", ["article", "lenet5", "nielsen-conv2", "cs231n"])
def test_an_empty_batch_gives_an_empty_output_like_torch(name):
    model = models.build(name)
    x = Tensor(np.zeros((0, 1, 28, 28), np.float32))
    for mode in ("eval", "train"):
        getattr(model, mode)()
        out = model(x)
        assert out.shape == (0, 10)
    (out * 1.0).sum().backward()  # a graph with an empty batch backpropagates
    assert all(p.grad is None or np.all(p.grad.numpy() == 0) for p in model.parameters())


def test_layers_with_an_empty_batch():
    x = Tensor(np.zeros((0, 3, 8, 8), np.float32))
    assert F.conv2d(x, cnnlab.tensor(np.ones((4, 3, 3, 3), np.float32))).shape == (0, 4, 6, 6)
    assert F.flatten(x, 1).shape == (0, 192)
    assert F.linear(F.flatten(x, 1), cnnlab.tensor(np.ones((5, 192), np.float32))).shape == (0, 5)


def test_batch_norm_training_on_an_empty_batch_names_the_operator():
    model = models.build("fast").train()
    with pytest.raises(ValueError, match=r"batch_norm.*\(0, 32, 12, 12\)"):
        model(Tensor(np.zeros((0, 1, 28, 28), np.float32)))


@pytest.mark.parametrize("case", ["fast", "alexnet", "max_pool2d"])
def test_an_empty_batch_through_kernel_paths(case):
    x = Tensor(np.zeros((0, 1, 28, 28), np.float32))
    if case == "max_pool2d":
        assert F.max_pool2d(x, 2).shape == (0, 1, 14, 14)
    else:  # the layers as written, and fused as runs.train and evaluate run them
        assert models.build(case).eval()(x).shape == (0, 10)
        assert nn.fuse(models.build(case)).eval()(x).shape == (0, 10)
