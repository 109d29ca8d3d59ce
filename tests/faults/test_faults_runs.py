"""Fault cases of run directories (issue 17): spec.json of every wrong JSON type, model sizes,
weights that are not finite or not floating point, malformed safetensors, pipes as run files."""

import inspect
import json
import os
import struct

import numpy as np
import pytest
from faultkit import one_line_error, returns
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from cnnlab import checkpoint, models, runs
from cnnlab.checkpoint import RunError

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# One JSON value of every type, and numbers at and beyond the edges.
JSON_VALUES = ["x", "", [], [1, 2], {}, {"a": 1}, None, True, False, 3.5, 0, -1, 10**7, 2**70, 1e308]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "article"
    checkpoint.save_run(run, models.build("article"), models.spec("article"), {"dataset": "mnist"}, {})
    return run


def _with_spec(run, text):
    (run / checkpoint.SPEC).write_text(text)
    return returns(runs.load, run)


# ----------------------------------------------------------------------------- spec.json
@pytest.mark.parametrize("value", JSON_VALUES[:8] + ["[[[[" * 50_000, "{broken", "\xff\xfe"])
def test_spec_json_that_is_no_object(saved_run, value):
    text = value if isinstance(value, str) and value[:1] in "[{\xff" else json.dumps(value)
    one_line_error(_with_spec(saved_run, text), RunError, saved_run / "spec.json")


def test_spec_json_name_and_kwargs_of_every_wrong_type(saved_run):
    for value in JSON_VALUES:
        if not isinstance(value, str):
            one_line_error(_with_spec(saved_run, json.dumps({"name": value})), RunError, "spec.json", '"name"')
        if not isinstance(value, dict):
            one_line_error(_with_spec(saved_run, json.dumps({"name": "article", "kwargs": value})), RunError,
                           "spec.json", '"kwargs"')
    one_line_error(_with_spec(saved_run, json.dumps({"name": "resnet-9000"})), RunError, "unknown model")


def test_every_argument_of_every_architecture_with_every_wrong_value(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    tried = 0
    for name, arch in models.MODELS.items():
        for key in inspect.signature(arch.builder).parameters:
            for value in JSON_VALUES:
                try:
                    models.spec(name, **{key: value})
                    continue  # an acceptable value (e.g. 0 for p): not a fault
                except ValueError:
                    pass
                (run / checkpoint.SPEC).write_text(json.dumps({"name": name, "kwargs": {key: value}}))
                result = returns(runs.load, run)  # never built: the spec is refused first
                one_line_error(result, RunError, run / "spec.json", key)
                tried += 1
    assert tried > 300


def test_the_size_rule_names_key_and_limits(saved_run):
    for kwargs, needles in [({"maps": 10**7}, ["kwargs.maps", "1..65536"]),
                            ({"maps": 60000, "classes": 60000}, ["parameters", "100,000,000"]),
                            ({"activation": "gelu"}, ["kwargs.activation names an unknown activation 'gelu'",
                                                      "relu, sigmoid, tanh"]),
                            ({"maps": 3.0}, ["kwargs.maps", "whole number"]),
                            ({"pool": "median"}, ["kwargs.pool", "max, l2, avg"])]:
        text = json.dumps({"name": "article", "kwargs": kwargs})
        one_line_error(_with_spec(saved_run, text), RunError, "spec.json", *needles)
    _with_spec(saved_run, json.dumps(models.spec("article")))  # put back


@pytest.mark.parametrize("name", list(models.MODELS))
def test_each_parameter_formula_counts_the_built_model(name):
    arch = models.MODELS[name]
    signature = inspect.signature(arch.builder)
    small = {k: v.default // 3 + 1 if isinstance(v.default, int) else v.default  # other widths than the defaults
             for k, v in signature.parameters.items()}
    if name == "cs231n":
        small["size"] = 3
    if name == "alexnet":
        small["c"] = (4, 5, 6, 7, 8)
    for kwargs in ({}, small):
        bound = signature.bind(**kwargs)
        bound.apply_defaults()
        assert arch.parameters(**bound.arguments) == models.build(models.spec(name, **kwargs)).num_parameters()


# ----------------------------------------------------------------------------- weights
def _state(dtype=np.float32):
    return {k: v.numpy().astype(dtype) for k, v in models.build("article").state_dict().items()}


@pytest.mark.parametrize("label,tensors,needles", [
    ("all NaN", lambda: {k: np.full_like(v, np.nan) for k, v in _state().items()}, ["NaN or infinite", "'0.bias'"]),
    ("one inf", lambda: {k: np.where(np.arange(v.size).reshape(v.shape) == 7, np.inf, v).astype(np.float32)
                         if k == "4.weight" else v for k, v in _state().items()}, ["'4.weight' holds 1 NaN"]),
    ("int8", lambda: _state(np.int8), ["is int8, not floating point"]),
    ("bool", lambda: {k: v > 0 for k, v in _state().items()}, ["is bool, not floating point"]),
    ("uint8", lambda: _state(np.uint8), ["uint8"]),
])
def test_weights_that_are_not_finite_floats_are_refused(tmp_path, label, tensors, needles):
    run = tmp_path / "r"
    checkpoint.save_run(run, models.build("article"), models.spec("article"), {"dataset": "mnist"}, {})
    save_file(tensors(), str(run / checkpoint.WEIGHTS))
    one_line_error(returns(runs.load, run), RunError, run / "model.safetensors", *needles)


def test_float64_and_float16_weights_still_load(tmp_path):
    run = tmp_path / "r"
    checkpoint.save_run(run, models.build("article"), models.spec("article"), {"dataset": "mnist"}, {})
    for dtype in (np.float64, np.float16):
        save_file(_state(dtype), str(run / checkpoint.WEIGHTS))
        assert runs.load(run).model is not None


def test_a_weights_file_over_the_limit_is_refused_unread(tmp_path, saved_run):
    one_line_error(returns(checkpoint.load_weights, saved_run / checkpoint.WEIGHTS, max_bytes=1000), RunError,
                   "over cnnlab's limit", "CNNLAB_MAX_DATA_BYTES")


def _safetensors(header, body=b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


_DTYPES = st.sampled_from(["F16", "F32", "F64", "BF16", "I8", "U8", "BOOL", "I64", "F8_E4M3", "X"])
_SHAPES = st.lists(st.one_of(st.integers(0, 4), st.integers(-2, 2**64)), max_size=4)
_OFFSETS = st.lists(st.one_of(st.integers(0, 64), st.integers(-1, 2**64)), min_size=0, max_size=3)
_ENTRY = st.one_of(st.fixed_dictionaries({"dtype": _DTYPES, "shape": _SHAPES, "data_offsets": _OFFSETS}),
                   st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2))
_HEADERS = st.one_of(st.dictionaries(st.text(max_size=6), _ENTRY, max_size=3), st.lists(st.integers(), max_size=2),
                     st.integers(), st.binary(max_size=40))


@FUZZ
@given(header=_HEADERS, body=st.binary(max_size=64), length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_any_safetensors_header_loads_or_raises_one_run_error(tmp_path, header, body, length):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_safetensors(header, body, length))
    result = returns(checkpoint.load_weights, path)
    if isinstance(result, dict):
        assert all(a.dtype.kind == "f" and np.isfinite(a).all() for a in result.values())
    else:
        one_line_error(result, RunError, path)


# ----------------------------------------------------------------------------- pipes as run files
@pytest.mark.parametrize("name", [checkpoint.WEIGHTS, checkpoint.SPEC, checkpoint.CONFIG, checkpoint.METRICS])
def test_a_named_pipe_as_a_run_file_does_not_hang(tmp_path, name):
    run = tmp_path / "r"
    checkpoint.save_run(run, models.build("article"), models.spec("article"), {"dataset": "mnist"}, {})
    (run / name).unlink()
    os.mkfifo(run / name)
    result = returns(runs.load, run, fifo=run / name)
    one_line_error(result, RunError, run / name, "named pipe")
