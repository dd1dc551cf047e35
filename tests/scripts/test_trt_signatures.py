"""scripts/trt_signatures.py: parsing and matching on small embedded samples, then the whole
check offline against the committed per-version snapshots (scripts/trt-api/), so a TensorRT
call the reviewed list misses, or a fake that drifts from the real API, fails here.

The download and the dump (make trt-signatures) are not run here: they need the network.
"""

from __future__ import annotations

import math
import sys

import pytest

from edge_mer.runners.tensorrt.device import TrtVersion
from tests import REPO

sys.path.insert(0, str(REPO / "scripts"))

import trt_api
import trt_fakes
from trt_api import Use

SAMPLE = """\
version 10.3.0
class IExecutionContext
method IExecutionContext.set_input_shape(self: T, name: str, shape: tuple) -> bool
method IExecutionContext.set_input_shape(self: T, name: str, shape: tensorrt.Dims) -> bool
method IExecutionContext.execute_async_v3(self: T, stream_handle: int) -> bool
property IExecutionContext.engine ro
class IBuilderConfig
property IBuilderConfig.profile_stream rw
method IBuilderConfig.set_flag(self: T, flag: tensorrt.BuilderFlag) -> None
class ICudaEngine
method ICudaEngine.create_execution_context(self: T, strategy: S = <S.STATIC: 0>) -> T
class Logger
method Logger.__init__(self: T, min_severity: tensorrt.ILogger.Severity = <Severity.WARNING: 2>)
class BuilderFlag enum
enum BuilderFlag.FP16 = 0
enum BuilderFlag.INT8 = 1
buffer IHostMemory
function nptype(trt_type)
function volume(iterable, *more, **kw)
probe Dims<-tuple
"""


@pytest.fixture
def api() -> trt_api.Api:
    return trt_api.parse_dump(SAMPLE)


@pytest.mark.parametrize(
    ("text", "required", "maximum"),
    [
        ("f(self: X, name: str, shape: List[Tuple[int, int]]) -> bool", 2, 2),
        ("f(self: X, flags: int = 0) -> Y", 0, 1),
        ("f(self: X, a: int, b: capsule = None, c: Dict[str, int] = {}) -> None", 1, 3),
        ("f(self: X, min_severity: S = <Severity.WARNING: 2>) -> None", 0, 1),
        ("f(trt_type)", 1, 1),
        ("f(iterable, *more, **kw)", 1, math.inf),
        ("f(self: X) -> None", 0, 0),
    ],
)
def test_parse_sig_counts_positional_arguments(text: str, required: int, maximum: float) -> None:
    name, sig = trt_api.parse_sig(text)
    assert name == "f" and (sig.required, sig.maximum) == (required, maximum)


def test_parse_dump_reads_every_kind(api: trt_api.Api) -> None:
    assert api.version == "10.3.0"
    assert len(api.methods["IExecutionContext.set_input_shape"]) == 2
    assert api.properties == {
        "IExecutionContext.engine": False,
        "IBuilderConfig.profile_stream": True,
    }
    assert api.enums == {"BuilderFlag.FP16": 0, "BuilderFlag.INT8": 1}
    assert api.classes["BuilderFlag"] == "enum" and api.buffers == {"IHostMemory"}
    assert set(api.functions) == {"nptype", "volume"} and api.probes == {"Dims<-tuple"}
    assert {"set_input_shape", "FP16", "nptype", "BuilderFlag"} <= api.names()
    assert "__init__" not in api.names()
    with pytest.raises(ValueError, match="unknown line"):
        trt_api.parse_dump("strange thing\n")


@pytest.mark.parametrize(
    ("use", "version", "text", "ok"),
    [
        (
            Use("IExecutionContext.set_input_shape", "call", "f", 2, "named_tensors"),
            "10.3",
            "✓ 2",
            True,
        ),
        (
            Use("IExecutionContext.set_input_shape", "call", "f", 3),
            "10.3",
            "✗ takes 2, called with 3",
            False,
        ),
        (
            Use("IExecutionContext.execute_async_v2", "call", "f", 2, "not named_tensors"),
            "10.3",
            "—",
            True,
        ),
        (Use("IExecutionContext.execute_async_v2", "call", "f", 2), "10.3", "✗ absent", False),
        (
            Use("IExecutionContext.execute_async_v3", "call", "f", 1, "named_tensors"),
            "8.2",
            "(1)",
            True,
        ),
        (Use("ICudaEngine.create_execution_context", "call", "f", 0), "10.3", "✓ 0-1", True),
        (Use("Logger", "new", "f", 0), "10.3", "✓ 0-1", True),
        (Use("BuilderFlag.INT8", "enum", "f", branch="int8_flag"), "10.3", "✓", True),
        (
            Use("BuilderFlag.STRONGLY", "enum", "f", branch="int8_flag", optional=True),
            "10.3",
            "—",
            True,
        ),
        (Use("IExecutionContext.engine", "set", "f"), "10.3", "✗ read-only", False),
        (Use("IBuilderConfig.profile_stream", "set", "f"), "10.3", "✓", True),
        (Use("IHostMemory", "buffer", "f"), "10.3", "✓", True),
        (Use("volume", "function", "f", 4), "10.3", "✓ 1-*", True),
        (Use("Dims<-list", "probe", "f"), "10.3", "✗ no", False),
    ],
)
def test_check_use_per_version(
    api: trt_api.Api, use: Use, version: str, text: str, ok: bool
) -> None:
    cell = trt_api.check_use(use, api, TrtVersion.parse(version))
    assert (cell.text(use.optional), cell.ok) == (text, ok)


def test_branch_predicates() -> None:
    v8, v11 = TrtVersion(8, 2), TrtVersion(11, 4)
    assert trt_api.branch_applies("", v8)
    assert trt_api.branch_applies("not named_tensors", v8)
    assert not trt_api.branch_applies("named_tensors", v8)
    assert trt_api.branch_applies("int8_flag or strongly_typed_only", v11)
    assert not trt_api.branch_applies("int8_flag or fp16_flag", v11)


CODE = """
class Logger(trt.ILogger):
    def log(self, severity, msg):
        pass

def run(ctx, engine, trt, plan, name):
    ctx.set_input_shape(plan.name, (1, 2))
    ctx.execute_async_v3(0)
    ctx.infer_shapes()
    plan.shape.append(1)
    engine.create_execution_context()
    getattr(trt.BuilderFlag, name)
    getattr(other, name)
    config.set_flag(trt.BuilderFlag.INT8)
    return "FP16", "HELLO"
"""
TRT_NAMES = {"set_input_shape", "execute_async_v3", "infer_shapes", "name", "shape", "log"}
TRT_NAMES |= {"create_execution_context", "BuilderFlag", "INT8", "FP16", "set_flag", "append"}
TRT_NAMES |= {"ILogger"}


def test_coverage_flags_what_the_list_misses_and_what_is_stale() -> None:
    occs = trt_api.scan_source(CODE)
    assert trt_api.Occurrence("log", "override", 3, 2) in occs
    assert trt_api.Occurrence("set_input_shape", "call", 7, 2) in occs
    assert trt_api.Occurrence("trt.BuilderFlag", "dynamic", 12) in occs
    uses = [
        Use("ILogger", "subclass", "m.py"),
        Use("ILogger.log", "override", "m.py", 2),
        Use("IExecutionContext.set_input_shape", "call", "m.py", 2),
        Use("IExecutionContext.execute_async_v3", "call", "m.py", 2),  # the code passes 1
        Use("ICudaEngine.create_execution_context", "call", "m.py"),
        Use("IBuilderConfig.set_flag", "call", "m.py", 1),
        Use("BuilderFlag.INT8", "enum", "m.py"),
        Use("ICudaEngine.num_io_tensors", "get", "m.py"),  # no longer used
        Use("IHostMemory", "buffer", "m.py", implicit=True),  # not visible to the scan
    ]
    ignored = {("m.py", "name"): "plan.name", ("m.py", "shape"): "x", ("m.py", "gone"): "y"}
    problems = trt_api.check_coverage({"m.py": occs}, uses, TRT_NAMES, {"INT8", "FP16"}, ignored)
    text = "\n".join(problems)
    assert "m.py:9: call 'infer_shapes' is a TensorRT name" in text  # missed by the list
    assert "m.py:15: str 'FP16' is a TensorRT name" in text  # an enum member by name
    assert "the list says 2 argument(s), m.py line 8: 1" in text
    assert "ICudaEngine.num_io_tensors (get): no longer used in m.py" in text
    assert "getattr(other, <variable>) is not reviewed" in text
    assert "IGNORED entry 'gone' matches nothing" in text
    assert "append" not in text and "HELLO" not in text and "BuilderFlag" not in text
    assert len(problems) == 6, problems


FAKE = """
class FakeContext:
    TensorIOMode = SimpleNamespace(INPUT=1, SIDEWAYS=3)

    def __init__(self, engine):
        self.engine = engine
        self.execute_async_v3 = None

    def set_input_shape(self, name, shape, extra=None):
        return True

    def execute_async_v2(self, bindings):
        return True

    @property
    def set_flag(self):
        return 0

    def helper(self):
        pass

    alias = set_input_shape
"""


def test_fakes_are_compared_with_the_real_class(api: trt_api.Api) -> None:
    members = trt_fakes.fake_members(FAKE, "FakeContext")
    kinds = {m.name: m.kind for m in members}
    assert kinds["engine"] == "attribute" and kinds["alias"] == "method"
    assert kinds["TensorIOMode"] == "enum"
    api.enums["IExecutionContext.TensorIOMode.INPUT"] = 1
    api.methods["IExecutionContext.set_flag"] = api.methods["IBuilderConfig.set_flag"]
    problems = trt_fakes.check_fake(members, "IExecutionContext", [api], lambda n: n == "__init__")
    text = "\n".join(problems)
    assert "IExecutionContext.execute_async_v3: a plain attribute in the fake, a method" in text
    assert "execute_async_v2: the fake has a method TensorRT does not have" in text
    assert "IExecutionContext.set_flag: a property in the fake, a method in TensorRT" in text
    assert "helper: the fake has a method" in text and "alias: the fake has a method" in text
    assert "TensorIOMode: the fake has ['SIDEWAYS']" in text
    assert "set_input_shape" not in text.replace("alias", "")  # 2-3 arguments fit 2
    assert len(problems) == 6, problems


def test_the_code_and_the_fakes_match_the_committed_snapshots(capsys) -> None:
    """The whole check, offline: every TensorRT call of the code is listed and fits the real
    bindings of 8.6 / 10.3 / 10.13 / 11.4, the fakes mirror them, docs/engines.md is current."""
    import trt_signatures

    assert trt_signatures.main(["--check"]) == 0, capsys.readouterr().out
