"""Runners: ORT IOBinding on runner-owned buffers, state ping-pong, selection, and the
TensorRT runner's planning, version shims and buffer handling with fake engines/CUDA."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from edge_mer.bundle import Bundle  # noqa: E402
from edge_mer.errors import EngineError, InputError  # noqa: E402
from edge_mer.pipeline.preprocess import FramePreprocessor  # noqa: E402
from edge_mer.runners import RunnerError, select_runner  # noqa: E402
from edge_mer.runners.ort import (  # noqa: E402
    SMALL_ENCODER_MACS,
    OrtEncoderRunner,
    OrtStepRunner,
    default_providers,
    encoder_graph_key,
    encoder_threads,
)
from edge_mer.runners.tensorrt.device import DeviceFacts, TrtVersion  # noqa: E402
from edge_mer.runners.trt import TrtRunner  # noqa: E402
from edge_mer.runners.trt_memory import (  # noqa: E402
    BufferPlan,
    TensorIO,
    engine_io,
    plan_buffers,
)
from edge_mer.streaming import ort_session, stream_logits  # noqa: E402


def make_bundle(root: Path) -> Bundle:
    """A real FP32 bundle of the tiny reference CNN-LSTM (about 2 s)."""
    torch = pytest.importorskip("torch")
    from edge_mer.convert.checkpoint import save_checkpoint
    from edge_mer.convert.models import build
    from edge_mer.convert.pipeline import ConvertOptions, convert
    from tests.conftest import TINY

    torch.manual_seed(0)
    model = build(TINY)
    ckpt = root / "tiny.safetensors"
    save_checkpoint(model, ckpt, model.config)
    convert(ckpt, root / "bundle", ConvertOptions())
    return Bundle.open(root / "bundle")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_bundle(tmp_path_factory.mktemp("runners"))


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)


# --------------------------------------------------------------------------- ONNX Runtime


def test_encoder_runner_equals_plain_session(bundle: Bundle) -> None:
    x = frames(5)
    ref = ort_session(bundle.graph_path("encoder")).run(["features"], {"frames": x})[0]
    with OrtEncoderRunner.from_bundle(bundle, 8) as enc:
        assert enc.inputs["frames"].shape == (8, 32, 32, 1)
        addr = enc.inputs["frames"].ctypes.data
        for batch in (5, 2, 5):  # bindings cached per batch size
            enc.inputs["frames"][:batch] = x[:batch]
            out = enc.infer(batch)["features"]
            assert out.shape == (batch, 16)
            np.testing.assert_allclose(out, ref[:batch], atol=1e-6)
        # Outputs are written into the runner's own buffer, not a fresh array.
        assert out.ctypes.data == enc.buffer_addresses()["features"]
        assert enc.inputs["frames"].ctypes.data == addr
    assert not enc.is_active


def test_face_stage_writes_the_crop_into_the_bound_input(bundle: Bundle) -> None:
    rng = np.random.default_rng(1)
    camera = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [(10, 10, 64, 64), (50, 20, 80, 90), (0, 0, 160, 120)]
    pre = FramePreprocessor(32, 32, 1)
    with OrtEncoderRunner.from_bundle(bundle, 4) as enc:
        for i, (img, box) in enumerate(zip(camera, boxes, strict=True)):
            view = enc.inputs["frames"][i]
            assert pre(img, box, out=view) is view
        got = enc.infer(3)["features"].copy()
    expected_in = np.stack([pre(img, box) for img, box in zip(camera, boxes, strict=True)])
    ref = ort_session(bundle.graph_path("encoder")).run(["features"], {"frames": expected_in})[0]
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_step_runner_ping_pong_equals_stream_logits(bundle: Bundle) -> None:
    clips = np.random.default_rng(2).integers(0, 256, (3, 6, 32, 32, 1), dtype=np.uint8)
    names = [s.name for s in bundle.states]
    ref = stream_logits(
        ort_session(bundle.graph_path("encoder")),
        ort_session(bundle.graph_path("step")),
        clips,
        names,
        [s.shape for s in bundle.states],
    )
    with OrtEncoderRunner.from_bundle(bundle, 4) as enc, OrtStepRunner.from_bundle(bundle, 4) as st:
        st.reset_state()
        for t in range(clips.shape[1]):
            enc.inputs["frames"][:3] = clips[:, t]
            st.inputs["features"][:3] = enc.infer(3)["features"]
            before = {n: st.inputs[n].ctypes.data for n in names}
            out = st.infer(3)
            for n in names:  # the next state is where the next call reads it: no copy
                assert st.inputs[n].ctypes.data == out[f"{n}_next"].ctypes.data
                assert st.inputs[n].ctypes.data != before[n]
        np.testing.assert_allclose(out["logits"], ref, atol=1e-5)


def test_shifted_state_moves_every_row_down_and_reads_zeros_above(bundle: Bundle) -> None:
    names = [s.name for s in bundle.states]
    feats = np.random.default_rng(3).standard_normal((6, 16)).astype(np.float32)
    assert OrtStepRunner.from_bundle(bundle, 12).state_spare_rows == 2  # window 6: per track
    with (
        OrtStepRunner.from_bundle(bundle, 6, state_spare_rows=2) as st,
        OrtStepRunner.from_bundle(bundle, 6) as ref,
    ):
        assert st.inputs["h"].shape[0] == 8
        st.inputs["features"][:6] = ref.inputs["features"][:6] = feats
        for n in names:  # some state in every row, as after a few frames
            st.inputs[n][:6] = ref.inputs[n][:6] = np.arange(1, 7, dtype=np.float32)[:, None, None]
        out = st.infer(6, shift=1)
        want = ref.infer(6)
        for n in names:
            np.testing.assert_array_equal(out[f"{n}_next"], want[f"{n}_next"])
            # row r's next state is row r + 1 of what the next call reads; row 0 reads zero
            np.testing.assert_array_equal(st.inputs[n][1:7], want[f"{n}_next"])
            assert ref.inputs[n].shape[0] == 7 and ref.state_spare_rows == 1
            assert not st.inputs[n][0].any()
        np.testing.assert_array_equal(out["logits"], want["logits"])
        # A smaller layout leaves rows the larger one wrote above its shift: cleared.
        for _ in range(3):
            st.infer(2, shift=2)
            assert not any(st.inputs[n][:2].any() for n in names)
        with pytest.raises(InputError, match=r"shift 2 is outside 0\.\.1"):
            ref.infer(1, shift=2)


def test_runner_misuse_is_reported(bundle: Bundle) -> None:
    enc = OrtEncoderRunner.from_bundle(bundle, 2)
    with pytest.raises(RunnerError, match="before activate"):
        enc.infer(1)
    with enc:
        with pytest.raises(InputError, match=r"outside 1\.\.2"):
            enc.infer(3)
        with pytest.raises(RunnerError, match="twice"):
            enc.activate()
    with pytest.raises(InputError, match="max_batch"):
        OrtEncoderRunner(bundle.graph_path("encoder"), 0)


def test_select_runner_falls_back_to_onnxruntime_with_a_reason(bundle: Bundle) -> None:
    sel = select_runner(bundle, max_batch=2, step_max_batch=12)
    assert sel.kind == "onnxruntime"
    assert sel.unavailable.get("tensorrt")
    assert sel.encoder.max_batch == 2 and sel.step.max_batch == 12
    assert sel.encoder.name == "onnxruntime:encoder"
    with sel.encoder as enc:
        enc.inputs["frames"][:1] = frames(1)
        assert enc.infer(1)["features"].shape == (1, 16)
    with pytest.raises(InputError, match="not one of"):
        select_runner(bundle, "openvino")
    assert default_providers(["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_encoder_threads_follow_the_encoder_size(bundle: Bundle) -> None:
    """threads 0: one ORT thread for a small encoder (the manifest's cost), ORT's default for
    a large one or a manifest without cost; a number set is used for encoder and step."""
    assert 0 < bundle.manifest["cost"]["encoder_macs_per_frame"] < SMALL_ENCODER_MACS
    sel = select_runner(bundle, "onnxruntime", max_batch=2)
    assert (sel.encoder.threads, sel.step.threads) == (1, 1)
    with sel.encoder as enc:  # the session really got it
        assert enc._sess.get_session_options().intra_op_num_threads == 1
    sel = select_runner(bundle, "onnxruntime", max_batch=2, threads=3)
    assert (sel.encoder.threads, sel.step.threads) == (3, 3)
    with sel.encoder as enc:
        assert enc._sess.get_session_options().intra_op_num_threads == 3

    def fake(cost: Any) -> Any:
        return SimpleNamespace(manifest={"cost": cost} if cost != "absent" else {})

    assert encoder_threads(fake({"encoder_macs_per_frame": SMALL_ENCODER_MACS - 1})) == 1
    assert encoder_threads(fake({"encoder_macs_per_frame": SMALL_ENCODER_MACS})) == 0
    assert encoder_threads(fake({"encoder_macs_per_frame": 465_702_912})) == 0  # ResNet-18
    for cost in ("absent", None, {}, {"encoder_macs_per_frame": None}):
        assert encoder_threads(fake(cost)) == 0
    assert encoder_threads(fake({"encoder_macs_per_frame": 3_489_792}), 2) == 2


def test_select_runner_without_tensorrt(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for by name, a TensorRT that is not installed is the user's to fix: exit 2."""
    import sys

    from edge_mer.errors import MissingDependencyError
    from edge_mer.runners import TENSORRT_RUNNER_MISSING

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError) as info:
        select_runner(bundle, "tensorrt")
    assert str(info.value) == TENSORRT_RUNNER_MISSING and info.value.exit_code == 2
    assert select_runner(bundle, "auto").unavailable["tensorrt"] == TENSORRT_RUNNER_MISSING


def test_select_runner_refuses_an_engine_for_another_device(bundle: Bundle, tmp_path) -> None:
    facts = DeviceFacts(TrtVersion(10, 3, 0), (8, 7), "Orin")
    edir = tmp_path / "engines"
    edir.mkdir()
    sha = bundle.manifest["graphs"]["encoder"]["sha256"][:12]
    (edir / f"encoder-{sha}-trt8.5.2-sm72-fp16-b8.engine").write_bytes(b"x")
    with pytest.raises(EngineError, match=r"TensorRT 8\.5\.2.*rebuild with: edge-mer build-engine"):
        select_runner(bundle, "tensorrt", facts=facts, engines_dir=edir)
    sel = select_runner(bundle, "auto", facts=facts, engines_dir=edir)
    assert sel.kind == "onnxruntime" and "rebuild with" in sel.unavailable["tensorrt"]


def test_encoder_graph_key_follows_manifest_targets() -> None:
    graphs = {"encoder": {}, "encoder_int8": {}, "encoder_u8": {}}

    def fake(targets: dict[str, str]) -> Any:
        return SimpleNamespace(manifest={"targets": targets, "graphs": graphs})

    int8 = {
        "tensorrt": "encoder_int8",
        "onnxruntime-arm": "encoder_int8",
        "onnxruntime-x86_64": "encoder_u8",
    }
    assert encoder_graph_key(fake(int8), "x86_64") == "encoder_u8"
    assert encoder_graph_key(fake(int8), "aarch64") == "encoder_int8"
    fp32 = {"onnxruntime-cpu": "encoder", "tensorrt": "encoder"}
    assert encoder_graph_key(fake(fp32), "aarch64") == "encoder"
    assert encoder_graph_key(fake({}), "x86_64") == "encoder"


# --------------------------------------------------------------------------- TensorRT fakes


class FakeTrt:
    """The slice of the ``tensorrt`` module the runner touches."""

    TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")

    @staticmethod
    def nptype(dtype: Any) -> Any:
        return dtype


# name, is_input, shape (-1 = dynamic batch)
FAKE_IO = [
    ("features", True, (-1, 4)),
    ("h", True, (-1, 1, 4)),
    ("logits", False, (-1, 4)),
    ("h_next", False, (-1, 1, 4)),
]


class FakeEngine:
    """h_next = h + features; logits = 2 * h_next. Named (>= 8.5) and binding (< 8.5) APIs."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend
        self.num_io_tensors = self.num_bindings = len(FAKE_IO)

    def get_tensor_name(self, i: int) -> str:
        return FAKE_IO[i][0]

    def _idx(self, name: str) -> int:
        return [n for n, _, _ in FAKE_IO].index(name)

    def get_tensor_mode(self, name: str) -> str:
        return "in" if FAKE_IO[self._idx(name)][1] else "out"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return FAKE_IO[self._idx(name)][2]

    def get_tensor_dtype(self, name: str) -> Any:
        return np.float32

    get_binding_name = get_tensor_name

    def binding_is_input(self, i: int) -> bool:
        return FAKE_IO[i][1]

    def get_binding_shape(self, i: int) -> tuple[int, ...]:
        return FAKE_IO[i][2]

    def get_binding_dtype(self, i: int) -> Any:
        return np.float32

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[Any, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.calls: list[str] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_binding_shape(self, index: int, shape: tuple[int, ...]) -> bool:
        self.shapes[FAKE_IO[index][0]] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def _run(self, addr: dict[str, int]) -> bool:
        n = self.shapes["features"][0]
        mem = self.engine.backend.device
        f, h = mem[addr["features"]][:n], mem[addr["h"]][:n]
        hn, lg = mem[addr["h_next"]][:n], mem[addr["logits"]][:n]
        np.add(h, f[:, None, :], out=hn)
        np.multiply(hn[:, 0], 2, out=lg)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.calls.append("v3")
        return self._run(self.addresses)

    def execute_async_v2(self, bindings: list[int], stream: int) -> bool:
        self.calls.append("v2")
        return self._run({name: bindings[i] for i, (name, _, _) in enumerate(FAKE_IO)})


class FakeBackend:
    """Host buffers are numpy arrays; a 'device pointer' keys ``device`` memory. Mapped
    buffers share host memory; discrete ones get a separate array that only copies fill."""

    name = "fake"

    def __init__(self, integrated: bool) -> None:
        self._integrated = integrated
        self.device: dict[int, np.ndarray] = {}
        self.copies: list[tuple[str, int]] = []
        self.events: list[str] = []
        self.freed = 0

    def integrated(self) -> bool:
        return self._integrated

    def activate(self) -> None:
        self.events.append("activate")

    def deactivate(self) -> None:
        self.events.append("deactivate")

    def stream(self) -> str:
        return "stream"

    def stream_handle(self, stream: Any) -> int:
        return 1234

    def alloc(self, plan: BufferPlan, mapped: bool) -> Any:
        from edge_mer.runners.trt_memory import HostBuffer

        host = np.zeros(plan.shape, plan.dtype)
        dev = host if mapped else np.full(plan.shape, np.nan, plan.dtype)
        self.device[dev.ctypes.data] = dev
        return HostBuffer(host, host.ctypes.data, dev.ctypes.data, mapped)

    def free(self, buf: Any) -> None:
        self.freed += 1

    def htod(self, buf: Any, nbytes: int, stream: Any) -> None:
        self.copies.append(("htod", nbytes))
        self.device[buf.device_ptr].reshape(-1).view(np.uint8)[:nbytes] = buf.array.reshape(
            -1
        ).view(np.uint8)[:nbytes]

    def dtoh(self, buf: Any, nbytes: int, stream: Any) -> None:
        self.copies.append(("dtoh", nbytes))
        buf.array.reshape(-1).view(np.uint8)[:nbytes] = (
            self.device[buf.device_ptr].reshape(-1).view(np.uint8)[:nbytes]
        )

    def sync(self, stream: Any) -> None:
        self.events.append("sync")

    def destroy(self, stream: Any) -> None:
        self.events.append("destroy")


def test_engine_io_uses_named_tensors_or_bindings_by_version() -> None:
    engine = FakeEngine(FakeBackend(True))
    for version in (TrtVersion(10, 3), TrtVersion(8, 5, 2), TrtVersion(8, 2, 1)):
        io = engine_io(engine, version, FakeTrt)
        assert [(t.name, t.is_input, t.shape) for t in io] == FAKE_IO
        assert all(t.dtype == np.float32 for t in io)


def test_engine_io_refuses_a_type_numpy_cannot_hold() -> None:
    class Bf16Trt(FakeTrt):
        @staticmethod
        def nptype(dtype: Any) -> Any:  # what tensorrt.nptype does for DataType.BF16
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    with pytest.raises(EngineError, match=r"engine tensor 'features' is .*numpy cannot hold"):
        engine_io(FakeEngine(FakeBackend(True)), TrtVersion(10, 3), Bf16Trt)


def test_plan_buffers_sizes_every_tensor_for_max_batch() -> None:
    io = [TensorIO(n, i, s, np.dtype(np.float32), k) for k, (n, i, s) in enumerate(FAKE_IO)]
    plans = plan_buffers(io, 6)
    assert [p.shape for p in plans] == [(6, 4), (6, 1, 4), (6, 4), (6, 1, 4)]
    assert plans[0].nbytes == 96 and plans[1].row_bytes == 16
    u8 = plan_buffers([TensorIO("frames", True, (-1, 32, 32, 1), np.dtype(np.uint8), 0)], 8)
    assert u8[0].nbytes == 8 * 32 * 32 and u8[0].row_bytes == 1024
    with pytest.raises(EngineError, match="dynamic non-batch"):
        plan_buffers([TensorIO("x", True, (-1, -1), np.dtype(np.float32), 0)], 2)
    with pytest.raises(EngineError, match="scalar"):
        plan_buffers([TensorIO("x", True, (), np.dtype(np.float32), 0)], 2)
    with pytest.raises(EngineError, match="fixed batch"):
        plan_buffers([TensorIO("x", True, (1, 4), np.dtype(np.float32), 0)], 2)


@pytest.mark.parametrize(
    ("version", "integrated", "api"),
    [
        (TrtVersion(10, 3), True, "v3"),  # JetPack 6.1: named tensors, mapped memory
        (TrtVersion(8, 5, 2), True, "v3"),  # JetPack 5.1: named tensors exist from 8.5
        (TrtVersion(8, 2, 1), True, "v2"),  # JetPack 4.6: bindings
        (TrtVersion(10, 3), False, "v3"),  # discrete GPU: pinned + async copies
    ],
)
def test_trt_runner_with_fakes(version: TrtVersion, integrated: bool, api: str) -> None:
    backend = FakeBackend(integrated)
    engine = FakeEngine(backend)
    runner = TrtRunner(engine, version, FakeTrt, 4, backend=backend, state={"h": "h_next"})
    with runner:
        assert runner.mapped is integrated
        ctx = runner.context
        for step in range(1, 4):
            runner.inputs["features"][:3] = 1.0
            out = runner.infer(3)
            np.testing.assert_array_equal(out["logits"], np.full((3, 4), 2.0 * step))
            # ping-pong: the state just written is what the next call reads
            assert runner.inputs["h"].ctypes.data == out["h_next"].ctypes.data
        assert ctx.calls == [api] * 3
        assert ctx.shapes["features"] == (3, 4) and ctx.shapes["h"] == (3, 1, 4)
        if api == "v3":
            assert ctx.addresses["h"] != ctx.addresses["h_next"]
        copies = backend.copies
        if integrated:
            assert copies == []  # TensorRT reads the host view itself
        else:  # only the used rows cross the bus
            assert ("htod", 3 * 16) in copies and ("dtoh", 3 * 16) in copies
        errors: list[BaseException] = []

        def other() -> None:
            try:
                runner.infer(1)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert errors and isinstance(errors[0], RunnerError) and "thread" in str(errors[0])
    assert backend.freed == 4 and backend.events[-1] == "deactivate"


def test_trt_runner_refuses_a_missing_state_pair_and_releases_cuda() -> None:
    backend = FakeBackend(True)
    runner = TrtRunner(
        FakeEngine(backend), TrtVersion(10, 3), FakeTrt, 2, backend=backend, state={"c": "c_next"}
    )
    with pytest.raises(EngineError, match="state pair"):
        runner.activate()
    assert backend.events == ["activate", "deactivate"] and not runner.is_active


def test_trt_runner_frees_what_it_allocated_when_activation_fails() -> None:
    class FailingBackend(FakeBackend):
        def alloc(self, plan: BufferPlan, mapped: bool) -> Any:
            if len(self.device) == 2:  # the third buffer: pinned memory exhausted
                raise EngineError("CUDA cudaHostAlloc failed: cudaErrorMemoryAllocation")
            return super().alloc(plan, mapped)

    backend = FailingBackend(True)
    runner = TrtRunner(FakeEngine(backend), TrtVersion(10, 3), FakeTrt, 2, backend=backend)
    with pytest.raises(EngineError, match="cudaErrorMemoryAllocation"):
        runner.activate()
    assert backend.freed == 2 and backend.events == ["activate", "destroy", "deactivate"]
    assert not runner.is_active and runner.bufs == {}


# --------------------------------------------------------------------------- real hardware


@pytest.mark.jetson
def test_real_tensorrt_runner_matches_onnxruntime(bundle: Bundle) -> None:
    trt = pytest.importorskip("tensorrt")
    from edge_mer.errors import MissingDependencyError
    from edge_mer.runners.tensorrt import build as trt_build
    from edge_mer.runners.tensorrt import device as trt_device
    from edge_mer.runners.tensorrt import plan as trt_plan

    try:
        facts = trt_device.gather_device_facts(trt)
    except (EngineError, MissingDependencyError) as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    plan = trt_plan.make_plan(bundle, facts, precision="fp32", max_batch=4, workspace_mib=64)
    trt_build.build_engines(bundle, plan, trt)
    x = frames(3)
    ref = ort_session(bundle.graph_path("encoder")).run(["features"], {"frames": x})[0]
    enc = TrtRunner.from_bundle(bundle, "encoder", facts=facts, trt=trt)
    with enc:
        enc.inputs["frames"][:3] = x
        np.testing.assert_allclose(enc.infer(3)["features"], ref, atol=1e-3)
