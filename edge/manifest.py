"""The bundle manifest as typed models (DESIGN §3), validated by type and range on read.

Every key the device uses is checked where it enters, so a damaged or hand-edited
manifest is one line at load time instead of a loop that never ends (``input.fps`` of
1e12), a traceback deep in the state cache (a negative state dimension) or a message
about the wrong stage (``window = 0``). The ranges are what the runtime can honour:

- ``input``: height, width 1..4096 px, channels 1 (gray) or 3 (RGB), fps 1..1000,
  window 1..4096 frames;
- ``state``: up to 16 tensors, each dimension 1..1,048,576 and at most 2**26 float32
  values per track (256 MiB), unique names, float32;
- files (``graphs``, ``artifacts``): relative paths inside the bundle, sha256 as 64 hex.

Forward compatibility: keys this edge-mer does not know (a newer writer's) are kept and
ignored; the known ones are validated strictly (``"16"`` is not a window). ``schema``
changes when a known key changes meaning.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_mer.config.loader import explain
from edge_mer.config.toml_model import field_error

SCHEMA = 1
GRAPH_NAMES = ("encoder", "step", "clip")
# "recurrent": T/stride staggered state banks per track reproduce the clip; "window": the
# state after T steps depends only on those T frames, so one row per track is exact.
STATE_KINDS = ("recurrent", "window")
StateKind = Literal["recurrent", "window"]
MAX_STATE_VALUES = 1 << 26
_RESERVED_NAMES = ("frames", "features", "logits", "clip")

Name = Annotated[str, Field(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0)]


class _Open(BaseModel):
    """Known keys strict; unknown keys (a newer writer's) kept, not validated."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)


class InputSpec(_Open):
    """What the encoder reads, and at which rate the model runs."""

    height: int = Field(ge=1, le=4096, description="Crop height in pixels.")
    width: int = Field(ge=1, le=4096, description="Crop width in pixels.")
    channels: Literal[1, 3] = Field(description="1 = gray, 3 = RGB.")
    fps: float = Field(ge=1, le=1000, description="The rate the model was trained at.")
    window: int = Field(ge=1, le=4096, description="Frames the clip classifier sees.")


class StateEntry(_Open):
    """One state tensor of the step graph; ``shape`` without the leading batch axis."""

    name: Name
    shape: list[Annotated[int, Field(ge=1, le=1 << 20)]] = Field(max_length=8)
    dtype: Literal["float32"] = "float32"

    @field_validator("name")
    @classmethod
    def _graph_name(cls, name: str) -> str:
        if name in _RESERVED_NAMES or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:/-]*", name):
            raise field_error(f"{name!r} cannot name a state tensor")
        return name

    @field_validator("shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if math.prod(shape) > MAX_STATE_VALUES:
            raise field_error(
                f"{shape!r} holds {math.prod(shape):,} values per track, more than "
                f"{MAX_STATE_VALUES:,}"
            )
        return shape


class FileEntry(_Open):
    """A file of the bundle and its hash."""

    path: Name
    sha256: str
    bytes: Count | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, digest: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise field_error(f"{digest!r} is not a sha256 (64 lowercase hex digits)")
        return digest

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        posix, win = PurePosixPath(path), PureWindowsPath(path)
        if posix.is_absolute() or win.is_absolute() or ".." in posix.parts or ".." in win.parts:
            raise field_error(f"{path!r} leaves the bundle directory")
        return path


class Fp32Verification(_Open):
    atol: float | None = None
    max_abs_pytorch_vs_onnx: float | None = None
    max_abs_streaming_vs_clip: float | None = None
    calibration_windows: Count | None = None


class Int8Verification(_Open):
    min_agreement: float | None = Field(None, ge=0, le=1)
    top1_agreement: float | None = Field(None, ge=0, le=1)
    max_prob_diff: float | None = Field(None, ge=0, le=1)
    held_out_windows: Count | None = None
    float_layers: list[str] = []
    encoder_latency_ms: dict[str, float] = {}


class Verification(_Open):
    fp32: Fp32Verification | None = None
    int8: Int8Verification | None = None


class Cost(_Open):
    """What the model costs per frame and per track (the architectures' comparison)."""

    params: Count | None = None
    encoder_macs_per_frame: Count | None = None
    step_macs: Count | None = None
    step_rows_per_frame: Annotated[int, Field(ge=1)] | None = None
    state_bytes_per_track: Count | None = None


class Manifest(_Open):
    """``manifest.json``: see DESIGN §3."""

    schema_: int = Field(alias="schema")
    name: Name
    labels: list[Name] = Field(min_length=1, max_length=1000)
    input: InputSpec
    state: list[StateEntry] = Field(max_length=16)
    graphs: dict[str, FileEntry]
    artifacts: dict[str, FileEntry] = {}
    verification: Verification
    targets: dict[str, Name] = {}
    calibration: dict[str, Any] | None = None
    state_kind: StateKind = "recurrent"
    cost: Cost | None = None
    spotter: dict[str, Any] | None = None

    @field_validator("schema_")
    @classmethod
    def _supported(cls, schema: int) -> int:
        if schema != SCHEMA:
            raise field_error(
                f"{schema!r} is not the supported schema {SCHEMA} (a bundle from another "
                "edge-mer version)"
            )
        return schema

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise field_error(f"{labels!r} repeats a label")
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [s.name for s in self.state]
        if len(set(names)) != len(names):
            raise field_error(f"state names {names!r} repeat a name", "state")
        for g in GRAPH_NAMES:
            if g not in self.graphs:
                raise field_error(f"graph {g!r} is not listed", "graphs")
        for target, graph in self.targets.items():
            if graph not in self.graphs:
                message = f"names graph {graph!r}, which is not listed"
                raise field_error(message, f"targets.{target}")
        return self


def validate_manifest(data: Any) -> tuple[Manifest | None, str]:
    """(the manifest, "") or (None, "key.path: what is wrong") for parsed JSON ``data``."""
    if not isinstance(data, dict):
        return None, "the manifest is not a JSON object"
    try:
        return Manifest.model_validate(data), ""
    except ValidationError as exc:
        key, message = explain(exc, Manifest)
        message = message.replace("expected a table", "expected an object")  # JSON's word
        return None, f"{key}: {message}" if key else message
