"""Engine names (fingerprints), their paths, and the build plan for a bundle (DESIGN §3).

An engine is named ``<graph>-<onnx sha256[:12]>-trt<x.y.z>-sm<cc>-<precision>-b<maxbatch>.engine``
and holds TensorRT's plain serialized bytes (trtexec and DeepStream can read it). What we know
about it lives beside it in ``<same name>.json``; an engine without a valid sidecar is never
loaded. Plain Python: the TensorRT calls live in :mod:`edge_mer.runners.tensorrt.build`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_mer.bundle import Bundle
from edge_mer.errors import EngineError, InputError
from edge_mer.runners.tensorrt.device import (
    DEFAULT_MAX_BATCH,
    DEFAULT_WORKSPACE_MIB,
    ENGINES_DIR,
    PRECISIONS,
    DeviceFacts,
    TrtVersion,
    network_flag_names,
)

# --------------------------------------------------------------------------- names and paths


_NAME_RE = re.compile(
    r"^(?P<graph>[a-z0-9_]+)-(?P<sha>[0-9a-f]{12})-trt(?P<trt>\d+\.\d+\.\d+)-sm(?P<sm>\d+)"
    r"-(?P<precision>int8|fp16|fp32)-b(?P<max_batch>\d+)\.engine$"
)


@dataclass(frozen=True)
class EngineName:
    """The fingerprint an engine's file name carries."""

    graph: str
    sha12: str
    trt: str
    sm: str
    precision: str
    max_batch: int

    @property
    def filename(self) -> str:
        return (
            f"{self.graph}-{self.sha12}-trt{self.trt}-sm{self.sm}-{self.precision}"
            f"-b{self.max_batch}.engine"
        )

    @classmethod
    def parse(cls, filename: str) -> EngineName | None:
        m = _NAME_RE.match(filename)
        if not m:
            return None
        g = m.groupdict()
        return cls(g["graph"], g["sha"], g["trt"], g["sm"], g["precision"], int(g["max_batch"]))


def engine_filename(
    graph: str, onnx_sha256: str, facts: DeviceFacts, precision: str, max_batch: int
) -> str:
    """``encoder-1a2b3c4d5e6f-trt10.3.0-sm87-int8-b8.engine``."""
    return EngineName(
        graph, onnx_sha256[:12], str(facts.trt_version), facts.sm, precision, max_batch
    ).filename


def sidecar_path(engine_path: Path) -> Path:
    """``x.engine`` -> ``x.json``: metadata beside the engine, never inside it."""
    return Path(engine_path).with_suffix(".json")


def timing_cache_path(engines_dir: Path, facts: DeviceFacts) -> Path:
    """``timing-<trt>-sm<cc>.cache``: the cache is tied to TensorRT version and device."""
    return Path(engines_dir) / f"timing-{facts.trt_version}-sm{facts.sm}.cache"


def default_engines_dir(bundle_path: Path) -> Path:
    return Path(bundle_path) / ENGINES_DIR


def rebuild_hint(bundle_path: Path, engines_dir: Path | None = None) -> str:
    """The command that fixes a missing, stale or corrupt engine."""
    cmd = f"edge-mer build-engine {bundle_path}"
    if engines_dir is not None and Path(engines_dir) != default_engines_dir(bundle_path):
        cmd += f" --engines-dir {engines_dir}"
    return f"rebuild with: {cmd}"


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class BatchRange:
    """Optimization profile for the batch axis (axis 0 of every input)."""

    min: int = 1
    opt: int = 1
    max: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise InputError(
                f"batch range must satisfy 1 <= min <= opt <= max, got "
                f"{self.min}/{self.opt}/{self.max}; check --max-batch"
            )


@dataclass(frozen=True)
class GraphBuild:
    """One engine to build: which bundle graph, at which precision, with which flags."""

    graph: str  # engine role: encoder | step | clip
    source: str  # manifest graph key: encoder_int8, encoder, step, step_fp16, ...
    onnx_path: Path
    onnx_sha256: str
    precision: str  # what the engine computes in: int8 | fp16 | fp32
    builder_flags: tuple[str, ...]  # BuilderFlag members, empty on TensorRT 11
    network_flags: tuple[str, ...]
    fixed_axes: Mapping[str, Mapping[int, int]]  # input -> {axis: size} for dynamic non-batch axes
    engine_path: Path

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.engine_path)


@dataclass(frozen=True)
class EnginePlan:
    """Everything ``build-engine`` will do, decided before TensorRT is touched."""

    bundle_path: Path
    engines_dir: Path
    facts: DeviceFacts
    precision: str
    batch: BatchRange
    workspace_mib: int  # 0 = TensorRT's default (the device's memory)
    timing_cache: Path
    graphs: tuple[GraphBuild, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def default_precision(bundle: Bundle) -> str:
    """int8 when the bundle carries a Q/DQ encoder, else fp16."""
    return "int8" if "encoder_int8" in bundle.manifest["graphs"] else "fp16"


def _fixed_axes(bundle: Bundle, graph: str) -> dict[str, dict[int, int]]:
    """Sizes for non-batch axes an ONNX may leave dynamic, from the manifest."""
    inp = bundle.input
    frame = {1: int(inp["height"]), 2: int(inp["width"]), 3: int(inp["channels"])}
    if graph == "encoder":
        return {"frames": frame}
    if graph == "clip":
        return {"clip": {1: int(inp["window"]), **{k + 1: v for k, v in frame.items()}}}
    return {s.name: {i + 1: int(d) for i, d in enumerate(s.shape)} for s in bundle.states}


def _choose(
    graph: str, precision: str, graphs: Mapping[str, Any], v: TrtVersion, notes: list[str]
) -> tuple[str, str, tuple[str, ...]]:
    """(source graph key, engine precision, builder flags) for one role."""
    if graph == "encoder" and precision == "int8":
        if "encoder_int8" not in graphs:
            raise InputError(
                "this bundle has no INT8 encoder ('encoder_int8'): convert with "
                "--int8, or pass --precision fp16"
            )
        # Q/DQ layers run INT8; FP16 lets the rest of the encoder leave FP32 (weak typing).
        return "encoder_int8", "int8", (("INT8", "FP16") if v.int8_flag else ())
    # TensorRT has no INT8 LSTM: step and clip stay FP16 even when the encoder is INT8.
    want = "fp32" if precision == "fp32" else "fp16"
    if want == "fp32":
        return graph, "fp32", ()
    if v.fp16_flag:
        return graph, "fp16", ("FP16",)
    if f"{graph}_fp16" in graphs:  # TensorRT 11: FP16 must be in the graph's own types
        return f"{graph}_fp16", "fp16", ()
    notes.append(
        f"TensorRT {v} has no FP16 builder flag and the bundle has no "
        f"'{graph}_fp16' graph: the {graph} engine runs in FP32 (the ONNX's types)"
    )
    return graph, "fp32", ()


def make_plan(
    bundle: Bundle,
    facts: DeviceFacts,
    *,
    precision: str | None = None,
    engines_dir: Path | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    include_clip: bool = False,
) -> EnginePlan:
    """Decide graphs, precisions, flags, profile and paths for this bundle on this device.

    Raises:
        InputError: an unknown precision, int8 without an INT8 encoder, bad batch/workspace.
    """
    precision = precision or default_precision(bundle)
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r} is not one of {list(PRECISIONS)}")
    if workspace_mib < 0:
        raise InputError(f"--workspace {workspace_mib} must be >= 0 MiB (0 = TensorRT decides)")
    batch = BatchRange(1, 1, max_batch)
    engines_dir = Path(engines_dir) if engines_dir else default_engines_dir(bundle.path)
    graphs = bundle.manifest["graphs"]
    notes: list[str] = []
    builds = []
    for role in ("encoder", "step", "clip") if include_clip else ("encoder", "step"):
        source, prec, flags = _choose(role, precision, graphs, facts.trt_version, notes)
        sha = graphs[source]["sha256"]
        builds.append(
            GraphBuild(
                graph=role,
                source=source,
                onnx_path=bundle.graph_path(source),
                onnx_sha256=sha,
                precision=prec,
                builder_flags=flags,
                network_flags=network_flag_names(facts.trt_version),
                fixed_axes=_fixed_axes(bundle, role),
                engine_path=engines_dir / engine_filename(role, sha, facts, prec, batch.max),
            )
        )
    return EnginePlan(
        bundle.path,
        engines_dir,
        facts,
        precision,
        batch,
        workspace_mib,
        timing_cache_path(engines_dir, facts),
        tuple(builds),
        tuple(notes),
    )


def profile_shapes(
    name: str, shape: Iterable[int], batch: BatchRange, fixed: Mapping[int, int] | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes for one network input whose axis 0 is the batch.

    Dynamic non-batch axes (-1) take their size from ``fixed`` (the manifest); one that has
    none is an error, since one profile cannot cover an unbounded axis.
    """
    dims = list(shape)
    if not dims:
        raise EngineError(f"input {name!r} is a scalar; bundle graphs need a batch axis")
    rest = []
    for axis, d in enumerate(dims[1:], start=1):
        if d is None or int(d) < 0:
            if not fixed or axis not in fixed:
                raise EngineError(
                    f"input {name!r} has a dynamic axis {axis} the manifest does "
                    "not size; re-export with only the batch axis dynamic"
                )
            d = fixed[axis]
        rest.append(int(d))
    return ((batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
