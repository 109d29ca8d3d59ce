"""Conv -> max-pool -> activation and conv -> activation -> average pool as one operator each,
chunk by chunk over the batch.

The result is exactly act(max_pool(conv(x) + b)) in value and gradient; only the schedule
differs. Run layer by layer, the convolution's full output (e.g. 20x24x24 per image for the
first layer of Nielsen's net) goes out to memory, is read back by the pooling, and its gradient
is written and read once more in the backward pass. Here every chunk of images is convolved,
pooled and activated while it sits in the CPU cache, and only the pooled maps (4x smaller for
2x2 windows) and the arg-max of each window leave it. The backward pass rebuilds the chunk's
convolution gradient in cache from those.

``nn.fuse`` (nn/fuse.py) runs [Conv2d, MaxPool2d, activation] (in either order of the last two)
and [Conv2d, MaxPool2d] with it. Average pooling does not commute with the activation, so its
block is conv -> activation -> average pool (LeNet-5's tanh and subsampling), ConvActAvgPool,
which keeps the activations for the backward pass; nn.fuse runs [Conv2d, activation, AvgPool2d]
and [Conv2d, AvgPool2d] with it. Both fall back to the separate operators where the fused path
does not apply (fusable below).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function, Tensor
from .conv import ConvPlan, conv_output_shape, conv_params
from .pool import pool_geometry

ACTIVATIONS = (None, "relu", "tanh", "sigmoid")


def fusable(x) -> bool:
    """The fused CPU path applies to the array x (kernels.use_fused_conv): a float NumPy array of
    2-D images, the compiled kernels on. Elsewhere the fused operators run layer by layer."""
    return kernels.use_fused_conv(x)


def _plan(x, w, maybe_bias, stride, padding, dilation, groups, pool_kernel, pool_stride, pool_padding):
    """The convolution's plan, its output size (OH, OW) and the pooled size (PH, PW)."""
    plan = ConvPlan(x, w, maybe_bias[0] if maybe_bias else None, stride, padding, dilation, groups)
    pooled = conv_output_shape(plan.out_shape, pool_kernel, pool_stride, pool_padding, (1, 1))
    return plan, tuple(plan.out_shape), pooled


class ConvMaxPoolAct(Function):
    """act(max_pool2d(conv2d(x, w, b))) on NumPy arrays; see the module docstring."""

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups, pool_kernel, pool_stride,
                pool_padding, act):
        plan, (OH, OW), (PH, PW) = _plan(x, w, maybe_bias, stride, padding, dilation, groups, pool_kernel,
                                         pool_stride, pool_padding)
        N, F = x.shape[0], plan.F
        out = np.empty((N, F, PH, PW), dtype=x.dtype)
        arg = np.empty((N, F, PH, PW), dtype=np.int32)
        if plan.indirect_jobs and act in (None, "relu") and x.dtype == np.float32:  # the three in one compiled job
            bias = None if plan.bias is None else np.ascontiguousarray(plan.bias.reshape(-1), dtype=np.float32)
            job = plan.ig.conv_max_pool_job(np.ascontiguousarray(x), plan.chunks, bias,
                                            (pool_kernel, pool_stride, pool_padding), out, arg, act == "relu")
            kernels.run_compiled(job.fn, job.args, job.count)
        else:
            def chunk(n0, n1):
                y = np.empty((n1 - n0, F, plan.L), dtype=x.dtype)
                plan.forward_chunk(x[n0:n1], y)
                o, a = kernels.max_pool2d_chunk(y.reshape(n1 - n0, F, OH, OW), pool_kernel, pool_stride,
                                                pool_padding, (PH, PW))
                kernels.act_forward_chunk(act, o)
                out[n0:n1] = o
                arg[n0:n1] = a

            kernels.run_chunks(chunk, plan.chunks)
        self.x, self.plan, self.arg, self.out, self.act = x, plan, arg, out, act
        self.has_bias = bool(maybe_bias)
        return out

    def backward(self, g):
        x, plan, arg, out, act = self.x, self.plan, self.arg, self.out, self.act
        g = np.ascontiguousarray(g)

        def conv_grad(n0, n1):  # back through the activation and the pooling, in cache
            gp = kernels.act_backward_chunk(act, g[n0:n1], out[n0:n1])
            return kernels.max_pool2d_backward_chunk(gp, arg[n0:n1], plan.out_shape).reshape(n1 - n0, plan.F, plan.L)

        return plan.backward(x, conv_grad, self.needs_input_grad, self.has_bias)


class ConvActAvgPool(Function):
    """avg_pool2d(act(conv2d(x, w, b))) on NumPy arrays, chunk by chunk: each chunk is convolved,
    activated and pooled in cache; the activations are kept (average pooling needs all of them)
    and the backward pass spreads each window's gradient, goes back through the activation and
    the convolution in cache. The same compiled loops and roundings as the separate operators."""

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups, pool_kernel, pool_stride,
                pool_padding, act):
        plan, (OH, OW), (PH, PW) = _plan(x, w, maybe_bias, stride, padding, dilation, groups, pool_kernel,
                                         pool_stride, pool_padding)
        N, F = x.shape[0], plan.F
        # the activations are kept only where the backward pass reads them
        keep = act is not None and any(self.needs_input_grad)
        acts = np.empty((N, F, OH, OW), dtype=x.dtype) if keep else None
        out = np.empty((N, F, PH, PW), dtype=x.dtype)
        pool = (pool_kernel, pool_stride, pool_padding)
        # F.avg_pool2d multiplies the window sums by 1/size in the input's dtype: the same here
        inv = np.asarray(1.0 / (pool_kernel[0] * pool_kernel[1]), dtype=x.dtype)

        def chunk(n0, n1):
            a = acts[n0:n1] if keep else np.empty((n1 - n0, F, OH, OW), dtype=x.dtype)
            plan.forward_chunk(x[n0:n1], a.reshape(n1 - n0, F, plan.L))
            kernels.act_forward_chunk(act, a)
            np.multiply(kernels.sum_pool2d_chunk(a, *pool, (PH, PW)), inv, out=out[n0:n1])

        kernels.run_chunks(chunk, plan.chunks)
        self.x, self.plan, self.acts, self.act, self.pool, self.inv = x, plan, acts, act, pool, inv
        self.has_bias = bool(maybe_bias)
        return out

    def backward(self, g):
        x, plan, acts, act, pool, inv = self.x, self.plan, self.acts, self.act, self.pool, self.inv
        g = np.ascontiguousarray(g)

        def conv_grad(n0, n1):  # back through the pooling and the activation, in cache
            ga = kernels.sum_pool2d_backward_chunk(g[n0:n1] * inv, plan.out_shape, *pool)
            return kernels.act_backward_chunk(act, ga, None if acts is None else acts[n0:n1]).reshape(
                n1 - n0, plan.F, plan.L)

        return plan.backward(x, conv_grad, self.needs_input_grad, self.has_bias)


def conv2d_act_avgpool(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, pool_kernel=2,
                       pool_stride=None, pool_padding=0, act=None):
    """avg_pool2d(act(conv2d(x, weight, bias, stride, padding, dilation, groups)), pool_kernel,
    pool_stride, pool_padding) in one pass per chunk of the batch (CPU, NumPy arrays): LeNet-5's
    convolution, tanh and subsampling. Zero padding of the pool counts in the average, as in
    F.avg_pool2d. Falls back to the separate operators where the fused path does not apply."""
    from . import avg_pool2d, conv2d  # noqa: PLC0415

    if act not in ACTIVATIONS:
        raise ValueError(f"conv2d_act_avgpool: act must be one of {ACTIVATIONS}, got {act!r}")
    if not (isinstance(x, Tensor) and fusable(x.data)):
        return avg_pool2d(_act_functions()[act](conv2d(x, weight, bias, stride, padding, dilation, groups)),
                          pool_kernel, pool_stride, pool_padding)
    return _apply(ConvActAvgPool, "avg_pool2d", x, weight, bias, stride, padding, dilation, groups, pool_kernel,
                  pool_stride, pool_padding, act)


def _apply(function, pool_name, x, weight, bias, stride, padding, dilation, groups, pool_kernel, pool_stride,
           pool_padding, act):
    """Check the convolution's and the pooling's arguments as F.conv2d and F.<pool_name> would, then
    run the fused ``function``."""
    stride, padding, dilation = conv_params("conv2d", 2, x, weight, bias, stride, padding, dilation, groups)
    conv_shape = (x.shape[0], weight.shape[0]) + conv_output_shape(x.shape[2:], weight.shape[2:], stride, padding,
                                                                   dilation)
    kernel, pstride, ppadding = pool_geometry(pool_name, 2, conv_shape, pool_kernel, pool_stride, pool_padding)
    args = (x, weight) if bias is None else (x, weight, bias)
    return function.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=int(groups),
                          pool_kernel=kernel, pool_stride=pstride, pool_padding=ppadding, act=act)


def _act_functions():
    from . import relu, sigmoid, tanh  # noqa: PLC0415

    return {None: lambda t: t, "relu": relu, "tanh": tanh, "sigmoid": sigmoid}


def conv2d_maxpool_act(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, pool_kernel=2,
                       pool_stride=None, pool_padding=0, act=None):
    """act(max_pool2d(conv2d(x, weight, bias, stride, padding, dilation, groups), pool_kernel,
    pool_stride, pool_padding)) in one pass per chunk of the batch (CPU, NumPy arrays).

    x is (N, C, H, W); act is None, 'relu', 'tanh' or 'sigmoid'. Falls back to the separate
    operators where the fused path does not apply (e.g. CuPy arrays, or the compiled kernels
    switched off), so it is always correct to call.
    """
    from . import conv2d, max_pool2d  # noqa: PLC0415

    if act not in ACTIVATIONS:
        raise ValueError(f"conv2d_maxpool_act: act must be one of {ACTIVATIONS}, got {act!r}")
    if not (isinstance(x, Tensor) and fusable(x.data)):
        y = max_pool2d(conv2d(x, weight, bias, stride, padding, dilation, groups), pool_kernel, pool_stride,
                       pool_padding)
        return _act_functions()[act](y)
    return _apply(ConvMaxPoolAct, "max_pool2d", x, weight, bias, stride, padding, dilation, groups, pool_kernel,
                  pool_stride, pool_padding, act)
