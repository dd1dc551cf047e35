"""The thin TensorRT part of ``edge-mer build-engine``: build, write, load.

All decisions (graphs, precisions, flags, names, profiles, checks) come from
:mod:`edge_mer.runners.tensorrt.plan` and :mod:`edge_mer.runners.tensorrt.check`; this module
only turns an :class:`~edge_mer.runners.tensorrt.plan.EnginePlan` into TensorRT calls.
``tensorrt`` is imported lazily (or injected, which is how the tests drive it with a fake
module). API differences between
TensorRT 8.x, 10.x and 11.x are marked where they are handled; docs/engines.md lists the
documentation each call was checked against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mer.bundle import Bundle, write_atomic
from edge_mer.errors import EngineError, InputError
from edge_mer.runners.tensorrt.check import check_engine, deserialize_failure, make_sidecar
from edge_mer.runners.tensorrt.device import (
    DEFAULT_MAX_BATCH,
    DEFAULT_WORKSPACE_MIB,
    DeviceFacts,
    gather_device_facts,
    import_tensorrt,
)
from edge_mer.runners.tensorrt.plan import (
    EnginePlan,
    GraphBuild,
    make_plan,
    profile_shapes,
    rebuild_hint,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
_SEVERITY_RANK = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
_LEVELS = {"error": 1, "warning": 2, "info": 3, "verbose": 4}


def make_logger(trt: Any, level: str = "warning") -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps every error message.

    The kept errors explain a failed build or deserialization (TensorRT reports those by
    returning None, with the reason only in the log).
    """
    threshold = _LEVELS.get(level, 2)

    class CapturingLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity)).rsplit(".", 1)[-1]
            rank = _SEVERITY_RANK.get(name, 3)
            if rank <= 1:
                self.errors.append(msg)
            if rank <= threshold:
                pylevel = (
                    logging.ERROR
                    if rank <= 1
                    else logging.WARNING
                    if rank == 2
                    else logging.INFO
                    if rank == 3
                    else logging.DEBUG
                )
                log.log(pylevel, "TensorRT: %s", msg)

    return CapturingLogger()


def _host_bytes(blob: Any) -> bytes:
    """Bytes of an ``IHostMemory`` (buffer protocol) or of plain bytes."""
    return bytes(memoryview(blob))


def _attach_timing_cache(config: Any, path: Path) -> Any:
    """Load the timing cache at ``path`` (or start an empty one) and attach it to ``config``.

    ``ignore_mismatch=False``: a cache written by another TensorRT version or device is not
    used (``set_timing_cache`` returns False) and we start afresh, since reusing timings from
    different hardware risks slow or wrong tactic choices.
    """
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
        attached = cache is not None and config.set_timing_cache(cache, False) is not False
    except RuntimeError:  # a truncated or foreign cache file
        attached = False
    if not attached:
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_engine(
    build: GraphBuild,
    plan: EnginePlan,
    trt: Any | None = None,
    logger_level: str = "warning",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build one engine with TensorRT and write it, its sidecar and the timing cache.

    The engine file holds TensorRT's bytes only; the sidecar is written after it, so an
    engine without a sidecar is an interrupted build (refused by ``check_engine``).

    Returns:
        The sidecar record.

    Raises:
        TensorRTMissingError: tensorrt not importable (exit 2).
        EngineError: the ONNX parser or the builder failed; the message carries TensorRT's
            own errors.
    """
    trt = trt if trt is not None else import_tensorrt()
    say = progress or log.info
    v = plan.facts.trt_version
    logger = make_logger(trt, logger_level)
    builder = trt.Builder(logger)

    # 8.x: EXPLICIT_BATCH is required for ONNX; 10.x: 0 (weakly typed); 11.x: STRONGLY_TYPED
    # is deprecated and ignored (always on), set only while the enum still has it.
    flags = 0
    for name in build.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:
            flags |= 1 << int(member)
    network = builder.create_network(flags)

    say(f"{build.graph}: parsing {build.onnx_path.name}")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(build.onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(
            f"TensorRT {v} cannot parse {str(build.onnx_path)!r}: {'; '.join(errs) or 'no details'}"
        )

    config = builder.create_builder_config()
    if plan.workspace_mib > 0:
        nbytes = plan.workspace_mib << 20
        if v.memory_pool_api:  # 8.4+
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
        else:  # 8.0-8.2 (JetPack 4.6): removed in 10.0
            config.max_workspace_size = nbytes
    for name in build.builder_flags:  # INT8/FP16 on 8.x-10.x; none on 11.x (removed)
        config.set_flag(getattr(trt.BuilderFlag, name))

    profile = builder.create_optimization_profile()
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        mn, opt, mx = profile_shapes(
            tensor.name, tuple(tensor.shape), plan.batch, build.fixed_axes.get(tensor.name)
        )
        profile.set_shape(tensor.name, mn, opt, mx)
        shapes[tensor.name] = (mn, opt, mx)
    config.add_optimization_profile(profile)

    cache = _attach_timing_cache(config, plan.timing_cache)

    say(
        f"{build.graph}: building {build.precision} engine (batch {plan.batch.min}-"
        f"{plan.batch.max}); this takes minutes on a small board"
    )
    t0 = time.monotonic()
    try:
        serialized = builder.build_serialized_network(network, config)
    except (RuntimeError, TypeError) as exc:
        serialized, logger.errors = None, [*logger.errors, str(exc)]
    seconds = time.monotonic() - t0
    if serialized is None:
        raise EngineError(
            f"TensorRT {v} could not build the {build.graph} engine from "
            f"{build.onnx_path.name}: {'; '.join(logger.errors) or 'no details'}"
            f" (try a larger --workspace or a smaller --max-batch)"
        )
    data = _host_bytes(serialized)
    write_atomic(build.engine_path, data)
    sidecar = make_sidecar(
        build, plan, hashlib.sha256(data).hexdigest(), len(data), shapes, seconds
    )
    write_atomic(build.sidecar_path, json.dumps(sidecar, indent=2))
    write_atomic(plan.timing_cache, _host_bytes(cache.serialize()))
    say(
        f"{build.graph}: wrote {build.engine_path.name} ({len(data) / 1e6:.1f} MB, {seconds:.0f} s)"
    )
    return sidecar


@dataclass(frozen=True)
class BuildResult:
    """What happened to one engine of the plan."""

    build: GraphBuild
    status: str  # "built" | "up to date"
    sidecar: dict[str, Any] | None = None


def _writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create engines folder {str(path)!r} ({exc.strerror}): pass "
            "--engines-dir to a writable folder (e.g. /var/lib/edge-mer/engines)"
        ) from None
    if not os.access(path, os.W_OK):
        raise InputError(
            f"engines folder {str(path)!r} is not writable (a read-only bundle?): "
            "pass --engines-dir to a writable folder (e.g. /var/lib/edge-mer/engines)"
        )


def plan_engines(
    bundle_path: Path,
    *,
    engines_dir: Path | None = None,
    precision: str | None = None,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    max_batch: int = DEFAULT_MAX_BATCH,
    include_clip: bool = False,
    trt: Any | None = None,
    facts: DeviceFacts | None = None,
) -> tuple[Bundle, EnginePlan, Any]:
    """Open the bundle, read the device, and make the plan (no building)."""
    bundle = Bundle.open(bundle_path)
    trt = trt if trt is not None else import_tensorrt()
    facts = facts or gather_device_facts(trt)
    plan = make_plan(
        bundle,
        facts,
        precision=precision,
        engines_dir=engines_dir,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        include_clip=include_clip,
    )
    return bundle, plan, trt


def build_engines(
    bundle: Bundle,
    plan: EnginePlan,
    trt: Any,
    *,
    force: bool = False,
    logger_level: str = "warning",
    progress: Progress | None = None,
) -> list[BuildResult]:
    """Build every engine of ``plan`` that is missing or stale (all of them with ``force``)."""
    _writable_dir(plan.engines_dir)
    results = []
    for build in plan.graphs:
        if not force and build.engine_path.exists():
            try:
                check_engine(build.engine_path, None, plan.facts, bundle, plan.engines_dir)
            except EngineError as exc:
                log.warning("rebuilding %s: %s", build.engine_path.name, exc)
            else:
                results.append(BuildResult(build, "up to date"))
                continue
        sidecar = build_engine(build, plan, trt, logger_level, progress)
        results.append(BuildResult(build, "built", sidecar))
    return results


def deserialize_engine(
    path: Path,
    runtime: Any,
    *,
    facts: DeviceFacts,
    bundle: Bundle,
    engines_dir: Path | None = None,
    logger: Any | None = None,
) -> Any:
    """Check an engine against its sidecar and this device, then deserialize it.

    ``logger`` is the :func:`make_logger` object ``runtime`` was created with; its errors
    explain a refusal. Returns the ``ICudaEngine``.

    Raises:
        EngineError: a failed check or a refused deserialization ("rebuild with: ...").
    """
    path = Path(path)
    check_engine(path, None, facts, bundle, engines_dir)
    data = path.read_bytes()
    messages: list[str] = []
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # the bindings raise bare RuntimeError/TypeError
        engine, messages = None, [str(exc)]
    if engine is None:
        messages = [*(getattr(logger, "errors", None) or []), *messages]
        raise deserialize_failure(
            path, messages, rebuild_hint(bundle.path, engines_dir or path.parent)
        )
    return engine


def load_engine(
    path: Path,
    *,
    facts: DeviceFacts,
    bundle: Bundle,
    engines_dir: Path | None = None,
    trt: Any | None = None,
    logger_level: str = "warning",
) -> tuple[Any, Any]:
    """(engine, runtime) for a checked engine file; keep the runtime alive with the engine."""
    trt = trt if trt is not None else import_tensorrt()
    logger = make_logger(trt, logger_level)
    runtime = trt.Runtime(logger)
    engine = deserialize_engine(
        path, runtime, facts=facts, bundle=bundle, engines_dir=engines_dir, logger=logger
    )
    return engine, runtime
