"""Optimizers and learning-rate schedulers: against PyTorch, by hand, and their plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import nn, optim
from helpers import cuda

SHAPES = [(4, 3, 3, 3), (4,), (5, 7)]  # a conv weight, a bias, a linear weight


# ----------------------------------------------------------------------------- helpers
def _inits(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grad_stream(dtype, steps, seed=2):
    """Random gradients whose scale changes from step to step (so AMSGrad's max matters)."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(dtype) for s in SHAPES]
            for _ in range(steps)]


def _params(arrays):
    return [nn.Parameter(a.copy()) for a in arrays]


def _feed(params, grads):
    for p, g in zip(params, grads):
        p.grad = cnnlab.Tensor(g.copy())


def _compare_with_torch(name, kwargs, dtype, rtol, atol, steps=10):
    inits = _inits(dtype)
    ours = _params(inits)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in inits]
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    for grads in _grad_stream(dtype, steps):
        _feed(ours, grads)
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            assert p.data.dtype == dtype
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=rtol, atol=atol)
    return opt


# ----------------------------------------------------------------------------- vs PyTorch
TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, alpha=0.9, eps=1e-6, weight_decay=0.1)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9)),
    ("RMSprop", dict(lr=1e-2, centered=True)),
    ("RMSprop", dict(lr=5e-3, alpha=0.95, weight_decay=0.01, momentum=0.8, centered=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("Adam", dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("name,kwargs", TORCH_CASES, ids=[f"{n}-{k}" for n, k in TORCH_CASES])
def test_matches_torch_float64(name, kwargs):
    _compare_with_torch(name, kwargs, np.float64, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=0.01)),
    ("Adam", dict(lr=1e-2, weight_decay=0.01, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
])
def test_matches_torch_float32_and_stays_float32(name, kwargs):
    opt = _compare_with_torch(name, kwargs, np.float32, rtol=1e-5, atol=1e-6)
    for st in opt.state_dict()["state"].values():
        for v in st.values():
            if isinstance(v, np.ndarray):
                assert v.dtype == np.float32


def test_float32_update_from_numpy_float64_hyperparameters_stays_float32():
    p = nn.Parameter(np.ones((2, 3), dtype=np.float32))
    opt = optim.Adam([p], lr=np.float64(0.1), betas=(np.float64(0.9), np.float64(0.99)))
    p.grad = cnnlab.Tensor(np.ones((2, 3), dtype=np.float64))  # even a float64 gradient
    opt.step()
    assert p.data.dtype == np.float32
    assert all(v.dtype == np.float32 for v in opt.state[p].values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, False), (0.0, True), (0.7, True)])
def test_rmsprop_by_hand(momentum, centered):
    """The update written out one number at a time (cs231n's RMSProp rule, with torch's options)."""
    lr, alpha, eps, wd = 0.01, 0.9, 1e-8, 0.05
    inits = _inits(np.float64)
    params = _params(inits)
    opt = optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=momentum,
                        centered=centered)
    ref = [a.ravel().tolist() for a in inits]
    sq = [[0.0] * len(r) for r in ref]
    avg = [[0.0] * len(r) for r in ref]
    buf = [[0.0] * len(r) for r in ref]
    for grads in _grad_stream(np.float64, 5):
        _feed(params, grads)
        opt.step()
        for i, g_arr in enumerate(grads):
            for j, g in enumerate(g_arr.ravel().tolist()):
                g = g + wd * ref[i][j]
                sq[i][j] = alpha * sq[i][j] + (1 - alpha) * g * g
                if centered:
                    avg[i][j] = alpha * avg[i][j] + (1 - alpha) * g
                    r = (sq[i][j] - avg[i][j] ** 2) ** 0.5 + eps
                else:
                    r = sq[i][j] ** 0.5 + eps
                if momentum:
                    buf[i][j] = momentum * buf[i][j] + g / r
                    ref[i][j] -= lr * buf[i][j]
                else:
                    ref[i][j] -= lr * g / r
        for p, r in zip(params, ref):
            np.testing.assert_allclose(p.data.ravel(), r, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.05)),
                                         ("RMSprop", dict(lr=0.01, centered=True))])
def test_step_with_a_closure(name, kwargs):
    """step(closure) evaluates the closure with gradients on (even inside no_grad, as PyTorch does),
    updates from the gradients it made and returns its loss: three steps against torch's."""
    rng = np.random.default_rng(0)
    x, y, w0 = rng.standard_normal((6, 3)), rng.standard_normal(6), rng.standard_normal(3)
    w, tw = nn.Parameter(w0.copy()), torch.tensor(w0.copy(), requires_grad=True)
    opt, topt = getattr(optim, name)([w], **kwargs), getattr(torch.optim, name)([tw], **kwargs)
    calls = []

    def closure():
        calls.append(cnnlab.is_grad_enabled())
        opt.zero_grad()
        loss = ((cnnlab.tensor(x) @ w - cnnlab.tensor(y)) ** 2).mean()
        loss.backward()
        return loss

    def tclosure():
        topt.zero_grad()
        loss = ((torch.tensor(x) @ tw - torch.tensor(y)) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        with cnnlab.no_grad():
            loss = opt.step(closure)
        tloss = topt.step(tclosure)
        assert isinstance(loss, cnnlab.Tensor) and loss.item() == pytest.approx(tloss.item(), rel=1e-12)
        np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert calls == [True] * 3 and cnnlab.is_grad_enabled()  # on in the closure, restored after
    assert opt.step() is None  # without a closure: no loss


# ----------------------------------------------------------------------------- Nielsen's L2
def test_nielsen_l2_one_step_by_hand():
    rng = np.random.default_rng(0)
    w0, c0, b0 = rng.standard_normal((3, 4)), rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(3)
    gw, gc, gb = rng.standard_normal((3, 4)), rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(3)
    w, c, b = nn.Parameter(w0.copy()), nn.Parameter(c0.copy()), nn.Parameter(b0.copy())
    eta, lmbda, n = 0.5, 5.0, 1000
    opt = optim.SGD([w, c, b], lr=eta, l2_lambda=lmbda, n_train=n)
    _feed([w, c, b], [gw, gc, gb])
    opt.step()
    # network3.py: w -> (1 - eta * lambda / n) * w - eta * grad ; biases: b -> b - eta * grad
    np.testing.assert_allclose(w.data, (1 - eta * lmbda / n) * w0 - eta * gw, rtol=1e-13)
    np.testing.assert_allclose(c.data, (1 - eta * lmbda / n) * c0 - eta * gc, rtol=1e-13)
    np.testing.assert_allclose(b.data, b0 - eta * gb, rtol=1e-13)


def test_nielsen_l2_does_not_decay_biases():
    w = nn.Parameter(np.full((2, 2), 3.0))
    b = nn.Parameter(np.full(2, 3.0))
    opt = optim.SGD([w, b], lr=0.1, l2_lambda=10.0, n_train=100)
    for _ in range(5):
        _feed([w, b], [np.zeros((2, 2)), np.zeros(2)])
        opt.step()
    np.testing.assert_array_equal(b.data, np.full(2, 3.0))
    np.testing.assert_allclose(w.data, np.full((2, 2), 3.0 * (1 - 0.1 * 10.0 / 100) ** 5), rtol=1e-13)


def test_nielsen_l2_equals_weight_decay_on_weights_against_torch():
    inits = _inits(np.float64)
    ours = _params(inits)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in inits]
    lmbda, n = 2.0, 500
    opt = optim.SGD(ours, lr=0.05, momentum=0.9, l2_lambda=lmbda, n_train=n)
    weights = [t for t in theirs if t.ndim >= 2]
    biases = [t for t in theirs if t.ndim < 2]
    topt = torch.optim.SGD([{"params": weights, "weight_decay": lmbda / n}, {"params": biases}],
                           lr=0.05, momentum=0.9)
    for grads in _grad_stream(np.float64, 5):
        _feed(ours, grads)
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- plumbing
def test_param_groups_with_different_lr():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones((2, 2)))
    opt = optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b]}], lr=0.01, momentum=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert all(g["momentum"] == 0.5 for g in opt.param_groups)
    assert opt.param_groups[0]["params"][0] is a
    _feed([a, b], [np.ones(3), np.ones((2, 2))])
    opt.step()
    np.testing.assert_allclose(a.data, 1 - 0.1)
    np.testing.assert_allclose(b.data, 1 - 0.01)


def test_param_groups_accept_a_module_parameters_generator():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(np.ones((2, 2)))
            self.b = nn.Parameter(np.zeros(2))

    net = Net()
    opt = optim.Adam(net.parameters(), lr=0.1)
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": [net.w]}, {"params": [net.w]}], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)


def test_zero_grad():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
    opt = optim.SGD([a, b], lr=0.1)
    _feed([a, b], [np.ones(3), np.ones(2)])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.data, 0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("cls", [optim.SGD, optim.RMSprop, optim.Adam, optim.AdamW])
def test_params_without_grad_are_skipped(cls):
    a, b = nn.Parameter(np.ones((2, 2))), nn.Parameter(np.ones(2))
    opt = cls([a, b], lr=0.1, weight_decay=0.1, **({"momentum": 0.9} if cls is optim.SGD else {}))
    a.grad = cnnlab.Tensor(np.ones((2, 2)))
    opt.step()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert not opt.state.get(b)
    assert not np.array_equal(a.data, np.ones((2, 2)))


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, l2_lambda=1.0, n_train=50)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
])
def test_state_dict_round_trip(name, kwargs):
    grads = _grad_stream(np.float64, 6)
    a = _params(_inits(np.float64))
    opt_a = getattr(optim, name)(a, **kwargs)
    for g in grads[:3]:
        _feed(a, g)
        opt_a.step()
    sd = opt_a.state_dict()

    # plain dicts of arrays and numbers
    assert set(sd) == {"state", "param_groups"}
    for st in sd["state"].values():
        for v in st.values():
            assert isinstance(v, (np.ndarray, int, float))
    snapshot = {k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
                for k, st in sd["state"].items()}

    # a fresh optimizer (different lr on purpose: the state dict restores it) on copied params
    b = [nn.Parameter(p.data.copy()) for p in a]
    opt_b = getattr(optim, name)(b, **{**kwargs, "lr": 123.0})
    opt_b.load_state_dict(sd)
    assert opt_b.param_groups[0]["lr"] == kwargs["lr"]
    for g in grads[3:]:
        _feed(a, g)
        _feed(b, g)
        opt_a.step()
        opt_b.step()
        for pa, pb in zip(a, b):
            np.testing.assert_array_equal(pa.data, pb.data)

    # the state dict was a snapshot: later steps did not change it
    for k, st in snapshot.items():
        for n, v in st.items():
            np.testing.assert_array_equal(sd["state"][k][n], v)


def test_load_state_dict_rejects_mismatched_groups():
    a = _params(_inits(np.float64))
    sd = optim.SGD(a, lr=0.1).state_dict()
    opt = optim.SGD([{"params": a[:1]}, {"params": a[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="groups"):
        opt.load_state_dict(sd)


def _p():
    return [nn.Parameter(np.ones((2, 2)))]


@pytest.mark.parametrize("make,argname", [
    (lambda: optim.SGD(_p(), lr=-0.1), "lr"),
    (lambda: optim.SGD(_p(), lr=float("nan")), "lr"),
    (lambda: optim.SGD(_p(), lr=0.1, momentum=-0.5), "momentum"),
    (lambda: optim.SGD(_p(), lr=0.1, dampening=1.5), "dampening"),
    (lambda: optim.SGD(_p(), lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda: optim.SGD(_p(), lr=0.1, nesterov=True), "nesterov"),
    (lambda: optim.SGD(_p(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda: optim.SGD(_p(), lr=0.1, l2_lambda=5.0), "n_train"),
    (lambda: optim.SGD(_p(), lr=0.1, l2_lambda=-5.0, n_train=10), "l2_lambda"),
    (lambda: optim.SGD(_p(), lr=0.1, l2_lambda=5.0, n_train=0), "n_train"),
    (lambda: optim.SGD([{"params": _p(), "lr": -1.0}], lr=0.1), "lr"),
    (lambda: optim.RMSprop(_p(), lr=-1e-3), "lr"),
    (lambda: optim.RMSprop(_p(), alpha=1.5), "alpha"),
    (lambda: optim.RMSprop(_p(), alpha=-0.1), "alpha"),
    (lambda: optim.RMSprop(_p(), eps=-1e-8), "eps"),
    (lambda: optim.RMSprop(_p(), weight_decay=-0.1), "weight_decay"),
    (lambda: optim.RMSprop(_p(), momentum=-0.9), "momentum"),
    (lambda: optim.Adam(_p(), lr=-1e-3), "lr"),
    (lambda: optim.Adam(_p(), betas=(1.0, 0.999)), "betas"),
    (lambda: optim.Adam(_p(), betas=(0.9, -0.1)), "betas"),
    (lambda: optim.Adam(_p(), betas=(0.9,)), "betas"),
    (lambda: optim.Adam(_p(), eps=-1e-8), "eps"),
    (lambda: optim.Adam(_p(), weight_decay=-0.1), "weight_decay"),
    (lambda: optim.AdamW(_p(), weight_decay=-0.1), "weight_decay"),
    (lambda: optim.AdamW(_p(), betas=(0.9, 1.5)), "betas"),
])
def test_bad_hyperparameters_raise(make, argname):
    with pytest.raises(ValueError, match=argname):
        make()


@pytest.mark.parametrize("make,argname", [
    (lambda o: optim.StepLR(o, step_size=0), "step_size"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: optim.OneCycleLR(o, max_lr=0.1, total_steps=0), "total_steps"),
    (lambda o: optim.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5), "pct_start"),
    (lambda o: optim.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"), "anneal_strategy"),
    (lambda o: optim.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=10), "max_lr"),
])
def test_bad_scheduler_arguments_raise(make, argname):
    with pytest.raises(ValueError, match=argname):
        make(optim.SGD(_p(), lr=0.1))


# ----------------------------------------------------------------------------- the base classes
def test_an_optimizer_of_ones_own_from_the_base_class():
    """Optimizer gives a subclass its groups, defaults, state, zero_grad and (de)serialisation;
    the subclass writes the update (here sign descent) and may validate its settings."""

    class SignSGD(optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

        def _validate_group(self, group):
            if group["lr"] <= 0:
                raise ValueError("lr must be positive")

        def _update_group(self, group):
            for p in group["params"]:
                if p.grad is not None:
                    self.state.setdefault(p, {"steps": 0})["steps"] += 1
                    p.data -= group["lr"] * np.sign(p.grad.data)

    a, b = nn.Parameter(np.array([1.0, -1.0])), nn.Parameter(np.array([3.0]))
    opt = SignSGD([{"params": [a]}, {"params": [b], "lr": 0.5}])
    assert isinstance(opt, optim.Optimizer) and [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    _feed([a, b], [np.array([2.0, -0.1]), np.array([-4.0])])
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, -0.9])
    np.testing.assert_allclose(b.data, [3.5])
    assert opt.state_dict()["state"] == {0: {"steps": 1}, 1: {"steps": 1}}
    opt.zero_grad()
    assert a.grad is None
    with pytest.raises(ValueError, match="positive"):
        SignSGD([a], lr=-1.0)


def test_a_scheduler_of_ones_own_from_the_base_class():
    """LRScheduler writes get_lr()'s values into the groups at construction (step 0) and each step."""

    class Warmup(optim.LRScheduler):
        def get_lr(self):
            return [base * min(1.0, (self.last_epoch + 1) / 4) for base in self.base_lrs]

    opt = optim.SGD([{"params": _p(), "lr": 0.4}, {"params": _p(), "lr": 0.8}], lr=0.1)
    sched = Warmup(opt)
    seen = [sched.get_last_lr()]
    for _ in range(4):
        sched.step()
        seen.append([g["lr"] for g in opt.param_groups])
    np.testing.assert_allclose(seen, [[0.1, 0.2], [0.2, 0.4], [0.3, 0.6], [0.4, 0.8], [0.4, 0.8]])
    with pytest.raises(TypeError, match="not a cnnlab Optimizer"):
        Warmup(object())
    with pytest.raises(TypeError, match="not a cnnlab Optimizer"):
        optim.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), step_size=1)


# ----------------------------------------------------------------------------- schedulers
SCHED_CASES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-3)),
    ("CosineAnnealingLR", dict(T_max=30)),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=30)),
    ("OneCycleLR", dict(max_lr=[0.5, 0.2], total_steps=30, pct_start=0.25, div_factor=10.0,
                        final_div_factor=100.0, anneal_strategy="linear")),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=30, three_phase=True)),
]


@pytest.mark.parametrize("name,kwargs", SCHED_CASES, ids=[f"{n}-{k}" for n, k in SCHED_CASES])
def test_scheduler_matches_torch(name, kwargs):
    ours = optim.SGD([{"params": _p(), "lr": 0.1}, {"params": _p(), "lr": 0.02}], lr=0.1, momentum=0.9)
    tp = [torch.zeros(2, 2, requires_grad=True) for _ in range(2)]
    theirs = torch.optim.SGD([{"params": tp[:1], "lr": 0.1}, {"params": tp[1:], "lr": 0.02}],
                             lr=0.1, momentum=0.9)
    tkwargs = dict(kwargs, cycle_momentum=False) if name == "OneCycleLR" else kwargs
    sched = getattr(optim, name)(ours, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, name)(theirs, **tkwargs)
    np.testing.assert_allclose(sched.base_lrs, tsched.base_lrs, rtol=1e-12)

    def check():
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose([g["lr"] for g in ours.param_groups],
                                   [g["lr"] for g in theirs.param_groups], rtol=1e-9, atol=1e-12)

    check()
    for _ in range(30):
        ours.step()
        theirs.step()
        sched.step()
        tsched.step()
        check()
    if name == "OneCycleLR":
        with pytest.raises(ValueError, match="total_steps"):
            sched.step()


def test_onecycle_starts_at_max_lr_over_div_factor_and_does_not_touch_momentum():
    opt = optim.SGD(_p(), lr=123.0, momentum=0.9)
    optim.OneCycleLR(opt, max_lr=0.4, total_steps=100, div_factor=20.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)
    assert opt.param_groups[0]["momentum"] == 0.9


def test_scheduler_state_dict_resumes():
    def make():
        opt = optim.SGD(_p(), lr=0.1)
        return opt, optim.OneCycleLR(opt, max_lr=1.0, total_steps=20, three_phase=True)

    opt_a, sa = make()
    for _ in range(7):
        sa.step()
    osd, ssd = opt_a.state_dict(), sa.state_dict()
    opt_b, sb = make()
    opt_b.load_state_dict(osd)
    sb.load_state_dict(ssd)
    for _ in range(10):
        sa.step()
        sb.step()
        assert sa.get_last_lr() == sb.get_last_lr()
        assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]


def test_scheduler_drives_the_optimizer_step():
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = cnnlab.Tensor(np.ones(1))
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.data, -(1.0 + 0.5 + 0.25))


# ----------------------------------------------------------------------------- GPU
GPU_CASES = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
             ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True)),
             ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
             ("AdamW", dict(lr=1e-2))]


@pytest.mark.gpu
@pytest.mark.parametrize("name,kwargs", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_matches_cpu_and_its_state_moves_between_devices(name, kwargs):
    """On CuPy: the same updates as on the CPU, state kept on the GPU in the parameter's dtype, and a
    GPU state dict resumed by a fresh GPU optimizer (bit for bit) and by a CPU one (state moved to
    NumPy, same values)."""
    cp, why = cuda()
    if cp is None:
        pytest.skip(why)
    stream = _grad_stream(np.float32, 5)
    cpu = _params(_inits(np.float32))
    gpu = [nn.Parameter(cp.asarray(p.data)) for p in cpu]
    opt_c, opt_g = getattr(optim, name)(cpu, **kwargs), getattr(optim, name)(gpu, **kwargs)

    def step(opts_params, grads):
        for opt, params in opts_params:
            xp = cp if isinstance(params[0].data, cp.ndarray) else np
            for p, g in zip(params, grads):
                p.grad = cnnlab.Tensor(xp.asarray(g))
            opt.step()

    for grads in stream[:3]:
        step([(opt_c, cpu), (opt_g, gpu)], grads)
    for p in gpu:
        for v in opt_g.state[p].values():
            if hasattr(v, "shape") and v.ndim > 0:
                assert isinstance(v, cp.ndarray) and v.dtype == np.float32
    sd_g, sd_c = opt_g.state_dict(), opt_c.state_dict()
    assert sd_g["state"].keys() == sd_c["state"].keys() and sd_g["state"]
    for k in sd_c["state"]:
        for n, v in sd_c["state"][k].items():
            np.testing.assert_allclose(cp.asnumpy(cp.asarray(sd_g["state"][k][n])), v, rtol=1e-5, atol=1e-6)

    gpu2 = [nn.Parameter(p.data.copy()) for p in gpu]
    cpu2 = [nn.Parameter(cp.asnumpy(p.data)) for p in gpu]
    opt_g2 = getattr(optim, name)(gpu2, **{**kwargs, "lr": 123.0})
    opt_c2 = getattr(optim, name)(cpu2, **{**kwargs, "lr": 123.0})
    opt_g2.load_state_dict(sd_g)
    opt_c2.load_state_dict(sd_g)
    assert opt_g2.param_groups[0]["lr"] == opt_c2.param_groups[0]["lr"] == kwargs["lr"]
    for opt, xp in ((opt_g2, cp), (opt_c2, np)):
        for st in opt.state.values():
            assert all(isinstance(v, xp.ndarray) for v in st.values() if hasattr(v, "shape") and v.ndim > 0)
    for grads in stream[3:]:
        step([(opt_c, cpu), (opt_g, gpu), (opt_g2, gpu2), (opt_c2, cpu2)], grads)
    for pc, pg, pg2, pc2 in zip(cpu, gpu, gpu2, cpu2):
        assert isinstance(pg.data, cp.ndarray) and pg.data.dtype == np.float32
        np.testing.assert_allclose(cp.asnumpy(pg.data), pc.data, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(cp.asnumpy(pg2.data), cp.asnumpy(pg.data))
        np.testing.assert_allclose(pc2.data, cp.asnumpy(pg.data), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the compiled SGD step
SGD_CASES = [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
             dict(lr=0.05, momentum=0.8, dampening=0.3), dict(lr=0.1, weight_decay=0.01),
             dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True),
             dict(lr=0.03, l2_lambda=0.1, n_train=5000)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=[str(k) for k in SGD_CASES])
def test_compiled_sgd_step_equals_the_numpy_expression_bit_for_bit(kwargs, dtype):
    """The one-pass numba update against the NumPy path (the definition, tested against torch above)."""
    from cnnlab import kernels

    inits, stream = _inits(dtype), _grad_stream(dtype, 6)
    fused, plain = _params(inits), _params(inits)
    opt_fused, opt_plain = optim.SGD(fused, **kwargs), optim.SGD(plain, **kwargs)
    assert all(kernels.use_compiled_sgd(p.data, p.data) for p in fused)
    for grads in stream:
        _feed(fused, grads)
        _feed(plain, grads)
        opt_fused.step()
        with kernels.compiled(False):
            assert not kernels.use_compiled_sgd(plain[0].data, plain[0].data)
            opt_plain.step()
        for a, b in zip(fused, plain):
            assert a.data.dtype == dtype
            np.testing.assert_array_equal(a.data, b.data)
    if kwargs.get("momentum"):
        for a, b in zip(fused, plain):
            np.testing.assert_array_equal(opt_fused.state[a]["momentum_buffer"], opt_plain.state[b]["momentum_buffer"])


def test_a_zero_dimensional_parameter_without_momentum():
    p = nn.Parameter(np.array(2.0, dtype=np.float32))
    p.grad = cnnlab.Tensor(np.array(1.0, dtype=np.float32))
    optim.SGD([p], lr=0.5).step()
    assert p.data.shape == () and float(p.data) == 1.5


def test_compiled_sgd_step_takes_a_non_contiguous_gradient_and_a_loaded_buffer():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    g = np.asfortranarray(rng.standard_normal((6, 4)).astype(np.float32))
    p = nn.Parameter(w.copy())
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.state[p] = {"momentum_buffer": np.asfortranarray(np.ones((6, 4)))}  # float64, Fortran order
    p.grad = cnnlab.Tensor(g)
    opt.step()
    buf = 0.9 * np.ones((6, 4), np.float32) + np.float32(1.0) * g
    np.testing.assert_array_equal(p.data, w - np.float32(0.1) * buf)
    assert opt.state[p]["momentum_buffer"].dtype == np.float32
