"""The TensorRT runner's CUDA path against the real cuda-python, on a machine without a driver.

cuda-python (``cuda-bindings``) installs and imports without a GPU; every runtime call then
returns ``cudaErrorInsufficientDriver`` (or another driver error), and raises only when its
arguments do not fit the binding. So every call the runner makes is run here for real: the
argument lists are accepted by the real bindings and the result tuples have the shape the
code unpacks, and each path ends in the one-line "no usable CUDA driver/device" error:
exit 1 from ``run`` and ``build-engine``, a row ``unavailable`` in ``bench``, a finding in
``doctor``. TensorRT itself is the fake of test_engine/test_runners (it is not installable
here). On a machine with a working driver these tests skip; the ``gpu`` test runs instead.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_mer.errors import CudaUnavailableError, EngineError, MissingDependencyError
from edge_mer.runners.cuda_runtime import NO_CUDA, check, cuda_status, import_cudart
from edge_mer.runners.tensorrt.device import TrtVersion, probe_cuda_device
from edge_mer.runners.trt_memory import (
    BufferPlan,
    CudaPythonBackend,
    HostBuffer,
    PycudaBackend,
    import_cuda_backend,
)
from tests import REPO

rt = import_cudart()
assert rt is not None, "cuda-python is a dev dependency (pyproject [dev]); pip install -e '.[dev]'"


def driver_usable() -> bool:
    try:
        err, count = rt.cudaGetDeviceCount()
    except RuntimeError:  # cuda-python < 12.6 without libcuda: "Failed to dlopen libcuda.so.1"
        return False
    return err == rt.cudaError_t.cudaSuccess and count > 0


no_driver = pytest.mark.skipif(driver_usable(), reason="a CUDA driver and device are usable here")
PLAN = BufferPlan("frames", True, (2, 8, 8, 1), np.dtype(np.uint8), 0)


class Recording:
    """The real runtime module, recording each call and its raw result (not a fake)."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.calls: list[tuple[str, tuple[Any, ...], Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if not (callable(attr) and name.startswith("cuda") and not isinstance(attr, type)):
            return attr

        def call(*args: Any) -> Any:
            try:  # a TypeError here is an argument list the binding refuses
                result = attr(*args)
            except RuntimeError as exc:  # cuda-python < 12.6 without libcuda
                self.calls.append((name, args, exc))
                raise
            self.calls.append((name, args, result))
            return result

        return call


def backend_calls() -> set[str]:
    """Every CUDA function CudaPythonBackend calls: ``_call("cudaX", ...)`` and
    ``call_quietly(rt, "cudaX", ...)`` in its source."""
    tree = ast.parse((REPO / "edge/runners/trt_memory.py").read_text())
    cls = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CudaPythonBackend"
    )
    names = {
        arg.value
        for n in ast.walk(cls)
        if isinstance(n, ast.Call)
        for arg in n.args[:2]
        if isinstance(arg, ast.Constant) and str(arg.value).startswith("cuda")
    }
    assert len(names) >= 10, names
    return names


@no_driver
def test_every_backend_call_reaches_the_driver_error() -> None:
    rec = Recording(rt)
    be = CudaPythonBackend(rec)
    stream = rt.cudaStream_t()
    host = np.zeros(PLAN.shape, PLAN.dtype)
    buf = HostBuffer(host, host.ctypes.data, host.ctypes.data, mapped=False)
    steps = {
        "cudaSetDevice(0)": be.activate,
        "cudaGetDeviceProperties(0)": be.integrated,
        "cudaStreamCreate()": be.stream,
        "cudaHostAlloc": lambda: be.alloc(PLAN, True),
        "cudaMemcpyAsync(host to device)": lambda: be.htod(buf, 64, stream),
        "cudaMemcpyAsync(device to host)": lambda: be.dtoh(buf, 64, stream),
        "cudaStreamSynchronize": lambda: be.sync(stream),
    }
    for what, step in steps.items():
        with pytest.raises(CudaUnavailableError) as info:
            step()
        msg = str(info.value)
        assert msg.startswith(f"{NO_CUDA}: {what} ") and "\n" not in msg
    # Releases log and carry on: the error that caused the release is the one to show.
    be.free(buf)
    be.destroy(stream)
    assert be.stream_handle(rt.cudaStream_t(1234)) == 1234
    # The paths that only run after a successful call, driven with the same real functions.
    for name, args in (
        ("cudaHostAlloc", (PLAN.nbytes, rt.cudaHostAllocDefault)),
        ("cudaHostGetDevicePointer", (host.ctypes.data, 0)),
        ("cudaMalloc", (PLAN.nbytes,)),
        ("cudaFreeHost", (host.ctypes.data,)),
    ):
        with contextlib.suppress(RuntimeError):
            getattr(rec, name)(*args)
    called = {name for name, _, _ in rec.calls}
    assert called >= backend_calls(), backend_calls() - called
    # Result tuples: (err,) for calls without a value, (err, value) for the others.
    values = {"cudaHostAlloc", "cudaHostGetDevicePointer", "cudaMalloc", "cudaStreamCreate"}
    values |= {"cudaGetDeviceProperties", "cudaGetErrorString", "cudaDriverGetVersion"}
    values |= {"cudaRuntimeGetVersion"}  # the last three: for the error message
    for name, _, result in rec.calls:
        if isinstance(result, RuntimeError):
            continue  # cuda-python < 12.6 raises (cannot dlopen libcuda) instead of returning
        assert isinstance(result, tuple) and isinstance(result[0], rt.cudaError_t), name
        assert len(result) == (2 if name in values else 1), (name, result)


def test_check_unpacks_results_and_sorts_errors() -> None:
    e = rt.cudaError_t
    assert check(rt, (e.cudaSuccess, 7), "x") == 7
    assert check(rt, (e.cudaSuccess,), "x") == []
    assert check(rt, (e.cudaSuccess, 1, 2), "x") == [1, 2]
    with pytest.raises(CudaUnavailableError, match=rf"^{NO_CUDA}: x returned cudaErrorNoDevice"):
        check(rt, (e.cudaErrorNoDevice, None), "x")
    with pytest.raises(EngineError) as info:
        check(rt, (e.cudaErrorInvalidValue,), "cudaMemcpyAsync")
    assert not isinstance(info.value, CudaUnavailableError)
    assert str(info.value).startswith("CUDA cudaMemcpyAsync failed: cudaErrorInvalidValue")


@no_driver
def test_probe_and_doctor_say_no_usable_driver() -> None:
    with pytest.raises(CudaUnavailableError) as info:
        probe_cuda_device()
    msg = str(info.value)
    assert msg.startswith(f"{NO_CUDA}: cudaGetDeviceProperties(0) ")
    assert "cuda-python" in msg and "\n" not in msg
    usable, detail, fix = cuda_status()
    assert usable is False and NO_CUDA in detail and fix


def _hide_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)


def _pycuda(monkeypatch: pytest.MonkeyPatch, init_error: str | None) -> types.ModuleType:
    """A stand-in for pycuda.driver (pycuda builds only against a CUDA toolkit)."""
    drv = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    def init() -> None:
        if init_error:
            raise Error(init_error)

    drv.Error, drv.init = Error, init
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    return drv


def test_backend_selection_prefers_cuda_python_then_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    be = import_cuda_backend()
    assert isinstance(be, CudaPythonBackend) and be.rt is rt
    _hide_cuda_python(monkeypatch)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    with pytest.raises(MissingDependencyError, match=r"edge-mer\[jetson\]"):
        import_cuda_backend()
    drv = _pycuda(monkeypatch, "cuInit failed: no CUDA-capable device is detected")
    be = import_cuda_backend()
    assert isinstance(be, PycudaBackend) and be.cuda is drv
    with pytest.raises(CudaUnavailableError, match=rf"^{NO_CUDA}: pycuda Device\(0\) failed"):
        be.activate()
    with pytest.raises(CudaUnavailableError, match="no CUDA-capable device"):
        probe_cuda_device()


@no_driver
def test_trt_runner_activation_ends_in_the_driver_error() -> None:
    from edge_mer.runners.trt import TrtRunner
    from tests.edge.runners.test_runners import FakeBackend, FakeEngine, FakeTrt

    runner = TrtRunner(FakeEngine(FakeBackend(True)), TrtVersion(10, 3), FakeTrt, 2)
    with pytest.raises(CudaUnavailableError, match=rf"^{NO_CUDA}: cudaSetDevice\(0\)"):
        runner.activate()
    assert not runner.is_active and isinstance(runner.backend, CudaPythonBackend)


# --------------------------------------------------------------------------- the commands


def fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0") -> Any:
    from tests.edge.runners.test_engine import FakeTrt

    fake = FakeTrt(version)
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    from tests.edge.runners.test_engine import make_bundle

    return make_bundle(tmp_path / "b").path


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.output
    return lines[0]


@no_driver
def test_run_and_build_engine_exit_1_with_one_line(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_mer.cli import app

    fake_tensorrt(monkeypatch)
    cli = CliRunner()
    res = cli.invoke(app, ["build-engine", str(bundle), "--engines-dir", str(tmp_path / "e")])
    assert res.exit_code == 1
    assert _one_error_line(res).startswith(f"edge-mer: error: {NO_CUDA}: cudaGetDeviceProperties")
    src = "synthetic://?seconds=1"
    args = ["run", "--bundle", str(bundle), "--source", src, "--runner", "tensorrt"]
    res = cli.invoke(app, args)
    assert res.exit_code == 1
    assert _one_error_line(res).startswith(f"edge-mer: error: {NO_CUDA}: ")


@pytest.mark.parametrize(
    ("driver", "runtime", "says"),
    [
        (0, 13040, "no NVIDIA driver is loaded"),
        (12060, 13040, "the driver supports CUDA 12.6, older than cuda-python"),
        (13000, 13040, "is the GPU visible to this user"),
    ],
)
def test_driver_hint_names_the_fix(driver: int, runtime: int, says: str) -> None:
    from edge_mer.runners.cuda_runtime import driver_hint

    versions = types.SimpleNamespace(
        cudaDriverGetVersion=lambda: (0, driver), cudaRuntimeGetVersion=lambda: (0, runtime)
    )
    hint = driver_hint(versions)
    assert says in hint
    if driver == 12060:
        assert hint.endswith("pip install 'cuda-python>=12,<13'")
