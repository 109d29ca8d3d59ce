"""MultiStepLR, LambdaLR, LinearLR (warm-up), SequentialLR and ReduceLROnPlateau against torch's schedulers
(the same learning rate at every step), and nn.utils.clip_grad_norm_ / clip_grad_value_ against torch's."""

import math

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import nn, optim

TS = torch.optim.lr_scheduler


def _pair(lrs=(0.1, 0.02)):
    """A cnnlab SGD and a torch SGD, each with one parameter group per lr."""
    ours = optim.SGD([{"params": [nn.Parameter(np.zeros(2, np.float32))], "lr": lr} for lr in lrs], lr=lrs[0])
    theirs = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs], lr=lrs[0])
    return ours, theirs


def _sequence(scheduler, optimizer, steps, metrics=None):
    out = [[g["lr"] for g in optimizer.param_groups]]
    for i in range(steps):
        optimizer.step()
        scheduler.step(*(() if metrics is None else (metrics[i],)))
        out.append([g["lr"] for g in optimizer.param_groups])
    return out


SCHEDULES = [
    ("MultiStepLR", lambda o: optim.MultiStepLR(o, [3, 5, 5, 9], gamma=0.5),
     lambda o: TS.MultiStepLR(o, [3, 5, 5, 9], gamma=0.5)),
    ("LambdaLR", lambda o: optim.LambdaLR(o, lambda t: 0.9 ** t), lambda o: TS.LambdaLR(o, lambda t: 0.9 ** t)),
    ("LambdaLR-per-group", lambda o: optim.LambdaLR(o, [lambda t: 1 / (t + 1), lambda t: t % 3]),
     lambda o: TS.LambdaLR(o, [lambda t: 1 / (t + 1), lambda t: t % 3])),
    ("LinearLR-warmup", lambda o: optim.LinearLR(o, start_factor=0.1, total_iters=4),
     lambda o: TS.LinearLR(o, start_factor=0.1, total_iters=4)),
    ("LinearLR-decay", lambda o: optim.LinearLR(o, start_factor=1.0, end_factor=0.25, total_iters=7),
     lambda o: TS.LinearLR(o, start_factor=1.0, end_factor=0.25, total_iters=7)),
    ("LinearLR-defaults", lambda o: optim.LinearLR(o), lambda o: TS.LinearLR(o)),
    ("warmup-then-cosine", lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.01, total_iters=3),
                                                            optim.CosineAnnealingLR(o, T_max=8)], milestones=[3]),
     lambda o: TS.SequentialLR(o, [TS.LinearLR(o, 0.01, total_iters=3), TS.CosineAnnealingLR(o, T_max=8)],
                               milestones=[3])),
    ("warmup-multistep-lambda", lambda o: optim.SequentialLR(
        o, [optim.LinearLR(o, 0.5, total_iters=2), optim.MultiStepLR(o, [2, 4]), optim.LambdaLR(o, lambda t: 0.5)],
        milestones=[2, 8]),
     lambda o: TS.SequentialLR(o, [TS.LinearLR(o, 0.5, total_iters=2), TS.MultiStepLR(o, [2, 4]),
                                   TS.LambdaLR(o, lambda t: 0.5)], milestones=[2, 8])),
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name,ours,theirs", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedules_match_torch(name, ours, theirs):
    o, t = _pair()
    a, b = ours(o), theirs(t)
    seq, tseq = _sequence(a, o, 14), _sequence(b, t, 14)
    np.testing.assert_allclose(seq, tseq, rtol=1e-12, atol=1e-15)
    assert a.get_last_lr() == pytest.approx(b.get_last_lr(), rel=1e-12)
    assert len(set(map(tuple, seq))) > 2  # the schedule moved


PLATEAUS = [dict(), dict(mode="max", patience=1, factor=0.5), dict(patience=0, cooldown=2, min_lr=0.004),
            dict(threshold_mode="abs", threshold=0.1, patience=1), dict(mode="max", threshold_mode="abs",
                                                                        threshold=0.05, patience=2, cooldown=1),
            dict(patience=1, min_lr=[0.05, 0.0], eps=1e-3)]


@pytest.mark.parametrize("settings", PLATEAUS, ids=[str(s) for s in PLATEAUS])
def test_reduce_on_plateau_matches_torch(settings):
    metrics = [1.0, 0.9, 0.95, 0.95, 0.9001, 0.99, 0.8, 0.8, 0.85, 0.81, 0.7999, 1.2, 1.1, 1.05, 0.5, 0.6, 0.6,
               0.61, 0.3, 0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.37] + [0.4] * 8
    o, t = _pair()
    a, b = optim.ReduceLROnPlateau(o, **settings), TS.ReduceLROnPlateau(t, **settings)
    seq, tseq = _sequence(a, o, len(metrics), metrics), _sequence(b, t, len(metrics), metrics)
    np.testing.assert_allclose(seq, tseq, rtol=1e-12)
    assert a.get_last_lr() == pytest.approx(b.get_last_lr()) and a.best == b.best
    assert len(set(map(tuple, seq))) > 1  # the metric sequence made it reduce


def test_scheduler_state_round_trips_and_bad_settings():
    o, _ = _pair()
    s = optim.ReduceLROnPlateau(o, patience=0)
    for m in (1.0, 2.0, cnnlab.tensor(3.0)):
        s.step(m)
    state = s.state_dict()
    o2, _ = _pair()
    s2 = optim.ReduceLROnPlateau(o2, patience=0)
    s2.load_state_dict(state)
    assert (s2.best, s2.num_bad_epochs, s2.last_epoch) == (1.0, 0, 3)
    lam = optim.LambdaLR(o, lambda t: 1.0)
    assert "lr_lambdas" not in lam.state_dict()
    with pytest.raises(ValueError, match="Invalid factor"):
        optim.ReduceLROnPlateau(o, factor=1.0)
    with pytest.raises(ValueError, match="Invalid milestones"):
        optim.MultiStepLR(o, [])
    with pytest.raises(ValueError, match="Invalid lr_lambda: expected 2 functions"):
        optim.LambdaLR(o, [lambda t: 1.0])
    with pytest.raises(ValueError, match="Invalid start_factor"):
        optim.LinearLR(o, start_factor=0)
    with pytest.raises(ValueError, match="one milestone fewer"):
        optim.SequentialLR(o, [optim.LinearLR(o)], milestones=[2])


def _grads_pair(scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    grads = [rng.standard_normal(s) * scale for s in shapes]
    ours = [nn.Parameter(np.zeros(s)) for s in shapes] + [nn.Parameter(np.zeros(2))]  # the last has no grad
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes] + [
        torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    for p, t, g in zip(ours, theirs, grads):
        p.grad = cnnlab.tensor(g.copy())
        t.grad = torch.tensor(g.copy())
    return ours, theirs, grads


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (100.0, 2.0), (0.5, 1.0), (0.3, math.inf), (2, 3)])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    ours, theirs, grads = _grads_pair()
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    # the definition: the norm of all gradient entries as one vector
    flat = np.concatenate([g.ravel() for g in grads])
    want = np.abs(flat).max() if math.isinf(norm_type) else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    assert isinstance(total, cnnlab.Tensor) and total.shape == ()
    assert total.item() == pytest.approx(want, rel=1e-12) and total.item() == pytest.approx(ttotal.item(), rel=1e-12)
    coef = min(1.0, max_norm / (want + 1e-6))
    for p, t, g in zip(ours, theirs, grads):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)
    assert ours[-1].grad is None


def test_clip_grad_value_matches_torch_and_edge_cases():
    ours, theirs, grads = _grads_pair(scale=2.0)
    assert nn.utils.clip_grad_value_(ours, 0.7) is None
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, t, g in zip(ours, theirs, grads):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())
        np.testing.assert_array_equal(p.grad.numpy(), np.minimum(np.maximum(g, -0.7), 0.7))
    one = nn.Parameter(np.ones(3, np.float32))
    one.grad = cnnlab.tensor(np.array([3.0, 4.0, 0.0], np.float32))
    norm = nn.utils.clip_grad_norm_(one, 1.0)  # a single tensor is accepted
    assert norm.item() == pytest.approx(5.0) and norm.dtype == np.float32
    assert np.linalg.norm(one.grad.numpy()) == pytest.approx(1.0, rel=1e-5)
    assert nn.utils.clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0).item() == 0.0  # no gradients
    bad = nn.Parameter(np.ones(2))
    bad.grad = cnnlab.tensor(np.array([np.inf, 1.0]))
    with pytest.raises(RuntimeError, match="total norm of order 2.0 of the gradients is inf"):
        nn.utils.clip_grad_norm_([bad], 1.0, error_if_nonfinite=True)
    with pytest.raises(TypeError, match="parameters must be Tensors"):
        nn.utils.clip_grad_value_([1.0], 1.0)
