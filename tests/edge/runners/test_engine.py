"""TensorRT engines: plan, names, sidecars, checks, and the build driven by a fake TensorRT.

The fake ``tensorrt`` module below mimics the Python API surface edge-mer calls, per version
(8.x keeps EXPLICIT_BATCH, 11.x drops the precision builder flags), and records every call,
so the call sequence of each version path is asserted here without a GPU. The test marked
``jetson`` builds and loads real engines where TensorRT is importable.
"""

from __future__ import annotations

import enum
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
import typer
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edge_mer.bundle import Bundle, BundleWriter, sha256_file
from edge_mer.errors import EngineError, InputError, MissingDependencyError
from edge_mer.runners.tensorrt import build as trt_build
from edge_mer.runners.tensorrt import check as engine_check
from edge_mer.runners.tensorrt import device as trt_device
from edge_mer.runners.tensorrt import plan as trt_plan
from edge_mer.runners.tensorrt.check import check_engine, find_engine
from edge_mer.runners.tensorrt.device import DeviceFacts, TrtVersion
from edge_mer.runners.tensorrt.plan import BatchRange, EngineName, EnginePlan, make_plan

H, W, C, D, K, WINDOW = 8, 8, 1, 4, 2, 4

# --------------------------------------------------------------------------- tiny bundles


def _model(nodes, inputs, outputs, inits, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _encoder(seed: int, qdq: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((H * W * C, D)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-1, H * W * C], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["f", "flat"], ["x"]),
    ]
    if qdq:  # symmetric int8, zero point 0: what TensorRT's explicit quantization accepts
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
            helper.make_node("MatMul", ["xd", "w"], ["features"]),
        ]
    else:
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["features"]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", H, W, C])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", D])],
        inits,
    )


def _step(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return _model(
        [
            helper.make_node("MatMul", ["features", "wk"], ["logits"]),
            helper.make_node("Add", ["h", "b"], ["h_next"]),
        ],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", D]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 1, 3]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K]),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["N", 1, 3]),
        ],
        [
            numpy_helper.from_array(rng.standard_normal((D, K)).astype(np.float32), "wk"),
            numpy_helper.from_array(np.ones((1, 1, 3), np.float32), "b"),
        ],
    )


def _clip() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("Cast", ["clip"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["c"], ["m"], axes=[2, 3, 4], keepdims=0),
            helper.make_node("MatMul", ["m", "wc"], ["logits"]),
        ],
        [helper.make_tensor_value_info("clip", TensorProto.UINT8, ["N", "T", H, W, C])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K])],
        [numpy_helper.from_array(np.ones((WINDOW, K), np.float32), "wc")],
    )


def make_bundle(path: Path, *, int8: bool = True, seed: int = 0, step_fp16: bool = False) -> Bundle:
    with BundleWriter(path) as w:
        graphs: dict[str, Any] = {}
        files = {
            "encoder": ("encoder.onnx", _encoder(seed)),
            "step": ("step.onnx", _step(seed)),
            "clip": ("clip.onnx", _clip()),
        }
        if int8:
            files["encoder_int8"] = ("encoder.int8.onnx", _encoder(seed, qdq=True))
        if step_fp16:  # stands in for a ModelOpt AutoCast graph; the types do not matter here
            files["step_fp16"] = ("step.fp16.onnx", _step(seed + 100))
        for key, (rel, model) in files.items():
            onnx.save(model, str(w.path(rel)))
            graphs[key] = w.entry(rel, precision="int8" if key == "encoder_int8" else "fp32")
        w.commit(
            {
                "schema": 1,
                "name": "tiny",
                "labels": ["neg", "pos"],
                "input": {"height": H, "width": W, "channels": C, "fps": 30, "window": WINDOW},
                "state": [{"name": "h", "shape": [1, 3], "dtype": "float32"}],
                "graphs": graphs,
                "verification": {},
            }
        )
    return Bundle.open(path)


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return make_bundle(tmp_path / "b")


def facts(version: str = "10.3.0", cc: tuple[int, int] = (8, 7), name: str = "Orin") -> DeviceFacts:
    return DeviceFacts(TrtVersion.parse(version), cc, name, "R36.4.0")


# --------------------------------------------------------------------------- a fake tensorrt


class FakeTrt(types.ModuleType):
    """Just enough of ``tensorrt``'s Python API, shaped after ``version``, recording calls."""

    def __init__(
        self,
        version: str = "10.3.0",
        *,
        parse_ok: bool = True,
        build_ok: bool = True,
        cache_ok: bool = True,
    ) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple[Any, ...]] = []
        major = int(version.split(".")[0])
        net_flags = {}
        if major < 11:
            net_flags["EXPLICIT_BATCH"] = 0
        if major == 10:
            net_flags["STRONGLY_TYPED"] = 1
        if major >= 11:  # EXPLICIT_BATCH removed; STRONGLY_TYPED deprecated, ignored
            net_flags["STRONGLY_TYPED"] = 0
        self.NetworkDefinitionCreationFlag = SimpleNamespace(**net_flags)
        self.BuilderFlag = SimpleNamespace(
            **({"FP16": "FP16", "INT8": "INT8", "TF32": "TF32"} if major < 11 else {"TF32": "TF32"})
        )
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        severity = enum.Enum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")
        fake = self

        class ILogger:
            Severity = severity

            def __init__(self) -> None:
                pass

        class Network:
            def __init__(self) -> None:
                self.inputs: list[SimpleNamespace] = []
                self.source = ""

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, i: int) -> SimpleNamespace:
                return self.inputs[i]

        class OnnxParser:
            def __init__(self, network: Network, logger: Any) -> None:
                self.network, self.errors = network, []

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse_from_file", Path(path).name))
                if not parse_ok:
                    self.errors = ["In node 3 (Cast): UNSUPPORTED_NODE"]
                    return False
                model = onnx.load(path)
                for vi in model.graph.input:
                    dims = tuple(
                        d.dim_value if d.HasField("dim_value") else -1
                        for d in vi.type.tensor_type.shape.dim
                    )
                    self.network.inputs.append(SimpleNamespace(name=vi.name, shape=dims))
                self.network.source = Path(path).name
                return True

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, i: int) -> str:
                return self.errors[i]

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return b"CACHE:" + fake.__version__.encode()

        class Config:
            def set_memory_pool_limit(self, pool: str, n: int) -> None:
                fake.calls.append(("set_memory_pool_limit", pool, n))

            def __setattr__(self, key: str, value: Any) -> None:
                fake.calls.append(("config." + key, value))

            def set_flag(self, flag: str) -> None:
                fake.calls.append(("set_flag", flag))

            def add_optimization_profile(self, profile: Any) -> int:
                fake.calls.append(("add_optimization_profile",))
                return 0

            def create_timing_cache(self, data: bytes) -> Cache:
                fake.calls.append(("create_timing_cache", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                fake.calls.append(("set_timing_cache", ignore_mismatch))
                return cache_ok or not cache.data

        class Profile:
            def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
                fake.calls.append(("set_shape", name, tuple(mn), tuple(opt), tuple(mx)))

        class Builder:
            def __init__(self, logger: Any) -> None:
                fake.calls.append(("Builder",))
                self.logger = logger

            def create_network(self, flags: int) -> Network:
                fake.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> Any:
                fake.calls.append(("build_serialized_network", network.source))
                if not build_ok:
                    self.logger.log(severity.ERROR, "Error Code 2: OutOfMemory")
                    return None
                return memoryview(f"ENGINE:{fake.__version__}:{network.source}".encode())

        class Runtime:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                if bytes(data).startswith(f"ENGINE:{fake.__version__}:".encode()):
                    return SimpleNamespace(data=bytes(data))
                self.logger.log(
                    severity.ERROR,
                    "1: [stdArchiveReader.cpp::StdArchiveReader::"
                    "32] Error Code 1: Serialization (Serialization assertion "
                    "stdVersionRead == kSERIALIZATION_VERSION failed.Version tag "
                    "does not match.)",
                )
                return None

        self.ILogger, self.OnnxParser, self.Builder, self.Runtime = (
            ILogger,
            OnnxParser,
            Builder,
            Runtime,
        )

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


def build_all(
    bundle: Bundle, version: str, **kw: Any
) -> tuple[FakeTrt, trt_plan.EnginePlan, list[trt_build.BuildResult]]:
    fake = FakeTrt(
        version, **{k: kw.pop(k) for k in ("parse_ok", "build_ok", "cache_ok") if k in kw}
    )
    force = kw.pop("force", False)
    plan = make_plan(bundle, facts(version), **kw)
    return fake, plan, trt_build.build_engines(bundle, plan, fake, force=force)


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("8.5.2.2", (8, 5, 2, 2)),
        ("8.6.2", (8, 6, 2, 0)),
        ("10.3.0", (10, 3, 0, 0)),
        ("10.13", (10, 13, 0, 0)),
        ("11.4.1", (11, 4, 1, 0)),
        ("10.3.0.post1", (10, 3, 0, 0)),
    ],
)
def test_version_parse(text: str, parts: tuple[int, ...]) -> None:
    v = TrtVersion.parse(text)
    assert (v.major, v.minor, v.patch, v.build) == parts
    assert str(v) == ".".join(map(str, parts[:3]))


def test_version_parse_rejects_garbage() -> None:
    with pytest.raises(EngineError, match="TensorRT version"):
        TrtVersion.parse("trt")


PREDICATES = (
    "named_tensors",
    "binding_api",
    "explicit_batch_flag_needed",
    "strongly_typed_available",
    "strongly_typed_only",
    "int8_flag",
    "fp16_flag",
    "memory_pool_api",
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.2.1", (False, True, True, False, False, True, True, False)),
        ("8.5.2", (True, True, True, False, False, True, True, True)),
        ("8.6.2", (True, True, True, False, False, True, True, True)),
        ("10.3.0", (True, False, False, True, False, True, True, True)),
        ("10.13", (True, False, False, True, False, True, True, True)),
        ("11.4.1", (True, False, False, True, True, False, False, True)),
    ],
)
def test_version_predicates(text: str, expected: tuple[bool, ...]) -> None:
    v = TrtVersion.parse(text)
    assert {p: getattr(v, p) for p in PREDICATES} == dict(zip(PREDICATES, expected, strict=True))


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("8.5.2", ("EXPLICIT_BATCH",)),
        ("8.6.2", ("EXPLICIT_BATCH",)),
        ("10.3.0", ()),
        ("10.13", ()),
        ("11.4.1", ("STRONGLY_TYPED",)),
    ],
)
def test_network_flags(text: str, flags: tuple[str, ...]) -> None:
    assert trt_device.network_flag_names(TrtVersion.parse(text)) == flags


# --------------------------------------------------------------------------- device facts


def test_l4t_release(tmp_path: Path) -> None:
    line = (
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
        "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
    )
    assert trt_device.parse_l4t_release(line) == "R35.4.1"
    assert trt_device.parse_l4t_release("Ubuntu 22.04") is None
    (tmp_path / "rel").write_text(line.replace("R35", "R36").replace("4.1", "4.0"))
    assert trt_device.read_l4t_release(tmp_path / "rel") == "R36.4.0"
    assert trt_device.read_l4t_release(tmp_path / "absent") is None


def test_gather_device_facts_with_fakes(tmp_path: Path) -> None:
    (tmp_path / "rel").write_text("# R36 (release), REVISION: 4.3, GCID: 1")
    probe = lambda: ((8, 7), "Orin")  # noqa: E731
    f = trt_device.gather_device_facts(FakeTrt("10.3.0"), probe, tmp_path / "rel")
    assert f == DeviceFacts(TrtVersion(10, 3, 0), (8, 7), "Orin", "R36.4.3")
    assert f.sm == "87"
    with pytest.raises(EngineError, match="too old"):
        trt_device.gather_device_facts(FakeTrt("7.1.3"), lambda: ((7, 2), "Xavier"), tmp_path / "x")


def test_missing_tensorrt_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError) as info:
        trt_device.gather_device_facts()
    assert info.value.exit_code == 2
    assert str(info.value) == trt_device.TENSORRT_MISSING
    assert "python3-libnvinfer" in str(info.value)


# --------------------------------------------------------------------------- names and paths


def test_engine_name_round_trip() -> None:
    f = facts("10.3.0")
    name = trt_plan.engine_filename("encoder", "1a2b3c4d5e6f" + "0" * 52, f, "int8", 8)
    assert name == "encoder-1a2b3c4d5e6f-trt10.3.0-sm87-int8-b8.engine"
    parsed = EngineName.parse(name)
    assert parsed == EngineName("encoder", "1a2b3c4d5e6f", "10.3.0", "87", "int8", 8)
    assert parsed is not None and parsed.filename == name
    assert EngineName.parse("encoder.engine") is None
    assert trt_plan.sidecar_path(Path("e/x.engine")) == Path("e/x.json")


def test_timing_cache_path(tmp_path: Path) -> None:
    assert (
        trt_plan.timing_cache_path(tmp_path, facts("8.6.2", (7, 2)))
        == tmp_path / "timing-8.6.2-sm72.cache"
    )


def test_rebuild_hint_names_engines_dir_only_when_not_default(tmp_path: Path) -> None:
    b = tmp_path / "b"
    assert trt_plan.rebuild_hint(b) == f"rebuild with: edge-mer build-engine {b}"
    assert trt_plan.rebuild_hint(b, b / "engines") == f"rebuild with: edge-mer build-engine {b}"
    assert trt_plan.rebuild_hint(b, tmp_path / "st").endswith(f"--engines-dir {tmp_path / 'st'}")


# --------------------------------------------------------------------------- plans


def test_plan_int8_on_weakly_typed_trt(bundle: Bundle) -> None:
    plan = make_plan(bundle, facts("10.3.0"))
    assert plan.precision == "int8"  # the default when the bundle has an INT8 encoder
    enc, step = plan.graphs
    assert (enc.graph, enc.source, enc.precision, enc.builder_flags) == (
        "encoder",
        "encoder_int8",
        "int8",
        ("INT8", "FP16"),
    )
    assert (step.graph, step.source, step.precision, step.builder_flags) == (
        "step",
        "step",
        "fp16",
        ("FP16",),
    )
    assert enc.onnx_sha256 == bundle.manifest["graphs"]["encoder_int8"]["sha256"]
    assert enc.engine_path.parent == bundle.path / "engines"
    assert enc.engine_path.name.endswith("-trt10.3.0-sm87-int8-b8.engine")
    assert plan.batch == BatchRange(1, 1, 8) and plan.workspace_mib == 256
    assert plan.timing_cache == bundle.path / "engines" / "timing-10.3.0-sm87.cache"
    assert enc.fixed_axes == {"frames": {1: H, 2: W, 3: C}}
    assert step.fixed_axes == {"h": {1: 1, 2: 3}}


def test_plan_without_int8_encoder(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", int8=False)
    plan = make_plan(b, facts())
    assert plan.precision == "fp16"
    assert [(g.source, g.precision) for g in plan.graphs] == [("encoder", "fp16"), ("step", "fp16")]
    with pytest.raises(InputError, match="no INT8 encoder"):
        make_plan(b, facts(), precision="int8")


def test_plan_fp32_and_clip_and_engines_dir(bundle: Bundle, tmp_path: Path) -> None:
    plan = make_plan(
        bundle,
        facts("8.6.2"),
        precision="fp32",
        include_clip=True,
        engines_dir=tmp_path / "state",
        max_batch=4,
        workspace_mib=0,
    )
    assert [(g.graph, g.precision, g.builder_flags) for g in plan.graphs] == [
        ("encoder", "fp32", ()),
        ("step", "fp32", ()),
        ("clip", "fp32", ()),
    ]
    assert all(g.engine_path.parent == tmp_path / "state" for g in plan.graphs)
    assert plan.graphs[2].fixed_axes == {"clip": {1: WINDOW, 2: H, 3: W, 4: C}}
    assert plan.graphs[0].engine_path.name.endswith("-fp32-b4.engine")


def test_plan_on_trt11_is_strongly_typed(bundle: Bundle, tmp_path: Path) -> None:
    plan = make_plan(bundle, facts("11.4.1"))
    enc, step = plan.graphs
    assert (enc.source, enc.precision, enc.builder_flags) == ("encoder_int8", "int8", ())
    # no FP16 flag in 11 and no FP16 step graph: the step runs in the ONNX's FP32, said so
    assert (step.source, step.precision, step.builder_flags) == ("step", "fp32", ())
    assert any("step_fp16" in n for n in plan.notes)
    b2 = make_bundle(tmp_path / "b2", step_fp16=True)
    step2 = make_plan(b2, facts("11.4.1")).graphs[1]
    assert (step2.source, step2.precision, step2.builder_flags) == ("step_fp16", "fp16", ())


@pytest.mark.parametrize("kw", [{"precision": "int4"}, {"max_batch": 0}, {"workspace_mib": -1}])
def test_plan_rejects_bad_options(bundle: Bundle, kw: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        make_plan(bundle, facts(), **kw)


def test_profile_shapes() -> None:
    b = BatchRange(1, 2, 8)
    assert trt_plan.profile_shapes("features", (-1, 4), b) == ((1, 4), (2, 4), (8, 4))
    assert trt_plan.profile_shapes("clip", (-1, -1, 8, 8, 1), b, {1: 16}) == (
        (1, 16, 8, 8, 1),
        (2, 16, 8, 8, 1),
        (8, 16, 8, 8, 1),
    )
    with pytest.raises(EngineError, match="dynamic axis 1"):
        trt_plan.profile_shapes("clip", (-1, -1, 8), b)


# --------------------------------------------------------------------------- the build


def test_build_trt8_explicit_batch_and_int8_flag(bundle: Bundle) -> None:
    fake, _, results = build_all(bundle, "8.5.2.2")
    assert [r.status for r in results] == ["built", "built"]
    assert fake.named("create_network") == [("create_network", 1 << 0)] * 2  # EXPLICIT_BATCH
    assert fake.named("set_flag") == [
        ("set_flag", "INT8"),
        ("set_flag", "FP16"),
        ("set_flag", "FP16"),
    ]
    assert (
        fake.named("set_memory_pool_limit")
        == [("set_memory_pool_limit", "WORKSPACE", 256 << 20)] * 2
    )
    assert fake.named("parse_from_file") == [
        ("parse_from_file", "encoder.int8.onnx"),
        ("parse_from_file", "step.onnx"),
    ]
    assert ("set_shape", "frames", (1, H, W, C), (1, H, W, C), (8, H, W, C)) in fake.calls
    assert ("set_shape", "h", (1, 1, 3), (1, 1, 3), (8, 1, 3)) in fake.calls
    assert ("set_shape", "features", (1, D), (1, D), (8, D)) in fake.calls
    names = [c[0] for c in fake.calls]
    assert names.index("set_shape") < names.index("build_serialized_network")


def test_build_trt10_no_explicit_batch(bundle: Bundle) -> None:
    fake, _, _ = build_all(bundle, "10.3.0")
    assert fake.named("create_network") == [("create_network", 0)] * 2
    assert ("set_flag", "INT8") in fake.calls and ("set_flag", "FP16") in fake.calls


def test_build_trt11_strongly_typed_no_precision_flags(bundle: Bundle) -> None:
    fake, _, results = build_all(bundle, "11.4.1")
    flag = 1 << int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert fake.named("create_network") == [("create_network", flag)] * 2
    assert fake.named("set_flag") == []
    assert [r.build.precision for r in results] == ["int8", "fp32"]


def test_build_trt82_uses_max_workspace_size(bundle: Bundle) -> None:
    fake, _, _ = build_all(bundle, "8.2.1", workspace_mib=64)
    assert fake.named("set_memory_pool_limit") == []
    assert fake.named("config.max_workspace_size") == [("config.max_workspace_size", 64 << 20)] * 2


def test_build_workspace_zero_leaves_default(bundle: Bundle) -> None:
    fake, _, _ = build_all(bundle, "10.3.0", workspace_mib=0)
    assert fake.named("set_memory_pool_limit") == []


def test_build_writes_plain_engine_and_sidecar(bundle: Bundle) -> None:
    _, plan, results = build_all(bundle, "10.3.0")
    enc = plan.graphs[0]
    data = enc.engine_path.read_bytes()
    assert data == b"ENGINE:10.3.0:encoder.int8.onnx"  # nothing prepended
    meta = json.loads(enc.sidecar_path.read_text())
    assert meta == results[0].sidecar
    assert meta["graph"] == "encoder" and meta["source"] == "encoder_int8"
    assert meta["onnx_sha256"] == bundle.manifest["graphs"]["encoder_int8"]["sha256"]
    assert meta["engine_sha256"] == sha256_file(enc.engine_path)
    assert meta["tensorrt"] == "10.3.0" and meta["compute_capability"] == "8.7"
    assert meta["gpu_name"] == "Orin" and meta["l4t_release"] == "R36.4.0"
    assert meta["precision"] == "int8" and meta["workspace_mib"] == 256
    assert meta["profile"]["frames"] == [[1, H, W, C], [1, H, W, C], [8, H, W, C]]
    assert meta["edge_mer"] and meta["built_at"] and meta["build_seconds"] >= 0
    assert not list(plan.engines_dir.glob(".*.tmp"))


def test_build_skips_valid_engines_and_force_rebuilds(bundle: Bundle) -> None:
    build_all(bundle, "10.3.0")
    fake, _, results = build_all(bundle, "10.3.0")
    assert [r.status for r in results] == ["up to date", "up to date"]
    assert fake.named("build_serialized_network") == []
    fake, _, results = build_all(bundle, "10.3.0", force=True)
    assert [r.status for r in results] == ["built", "built"]


def test_build_replaces_a_tampered_engine(bundle: Bundle) -> None:
    _, plan, _ = build_all(bundle, "10.3.0")
    plan.graphs[0].engine_path.write_bytes(b"garbage")
    _, _, results = build_all(bundle, "10.3.0")
    assert [r.status for r in results] == ["built", "up to date"]


def test_timing_cache_loaded_and_saved(bundle: Bundle) -> None:
    fake, plan, _ = build_all(bundle, "10.3.0")
    assert fake.named("create_timing_cache")[0] == ("create_timing_cache", b"")
    assert fake.named("set_timing_cache")[0] == ("set_timing_cache", False)
    assert plan.timing_cache.read_bytes() == b"CACHE:10.3.0"
    fake, _, _ = build_all(bundle, "10.3.0", force=True)
    assert fake.named("create_timing_cache")[0] == ("create_timing_cache", b"CACHE:10.3.0")


def test_mismatched_timing_cache_is_replaced(bundle: Bundle) -> None:
    build_all(bundle, "10.3.0")
    fake, _, _ = build_all(bundle, "10.3.0", force=True, cache_ok=False)
    loads = fake.named("create_timing_cache")
    assert loads[:2] == [("create_timing_cache", b"CACHE:10.3.0"), ("create_timing_cache", b"")]


def test_parser_errors_are_reported(bundle: Bundle) -> None:
    with pytest.raises(EngineError, match="UNSUPPORTED_NODE"):
        build_all(bundle, "10.3.0", parse_ok=False)


def test_failed_build_reports_logged_errors(bundle: Bundle) -> None:
    with pytest.raises(EngineError, match=r"OutOfMemory.*--workspace"):
        build_all(bundle, "10.3.0", build_ok=False)
    assert not list((bundle.path / "engines").glob("*.engine"))


def test_unwritable_engines_dir_is_an_input_error(bundle: Bundle, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    plan = make_plan(bundle, facts(), engines_dir=blocker / "engines")
    with pytest.raises(InputError, match="--engines-dir"):
        trt_build.build_engines(bundle, plan, FakeTrt())


# --------------------------------------------------------------------------- checks


@pytest.fixture
def built(bundle: Bundle) -> tuple[Bundle, trt_plan.EnginePlan]:
    _, plan, _ = build_all(bundle, "10.3.0")
    return bundle, plan


def test_check_engine_accepts_a_good_engine(built: tuple[Bundle, EnginePlan]) -> None:
    bundle, plan = built
    for g in plan.graphs:
        check_engine(g.engine_path, g.sidecar_path, facts("10.3.0"), bundle)


@pytest.mark.parametrize(
    ("device", "why"),
    [
        (facts("10.4.0"), "TensorRT 10.3.0, this device has TensorRT 10.4.0"),
        (facts("10.3.0", (7, 2), "Xavier"), "compute capability 8.7"),
    ],
)
def test_check_engine_refuses_other_device(
    built: tuple[Bundle, trt_plan.EnginePlan], device: DeviceFacts, why: str
) -> None:
    bundle, plan = built
    with pytest.raises(EngineError, match=why) as info:
        check_engine(plan.graphs[0].engine_path, None, device, bundle)
    assert f"rebuild with: edge-mer build-engine {bundle.path}" in str(info.value)


def test_check_engine_refuses_tampered_bytes(built: tuple[Bundle, EnginePlan]) -> None:
    bundle, plan = built
    path = plan.graphs[0].engine_path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(EngineError, match=r"corrupt or was replaced.*rebuild"):
        check_engine(path, None, facts(), bundle)


def test_check_engine_refuses_missing_or_bad_sidecar(built: tuple[Bundle, EnginePlan]) -> None:
    bundle, plan = built
    g = plan.graphs[0]
    g.sidecar_path.write_text("{not json")
    with pytest.raises(EngineError, match=r"unreadable.*rebuild"):
        check_engine(g.engine_path, None, facts(), bundle)
    g.sidecar_path.write_text("{}")
    with pytest.raises(EngineError, match=r"incomplete.*rebuild"):
        check_engine(g.engine_path, None, facts(), bundle)
    g.sidecar_path.unlink()
    with pytest.raises(EngineError, match=r"missing.*rebuild"):
        check_engine(g.engine_path, None, facts(), bundle)


def test_check_engine_refuses_changed_onnx(
    built: tuple[Bundle, trt_plan.EnginePlan], tmp_path: Path
) -> None:
    _, plan = built
    other = make_bundle(tmp_path / "retrained", seed=7)
    shutil.copytree(plan.engines_dir, other.path / "engines")
    copied = other.path / "engines" / plan.graphs[0].engine_path.name
    with pytest.raises(EngineError, match=r"model changed.*rebuild"):
        check_engine(copied, None, facts(), other)


def test_rebuild_message_names_engines_dir(bundle: Bundle, tmp_path: Path) -> None:
    _, plan, _ = build_all(bundle, "10.3.0", engines_dir=tmp_path / "state")
    with pytest.raises(EngineError, match=f"--engines-dir {tmp_path / 'state'}"):
        check_engine(plan.graphs[0].engine_path, None, facts("10.4.0"), bundle)


def test_find_engine(built: tuple[Bundle, EnginePlan]) -> None:
    bundle, plan = built
    assert find_engine(bundle, "encoder", facts()) == plan.graphs[0].engine_path
    assert find_engine(bundle, "step", facts()) == plan.graphs[1].engine_path
    with pytest.raises(EngineError, match=r"trt10\.3\.0.*\(TensorRT 10\.3\.0\).*rebuild"):
        find_engine(bundle, "encoder", facts("10.4.0"))
    with pytest.raises(EngineError, match=r"\(sm87\)"):
        find_engine(bundle, "encoder", facts("10.3.0", (7, 2)))
    with pytest.raises(EngineError, match=r"no clip engine.*rebuild"):
        find_engine(bundle, "clip", facts())
    with pytest.raises(EngineError, match="batch <= 8"):
        find_engine(bundle, "encoder", facts(), min_batch=16)


def test_find_engine_prefers_int8_then_checks(built: tuple[Bundle, EnginePlan]) -> None:
    bundle, _ = built
    fake = FakeTrt("10.3.0")
    plan16 = make_plan(bundle, facts(), precision="fp16")
    trt_build.build_engines(bundle, plan16, fake)
    assert find_engine(bundle, "encoder", facts()).name.split("-")[4] == "int8"
    assert find_engine(bundle, "encoder", facts(), precision="fp16") == plan16.graphs[0].engine_path
    plan16.graphs[0].sidecar_path.unlink()
    with pytest.raises(EngineError, match="missing"):
        find_engine(bundle, "encoder", facts(), precision="fp16")


# --------------------------------------------------------------------------- loading


def test_deserialize_failure_says_rebuild(tmp_path: Path) -> None:
    err = engine_check.deserialize_failure(
        tmp_path / "e.engine",
        ["Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed."],
        "rebuild with: edge-mer build-engine B",
    )
    assert "another TensorRT version" in str(err) and str(err).endswith("build-engine B")
    assert "could not deserialize" in str(engine_check.deserialize_failure(tmp_path / "e", [], "h"))


def test_load_engine_checks_then_deserializes(built: tuple[Bundle, EnginePlan]) -> None:
    bundle, plan = built
    engine, _runtime = trt_build.load_engine(
        plan.graphs[0].engine_path, facts=facts(), bundle=bundle, trt=FakeTrt("10.3.0")
    )
    assert engine.data.startswith(b"ENGINE:10.3.0")


def test_load_engine_translates_version_tag_failure(built: tuple[Bundle, EnginePlan]) -> None:
    # same name and sidecar, but the library underneath was swapped (e.g. a JetPack update
    # that kept the version string): TensorRT's own refusal becomes a rebuild message
    bundle, plan = built
    with pytest.raises(EngineError, match=r"another TensorRT version.*rebuild with"):
        trt_build.load_engine(
            plan.graphs[0].engine_path,
            facts=facts(),
            bundle=bundle,
            trt=FakeTrt("10.3.1-but-reports-10.3.0"),
        )


def test_logger_keeps_errors() -> None:
    fake = FakeTrt()
    logger = trt_build.make_logger(fake, "error")
    logger.log(fake.ILogger.Severity.WARNING, "slow")
    logger.log(fake.ILogger.Severity.ERROR, "broken")
    assert logger.errors == ["broken"]


# --------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    from edge_mer.cli.engine_cmd import build_engine

    app = typer.Typer()
    app.command("build-engine")(build_engine)
    app.command("noop")(lambda: None)  # two commands, so the name is part of the invocation
    return app


def _stderr(result: Any) -> str:
    try:
        return result.stderr
    except (ValueError, AttributeError):
        return result.output


def test_cli_without_tensorrt_exits_2_with_one_line(
    bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(_app(), ["build-engine", str(bundle.path)])
    assert result.exit_code == 2
    err = _stderr(result)
    assert err.strip() == f"edge-mer: error: {trt_device.TENSORRT_MISSING}"
    assert "Traceback" not in result.output


def test_cli_bad_bundle_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["build-engine", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "is not a directory" in _stderr(result)


def test_cli_builds_with_fake_tensorrt(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt("8.6.2"))
    monkeypatch.setattr(trt_device, "probe_cuda_device", lambda: ((8, 7), "Orin"))
    args = [
        "build-engine",
        str(bundle.path),
        "--engines-dir",
        str(tmp_path / "st"),
        "--max-batch",
        "4",
        "--clip",
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "TensorRT 8.6.2" in result.output and "sm87" in result.output
    assert result.output.count("built: ") == 3
    assert len(list((tmp_path / "st").glob("*-trt8.6.2-sm87-*-b4.engine"))) == 3
    again = CliRunner().invoke(_app(), args)
    assert again.output.count("up to date: ") == 3


def test_engine_modules_import_no_heavy_dependencies() -> None:
    # edge_mer.cli.engine_cmd is left out: importing it imports edge_mer.cli, which registers
    # every command module; its own heavy imports are inside the command body.
    code = (
        "import sys, edge_mer.runners.tensorrt.device, edge_mer.runners.tensorrt.plan, "
        "edge_mer.runners.tensorrt.check, edge_mer.runners.tensorrt.build; "
        "bad = [m for m in ('tensorrt', 'torch', 'onnx', 'onnxruntime', 'cuda', 'pycuda') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- real TensorRT


@pytest.mark.jetson
def test_real_tensorrt_build_and_load(bundle: Bundle) -> None:
    trt = pytest.importorskip("tensorrt")
    try:
        device = trt_device.gather_device_facts(trt)
    except (EngineError, MissingDependencyError) as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    plan = make_plan(bundle, device, precision="fp16", max_batch=2, workspace_mib=64)
    results = trt_build.build_engines(bundle, plan, trt)
    assert [r.status for r in results] == ["built", "built"]
    for g in plan.graphs:
        assert find_engine(bundle, g.graph, device) == g.engine_path
        engine, _runtime = trt_build.load_engine(g.engine_path, facts=device, bundle=bundle)
        assert engine is not None
