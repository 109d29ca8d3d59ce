"""ONNX export: a model's graph recorded from one forward pass through cnnlab's own operators.

``export_onnx(model, input_shape)`` runs the model (eval mode, no gradients) inside
``autograd.trace``, which hears every ``Function.apply``: the operator's class, its input tensors,
its parameters and its output. Tensors that come from the input are the graph's values; the others
(parameters, buffers, constants) become initializers, and an operator on constants only is folded
into one. Each operator class maps to ONNX nodes in ``MAPPINGS`` below; an operator without a
row there stops the export with an error naming it and the layer that used it. So any model built
from cnnlab's layers and operators exports, not only the zoo's.

The pass is recorded twice, at two batch sizes and on two random inputs. What differs between the
two records is what depends on the batch: a reshape's batch dimension becomes -1 (the graph's
batch axis is dynamic); anything else that differs (a value computed from the input behind the
operators' back, e.g. with NumPy on ``x.data``) cannot live in a static graph and is refused.

By default the model is traced as ``nn.fuse`` runs it: batch norm + ReLU is then one
BatchNormalization node (running statistics folded into a scale and shift, as cnnlab's own
evaluation computes them) and a ReLU, which ONNX Runtime folds into the convolution before it.

The graph's input is the normalised tensor the model takes, ``(pixel/255 - mean) / std`` for a
run; ``export_run`` records mean, std, the input's form, the class names, the model and cnnlab's
version in the model's metadata_props (docs/onnx.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backend, checkpoint, nn
from .autograd import Tensor, no_grad, trace

OPSET = 20  # ONNX Runtime 1.17 and later run it
INPUT, OUTPUT = "input", "output"
_BATCHES = (2, 5)  # the two traced batch sizes: whatever differs between them depends on the batch


class OnnxExportError(ValueError):
    """A model that cannot be exported, in one line naming the operator or layer and why."""


@dataclass
class _Op:
    fn: type
    inputs: tuple
    params: dict
    out: Tensor
    where: str  # the innermost module running, e.g. "layer '3' (LocalResponseNorm)"


@dataclass
class _Record:
    ops: list = field(default_factory=list)
    stack: list = field(default_factory=list)

    def __call__(self, fn, inputs, params, out):
        self.ops.append(_Op(fn, inputs, dict(params), out, self.stack[-1] if self.stack else "the model"))


def _onnx():
    try:
        import onnx  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise OnnxExportError("ONNX export needs the onnx package: pip install 'cnnlab[onnx]'") from None
    return onnx


def _record(model, x: np.ndarray) -> tuple[_Record, Tensor, Tensor]:
    """One forward pass of ``model`` on ``x`` with every operator recorded, and which module ran it."""
    rec = _Record()
    wrapped = []
    for path, module in model.named_modules():
        label = f"layer '{path}' ({type(module).__name__})" if path else f"the model ({type(module).__name__})"

        def wrapper(*args, _forward=module.forward, _label=label, **kwargs):
            rec.stack.append(_label)
            try:
                return _forward(*args, **kwargs)
            finally:
                rec.stack.pop()

        module.forward = wrapper  # an instance attribute: Module.__call__ finds it first
        wrapped.append(module)
    inp = Tensor(x)
    try:
        with no_grad(), trace(rec):
            out = model(inp)
    finally:
        for module in wrapped:
            del module.forward
    if not isinstance(out, Tensor):
        raise OnnxExportError(f"the model returned a {type(out).__name__}, not a Tensor: export takes models with one "
                              f"output tensor")
    return rec, inp, out


def _same(a, b) -> bool:
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        return isinstance(a, (np.ndarray, np.generic)) and isinstance(b, (np.ndarray, np.generic)) and \
            a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


class _Graph:
    """The ONNX nodes and initializers being built from a record (and a second one to compare)."""

    def __init__(self, onnx, names: dict):
        self.onnx, self.helper = onnx, onnx.helper
        self.param_names = names  # id(tensor) -> state-dict name
        self.nodes, self.initializers = [], {}
        self.name_of: dict[int, str] = {}  # id(tensor) -> its value's name in the graph
        self.dynamic: set[int] = set()  # ids of tensors computed from the input
        self.folded: dict[int, np.ndarray] = {}  # id(tensor) -> the value of an operator on constants
        self.sum_pools: dict[str, tuple[str, int]] = {}  # window sum's name -> (its average's name, window size)
        self.count = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    # ------------------------------------------------------------------ values
    def is_const(self, t: Tensor) -> bool:
        return id(t) not in self.dynamic

    def value(self, t: Tensor) -> np.ndarray:
        """The value of a constant input (a parameter, buffer, constant or folded result)."""
        return self.folded[id(t)] if id(t) in self.folded else np.asarray(backend.to_device(t.data, "cpu"))

    def const(self, array, hint="const") -> str:
        name = self.fresh(hint)
        self.initializers[name] = self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def name(self, t: Tensor) -> str:
        """The graph name of an operator's input; a constant becomes an initializer once."""
        key = id(t)
        if key not in self.name_of:
            value = self.value(t)
            name = self.param_names.get(key)
            if name is None or name in self.initializers:
                name = self.fresh("const")
            self.initializers[name] = self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name)
            self.name_of[key] = name
        return self.name_of[key]

    def node(self, op_type: str, inputs, hint=None, **attrs) -> str:
        out = self.fresh(hint or op_type)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


# ------------------------------------------------------------------------------ the mappings
# Each takes (graph, op, op2: the same operator in the second record, input names) and returns the
# name of the operator's output in the graph.
def _unary(op_type):
    return lambda g, op, op2, ins: g.node(op_type, ins[:1])


def _binary(op_type):
    return lambda g, op, op2, ins: g.node(op_type, ins[:2])


def _mul(g, op, op2, ins):
    # average pooling is a window sum (SumPoolNd, exported as AveragePool * size) times 1/size:
    # the two multiplications cancel, so the AveragePool itself is the result
    for i, j in ((0, 1), (1, 0)):
        if ins[i] in g.sum_pools and g.is_const(op.inputs[j]):
            avg, size = g.sum_pools[ins[i]]
            c = g.value(op.inputs[j])
            if c.size == 1 and c.reshape(()) == np.asarray(1.0 / size, dtype=c.dtype):
                return avg
    return g.node("Mul", ins[:2])


def _pads(padding):
    return list(padding) * 2  # ONNX: the starts of every axis, then their ends


def _conv(g, x, w, b, stride, padding, dilation, groups, kernel):
    return g.node("Conv", [x, w] + ([b] if b else []), kernel_shape=list(kernel), strides=list(stride),
                  pads=_pads(padding), dilations=list(dilation), group=int(groups))


def _conv_op(g, op, op2, ins):
    p = op.params
    return _conv(g, ins[0], ins[1], ins[2] if len(ins) > 2 else None, p["stride"], p["padding"], p["dilation"],
                 p["groups"], op.inputs[1].shape[2:])


_ACT = {None: None, "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _act(g, name, act):
    return name if act is None else g.node(_ACT[act], [name])


def _conv_maxpool_act(g, op, op2, ins):
    p = op.params
    y = _conv(g, ins[0], ins[1], ins[2] if len(ins) > 2 else None, p["stride"], p["padding"], p["dilation"],
              p["groups"], op.inputs[1].shape[2:])
    y = g.node("MaxPool", [y], kernel_shape=list(p["pool_kernel"]), strides=list(p["pool_stride"]),
               pads=_pads(p["pool_padding"]))
    return _act(g, y, p["act"])


def _conv_act_avgpool(g, op, op2, ins):
    p = op.params
    y = _conv(g, ins[0], ins[1], ins[2] if len(ins) > 2 else None, p["stride"], p["padding"], p["dilation"],
              p["groups"], op.inputs[1].shape[2:])
    y = _act(g, y, p["act"])
    return g.node("AveragePool", [y], kernel_shape=list(p["pool_kernel"]), strides=list(p["pool_stride"]),
                  pads=_pads(p["pool_padding"]), count_include_pad=1)


def _max_pool(g, op, op2, ins):
    p = op.params
    return g.node("MaxPool", ins[:1], kernel_shape=list(p["kernel"]), strides=list(p["stride"]),
                  pads=_pads(p["padding"]))


def _sum_pool(g, op, op2, ins):
    p = op.params
    size = int(np.prod(p["kernel"]))
    avg = g.node("AveragePool", ins[:1], kernel_shape=list(p["kernel"]), strides=list(p["stride"]),
                 pads=_pads(p["padding"]), count_include_pad=1)
    total = g.node("Mul", [avg, g.const(np.asarray(size, dtype=op.out.dtype), "window_size")], hint="SumPool")
    g.sum_pools[total] = (avg, size)
    return total


def _lp_pool(g, op, op2, ins):
    p = op.params
    if float(p["p"]) != int(p["p"]):
        raise OnnxExportError(f"{op.where}: Lp pooling with p={p['p']} has no ONNX mapping (ONNX's LpPool takes a "
                              f"whole p)")
    return g.node("LpPool", ins[:1], p=int(p["p"]), kernel_shape=list(p["kernel"]), strides=list(p["stride"]))


def _linear(g, op, op2, ins):
    if op.inputs[0].ndim == 2:
        return g.node("Gemm", ins, transB=1)
    y = g.node("MatMul", [ins[0], g.node("Transpose", [ins[1]], perm=[1, 0])])
    return g.node("Add", [y, ins[2]]) if len(ins) > 2 else y


def _bn_relu_eval(g, op, op2, ins):
    # relu((x - mean) * inv * w + b) as cnnlab computes it: x * scale + shift, scale = inv * w,
    # shift = b - mean * scale; BatchNormalization with mean 0, variance 1 and epsilon 0 is that
    x, w, b, rm, inv = op.inputs
    if not all(g.is_const(t) for t in (w, b, rm, inv)):
        raise OnnxExportError(f"{op.where}: batch norm with weights computed from the input has no ONNX mapping")
    scale = g.value(inv) * g.value(w)
    shift = g.value(b) - g.value(rm) * scale
    layer = g.param_names.get(id(w), "bn.weight").rpartition(".")[0]  # e.g. "2" for "2.weight"
    consts = [g.const(v, f"{layer}.{what}") for v, what in ((scale, "scale"), (shift, "shift"),
                                                             (np.zeros_like(scale), "zero"), (np.ones_like(scale), "one"))]
    y = g.node("BatchNormalization", [ins[0], *consts], epsilon=0.0)
    return g.node("Relu", [y])


def _lrn(g, op, op2, ins):
    p = op.params
    if p["size"] % 2 == 0:
        raise OnnxExportError(f"{op.where}: local response norm of even size {p['size']} has no ONNX mapping "
                              f"(ONNX's LRN centres an even window one channel later than cnnlab and PyTorch)")
    return g.node("LRN", ins[:1], size=p["size"], alpha=p["alpha"], beta=p["beta"], bias=p["k"])


def _reshape(g, op, op2, ins):
    s1, s2 = op.out.shape, op2.out.shape
    shape = [a if a == b else -1 for a, b in zip(s1, s2)]
    if shape.count(-1) > 1:
        raise OnnxExportError(f"{op.where}: a reshape to {s1} at batch {_BATCHES[0]} and {s2} at batch "
                              f"{_BATCHES[1]} changes more than one dimension with the batch, which ONNX's "
                              f"Reshape cannot express")
    return g.node("Reshape", [ins[0], g.const(np.asarray(shape, dtype=np.int64), "shape")])


def _permute(g, op, op2, ins):
    return g.node("Transpose", ins[:1], perm=list(op.params["dims"]))


def _reduce(op_type):
    def emit(g, op, op2, ins):
        axis = op.params["axis"]
        axes = [] if axis is None else [g.const(np.asarray(list(axis), dtype=np.int64), "axes")]
        return g.node(op_type, ins[:1] + axes, keepdims=int(bool(op.params["keepdims"])))
    return emit


def _max(g, op, op2, ins):
    return _reduce("ReduceMin" if op.params.get("is_min") else "ReduceMax")(g, op, op2, ins)


def _softmax(op_type):
    return lambda g, op, op2, ins: g.node(op_type, ins[:1], axis=int(op.params["axis"]))


def _pow(g, op, op2, ins):
    return g.node("Pow", [ins[0], g.const(np.asarray(op.params["p"], dtype=op.out.dtype), "exponent")])


def _clamp(g, op, op2, ins):
    dtype = op.out.dtype
    lo, hi = op.params["lo"], op.params["hi"]
    bounds = ["" if v is None else g.const(np.asarray(v, dtype=dtype), "bound") for v in (lo, hi)]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return g.node("Clip", ins[:1] + bounds)


def _cast(g, op, op2, ins):
    return g.node("Cast", ins[:1], to=g.helper.np_dtype_to_tensor_dtype(np.dtype(op.params["dtype"])))


_INT64_MAX = np.iinfo(np.int64).max


def _getitem(g, op, op2, ins):
    """Basic indexing (whole numbers, slices, an Ellipsis) as Slice and Gather."""
    index = op.params["index"]
    items = index if isinstance(index, tuple) else (index,)
    ndim = op.inputs[0].ndim
    ok = all(isinstance(i, (int, np.integer, slice)) or i is Ellipsis for i in items) and \
        sum(i is Ellipsis for i in items) <= 1
    if not ok or not _same(index, op2.params["index"]):
        raise OnnxExportError(f"{op.where}: indexing with {index!r} has no ONNX mapping (whole numbers, slices "
                              f"and ... map; arrays, None and masks do not)")
    if Ellipsis in items:
        e = items.index(Ellipsis)
        items = items[:e] + (slice(None),) * (ndim - len(items) + 1) + items[e + 1:]
    starts, ends, axes, steps, picks = [], [], [], [], []
    for axis, i in enumerate(items):
        if isinstance(i, slice):
            if i == slice(None):
                continue
            step = 1 if i.step is None else int(i.step)
            starts.append((0 if step > 0 else -1) if i.start is None else int(i.start))
            ends.append((_INT64_MAX if step > 0 else -_INT64_MAX - 1) if i.stop is None else int(i.stop))
            axes.append(axis)
            steps.append(step)
        else:
            picks.append((axis, int(i)))
    y = ins[0]
    if axes:
        y = g.node("Slice", [y] + [g.const(np.asarray(v, dtype=np.int64), "slice") for v in (starts, ends, axes, steps)])
    for axis, i in reversed(picks):  # the last axis first, so that the others keep their numbers
        y = g.node("Gather", [y, g.const(np.asarray(i, dtype=np.int64), "index")], axis=axis)
    return y if y != ins[0] else g.node("Identity", [y])


def _mappings():
    from .functional import conv, fused, layers, ops, pool  # noqa: PLC0415

    return {
        ops.Add: _binary("Add"), ops.Sub: _binary("Sub"), ops.Mul: _mul, ops.Div: _binary("Div"),
        ops.MatMul: _binary("MatMul"),
        ops.Neg: _unary("Neg"), ops.Exp: _unary("Exp"), ops.Log: _unary("Log"), ops.Sqrt: _unary("Sqrt"),
        ops.Abs: _unary("Abs"), ops.ReLU: _unary("Relu"), ops.Sigmoid: _unary("Sigmoid"), ops.Tanh: _unary("Tanh"),
        ops.Pow: _pow, ops.Clamp: _clamp, ops.Cast: _cast,
        ops.Sum: _reduce("ReduceSum"), ops.Max: _max,
        ops.Reshape: _reshape, ops.Permute: _permute, ops.GetItem: _getitem,
        ops.Softmax: _softmax("Softmax"), ops.LogSoftmax: _softmax("LogSoftmax"),
        layers.Linear: _linear, layers.BatchNormReLUEval: _bn_relu_eval, layers.LocalResponseNorm: _lrn,
        conv.ConvNd: _conv_op, pool.MaxPoolNd: _max_pool, pool.SumPoolNd: _sum_pool, pool.LPPoolNd: _lp_pool,
        fused.ConvMaxPoolAct: _conv_maxpool_act, fused.ConvActAvgPool: _conv_act_avgpool,
    }


def mapped_operators() -> list[str]:
    """The names of the operators (Function classes) that export to ONNX."""
    return sorted(fn.__name__ for fn in _mappings())


_WHY = {"BatchNormTrain": "batch norm with the batch's statistics (a BatchNorm without running statistics, "
                          "track_running_stats=False)",
        "BatchNormReLUTrain": "batch norm with the batch's statistics (a BatchNorm without running statistics)",
        "CrossEntropy": "a loss"}


# ------------------------------------------------------------------------------ export
def _dtype_of(model):
    for p in model.parameters():
        return p.dtype, p.device
    return np.dtype(backend.DEFAULT_DTYPE), "cpu"


def _check_alike(op, op2, i):
    if op.fn is not op2.fn or len(op.inputs) != len(op2.inputs):
        raise OnnxExportError(f"the model runs other operators at batch {_BATCHES[1]} than at batch {_BATCHES[0]} "
                              f"(operator {i}: {op.fn.__name__}, then {op2.fn.__name__}): its graph depends on the "
                              f"input, and ONNX export needs one graph")


def export_onnx(model, input_shape, *, fuse: bool = True, metadata: dict | None = None, name: str = "cnnlab",
                seed: int = 0):
    """An ONNX model (``onnx.ModelProto``) of ``model``, traced in eval mode.

    Args:
        model: any cnnlab Module taking one tensor (N, *input_shape) and returning one tensor.
        input_shape: one example's shape, without the batch, e.g. (1, 28, 28).
        fuse: trace ``nn.fuse(model)`` (the same values; batch norm + ReLU as one node).
        metadata: str -> str pairs for the model's metadata_props.
        name: the graph's name.
        seed: of the random inputs the pass is traced on.

    Raises:
        OnnxExportError: one line naming the operator (and layer) without an ONNX mapping, or what
            else keeps the model from being one static graph.
    """
    onnx = _onnx()
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or any(d < 1 for d in input_shape):
        raise OnnxExportError(f"input_shape must be one example's shape without the batch, e.g. (1, 28, 28); got "
                              f"{input_shape}")
    modes = [(m, m.training) for m in model.modules()]
    traced = nn.fuse(model) if fuse else model
    param_names = {id(t): k for k, t in model.state_dict().items()}
    dtype, device = _dtype_of(model)
    rng = np.random.default_rng(seed)
    try:
        traced.eval()
        records = []
        for batch in _BATCHES:
            x = rng.standard_normal((batch,) + input_shape).astype(dtype)
            records.append(_record(traced, backend.to_device(x, device)))
    finally:
        for m, mode in modes:
            m.training = mode
    (rec, inp, out), (rec2, inp2, out2) = records
    table = _mappings()
    g = _Graph(onnx, param_names)
    g.dynamic.add(id(inp))
    g.name_of[id(inp)] = INPUT
    dyn2, folded2 = {id(inp2)}, {}
    if len(rec.ops) != len(rec2.ops):
        raise OnnxExportError(f"the model runs {len(rec.ops)} operators at batch {_BATCHES[0]} and {len(rec2.ops)} at "
                              f"batch {_BATCHES[1]}: its graph depends on the input, and ONNX export needs one graph")
    for i, (op, op2) in enumerate(zip(rec.ops, rec2.ops)):
        _check_alike(op, op2, i)
        dyn = [id(t) in g.dynamic for t in op.inputs]
        if dyn != [id(t) in dyn2 for t in op2.inputs]:
            raise OnnxExportError(f"{op.where}: {op.fn.__name__}'s inputs come from the input at one batch size and "
                                  f"not at the other")
        for t, t2, d in zip(op.inputs, op2.inputs, dyn):
            if not d and id(t) not in param_names and not _same(g.value(t), _value2(t2, folded2)):
                raise OnnxExportError(f"{op.where}: {op.fn.__name__} takes a value that differs between two passes "
                                      f"but was not made by cnnlab's operators (computed from the input with NumPy on "
                                      f"x.data, or random): it cannot be recorded in the graph")
        emit = table.get(op.fn)
        if emit is None and any(dyn):
            why = _WHY.get(op.fn.__name__, "")
            raise OnnxExportError(f"{op.where} uses the operator {op.fn.__name__}{' (' + why + ')' if why else ''}, "
                                  f"which has no ONNX mapping; mapped: {', '.join(mapped_operators())}")
        if op.fn is not _reshape_class() and not _same(op.params, op2.params):
            raise OnnxExportError(f"{op.where}: {op.fn.__name__}'s settings change with the batch size "
                                  f"({op.params} at batch {_BATCHES[0]}, {op2.params} at batch {_BATCHES[1]})")
        if not any(dyn):  # an operator on constants only: its result is a constant
            g.folded[id(op.out)] = np.asarray(backend.to_device(op.out.data, "cpu"))
            folded2[id(op2.out)] = np.asarray(backend.to_device(op2.out.data, "cpu"))
            continue
        ins = [g.name(t) for t in op.inputs]
        g.name_of[id(op.out)] = emit(g, op, op2, ins)
        g.dynamic.add(id(op.out))
        dyn2.add(id(op2.out))
    if id(out) not in g.dynamic:
        raise OnnxExportError("the model's output is not computed from its input by cnnlab's operators (a value "
                              "made with NumPy on x.data, or a constant?): nothing to record in a graph")
    result = g.name_of[id(out)]
    if result == INPUT:
        result = g.node("Identity", [INPUT])
    for node in g.nodes:  # the last operator's output is the graph's
        node.input[:] = [OUTPUT if n == result else n for n in node.input]
        node.output[:] = [OUTPUT if n == result else n for n in node.output]
    nodes, inits = _prune(g.nodes, g.initializers, OUTPUT)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    out_dims = ["batch" if a != b else a for a, b in zip(out.shape, out2.shape)]
    graph = onnx.helper.make_graph(
        nodes, name,
        [onnx.helper.make_tensor_value_info(INPUT, elem, ["batch", *input_shape])],
        [onnx.helper.make_tensor_value_info(OUTPUT, elem, out_dims)],
        initializer=inits)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="cnnlab", producer_version=_version())
    proto.ir_version = 9  # opset 20 came with IR 9 (onnx 1.15, ONNX Runtime 1.17)
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _reshape_class():
    from .functional import ops  # noqa: PLC0415

    return ops.Reshape


def _value2(t, folded):
    return folded[id(t)] if id(t) in folded else np.asarray(backend.to_device(t.data, "cpu"))


def _prune(nodes, initializers, output):
    """The nodes the output needs (in order) and the initializers they read."""
    needed, keep = {output}, []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    return keep, [t for name, t in initializers.items() if name in needed]


def _version() -> str:
    from . import __version__  # noqa: PLC0415 - the package imports this module's importers

    return __version__


def save(proto, path) -> Path:
    """Write an ONNX model to ``path`` atomically (all of it or nothing); returns the path."""
    path = Path(path)
    data = proto.SerializeToString()
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def run_metadata(run) -> dict:
    """The metadata_props an exported run carries: how to make its input, what its outputs mean."""
    from .data import class_names, form_for  # noqa: PLC0415

    config = run.config
    classes = list(config.classes or class_names(config.dataset))
    _, form = form_for(config.dataset)
    return {
        "cnnlab.model": json.dumps(run.spec, sort_keys=True),
        "cnnlab.version": _version(),
        "cnnlab.dataset": config.dataset,
        "cnnlab.input": json.dumps({"channels": 1, "height": 28, "width": 28, "form": form,
                                    "layout": "NCHW", "dtype": "float32"}),
        "cnnlab.normalization": json.dumps({"mean": config.mean, "std": config.std,
                                            "formula": "(pixel / 255 - mean) / std"}),
        "cnnlab.classes": json.dumps(classes),
        "cnnlab.output": "logits (softmax gives the class probabilities)",
    }


def export_run(run_dir, path) -> Path:
    """Export a saved run (``runs.load``) to an ONNX file at ``path``, its metadata recorded."""
    from . import runs  # noqa: PLC0415

    path = checkpoint.check_output_path(path)
    run = runs.load(run_dir)
    proto = export_onnx(run.model, (1, 28, 28), metadata=run_metadata(run), name=run.spec["name"])
    return save(proto, path)
