"""The daemon's config (DESIGN §7): one pydantic model per TOML table.

Every key has a type, a default (or is required), a range where one makes sense, and a
description: ``edge-mer validate-config FILE --keys`` lists them, and
:meth:`~edge_mer.config.toml_model.TomlModel.to_toml` writes them as comments. Checks
across keys (hysteresis, a box the ``roi`` detector needs, a bundle that opens) are
validators that name the key to change.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_mer.config.toml_model import (
    ConfigPath,
    NonEmptyStr,
    TomlModel,
    field_error,
    int_tuple,
)

SOURCE_SCHEMES = ("synthetic", "file", "frames", "v4l2", "csi", "gst", "picam")

#: A face box [x, y, w, h] in pixels.
Box = int_tuple(4)


class ModelConfig(TomlModel):
    """[model]: the bundle and how to run it."""

    bundle: ConfigPath = Field(
        description="Bundle folder written by `edge-mer convert --out` (required)."
    )
    runner: Literal["auto", "onnxruntime", "tensorrt"] = Field(
        "auto",
        description="Inference backend; auto = TensorRT when it and a built engine exist, "
        "else ORT.",
    )
    engines_dir: ConfigPath | None = Field(
        None,
        description="Folder of TensorRT engines from `edge-mer build-engine` "
        "(default BUNDLE/engines).",
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="ONNX Runtime threads for the encoder (0 = by its size: 1 under 30 M MACs "
        "a frame, else ORT's default, one per physical core; the step runs on 1 unless set).",
    )
    verify_hashes: bool = Field(
        True, description="Check every bundle file's sha256 at start (and on reload)."
    )


class SourceConfig(TomlModel):
    """[source]: the camera or file, by URI."""

    uri: NonEmptyStr = Field(
        description="Frame source: v4l2:///dev/video0, csi://0, picam://0, gst://PIPELINE, "
        "file://clip.mp4, frames://DIR or synthetic:// (required)."
    )
    width: int | None = Field(
        None, ge=16, le=16384, description="Requested capture width in pixels (default: camera's)."
    )
    height: int | None = Field(
        None, ge=16, le=16384, description="Requested capture height in pixels (default: camera's)."
    )
    fps: float | None = Field(
        None, gt=0, le=1000, description="Requested capture rate (default: camera's)."
    )
    ring_frames: int = Field(
        2, ge=1, le=64, description="Frames buffered between capture and inference (drop-oldest)."
    )
    read_timeout_s: float = Field(
        2.0, gt=0, le=3600, description="A read that returns no frame within this is a lost camera."
    )
    reconnect_min_s: float = Field(
        0.5, gt=0, le=3600, description="First reopen delay after the camera is lost."
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, description="Cap of the exponential (jittered) reopen delay."
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        scheme, sep, _ = uri.partition("://")
        if not sep or scheme not in SOURCE_SCHEMES:
            raise field_error(
                f"{uri!r} has no known scheme; use one of "
                + ", ".join(f"{s}://" for s in SOURCE_SCHEMES)
            )
        return uri

    @model_validator(mode="after")
    def _backoff_order(self) -> SourceConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise field_error("must be <= source.reconnect_max_s", "reconnect_min_s")
        return self


class FaceConfig(TomlModel):
    """[face]: finding the face and locking the crop."""

    detector: Literal["haar", "yunet", "roi", "none"] = Field(
        "haar",
        description="haar (OpenCV cascade), yunet (needs yunet_model), roi (fixed box), "
        "none (whole frame).",
    )
    detect_every: int = Field(
        5, ge=1, le=10_000, description="Run the detector every N frames; track in between."
    )
    roi: Box | None = Field(  # type: ignore[valid-type]
        None, description="Fixed face box [x, y, w, h] in pixels (required with detector = 'roi')."
    )
    yunet_model: ConfigPath | None = Field(
        None, description="YuNet ONNX file (required with detector = 'yunet')."
    )
    min_face: int = Field(
        48, ge=8, le=8192, description="Smallest face side in pixels the detector reports."
    )
    max_faces: int = Field(
        1, ge=1, le=64, description="Faces tracked at once (each has its own recurrent state)."
    )
    relock_drift: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Re-lock the crop when the face moved this fraction of its size.",
    )

    @model_validator(mode="after")
    def _detector_needs(self) -> FaceConfig:
        if self.detector == "roi" and self.roi is None:
            raise field_error("required with detector = 'roi': set roi = [x, y, w, h]", "roi")
        if self.roi is not None and (min(self.roi[:2]) < 0 or min(self.roi[2:]) <= 0):
            raise field_error(f"{list(self.roi)!r} needs x, y >= 0 and w, h > 0", "roi")
        if self.detector == "yunet" and self.yunet_model is None:
            raise field_error(
                "required with detector = 'yunet': path to the ONNX file", "yunet_model"
            )
        return self


class StateConfig(TomlModel):
    """[state]: the per-track recurrent state cache."""

    ttl_s: float = Field(
        2.0, gt=0, description="Forget a track's state when its face was unseen this long."
    )
    reset_gap_s: float = Field(
        0.5,
        gt=0,
        description="A frame gap longer than this resets the state (the LSTM must not bridge "
        "holes).",
    )


class SpotterConfig(TomlModel):
    """[spotter]: turning per-frame probabilities into causal events."""

    smoothing_frames: int = Field(
        3, ge=1, le=1000, description="Moving-average length over per-frame probabilities."
    )
    threshold_on: float = Field(
        0.6, ge=0, le=1, description="Event starts when the smoothed score rises above this."
    )
    threshold_off: float = Field(
        0.4, ge=0, le=1, description="Event ends when it falls below this (<= threshold_on)."
    )
    min_duration_ms: int = Field(
        40, ge=0, description="Shorter events are dropped (micro-expressions: 40-500 ms)."
    )
    max_duration_ms: int = Field(
        500, gt=0, description="Longer events are macro-expressions, see `macro`."
    )
    refractory_ms: int = Field(200, ge=0, description="No new event for this long after one ends.")
    macro: Literal["report", "drop"] = Field(
        "report", description="Events longer than max_duration_ms: report or drop."
    )
    lag_frames: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="Date events this many model frames earlier: a decision at frame t rests "
        "on the window ending at t (default: a quarter window, how the reference trainer "
        "labels).",
    )
    macro_veto: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Models with a 'macro' class: drop a micro event when the smoothed "
        "p(macro) exceeds this from its onset to hold_ms after it closed (1 = never).",
    )
    hold_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Models with a 'macro' class: emit a micro event this long after it "
        "closed, so that macro_veto can still see the face go on into a macro-expression.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SpotterConfig:
        if self.threshold_off > self.threshold_on:
            raise field_error("must be <= spotter.threshold_on (hysteresis)", "threshold_off")
        if self.min_duration_ms > self.max_duration_ms:
            raise field_error("must be <= spotter.max_duration_ms", "min_duration_ms")
        return self


class JsonlSink(TomlModel):
    """[sinks.jsonl]: one JSON event per line, rotated by size."""

    path: ConfigPath | None = Field(
        None, description="Events file (unset = off); under systemd use /var/log/edge-mer/."
    )
    max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Rotate when the file reaches this size (0 = never)."
    )
    backups: int = Field(5, ge=0, le=1000, description="Rotated files kept (events.jsonl.1 ...).")


class StdoutSink(TomlModel):
    """[sinks.stdout]: events on standard output (the journal, under systemd)."""

    enabled: bool = Field(False, description="Print each event as one JSON line on stdout.")


class MqttSink(TomlModel):
    """[sinks.mqtt]: publish events to a broker (needs edge-mer[mqtt])."""

    host: NonEmptyStr | None = Field(None, description="Broker host name or address (unset = off).")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    topic: NonEmptyStr = Field("edge-mer/events", description="Topic events are published to.")
    qos: int = Field(1, ge=0, le=2, description="MQTT QoS level 0, 1 or 2.")
    queue_size: int = Field(
        1000, ge=1, description="Events held while the broker is away; oldest dropped."
    )
    client_id: NonEmptyStr | None = Field(
        None, description="MQTT client id (default edge-mer-HOSTNAME)."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive in seconds.")


class SinksConfig(TomlModel):
    """[sinks]: where events go."""

    jsonl: JsonlSink = Field(default_factory=JsonlSink, description="JSON-lines file sink.")
    stdout: StdoutSink = Field(default_factory=StdoutSink, description="Standard output sink.")
    mqtt: MqttSink = Field(default_factory=MqttSink, description="MQTT sink.")


class MetricsConfig(TomlModel):
    """[metrics]: Prometheus text endpoint."""

    enabled: bool = Field(True, description="Serve /metrics over HTTP.")
    bind: NonEmptyStr = Field(
        "127.0.0.1:9108",
        description="HOST:PORT to listen on; keep it on localhost unless scraped.",
    )

    @field_validator("bind")
    @classmethod
    def _host_port(cls, bind: str) -> str:
        host, _, port = bind.rpartition(":")
        try:
            if not host or not 0 < int(port) < 65536:
                raise ValueError
            if host not in ("localhost", "*"):
                ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise field_error(f"{bind!r} is not HOST:PORT, e.g. '127.0.0.1:9108'") from None
        return bind


class ServiceConfig(TomlModel):
    """[service]: daemon behaviour under systemd."""

    watchdog_stall_s: float = Field(
        10.0,
        gt=0,
        description="Inference older than this stops WATCHDOG pings, so systemd restarts us.",
    )
    status_interval_s: float = Field(5.0, gt=0, description="Seconds between STATUS= updates.")
    drain_s: float = Field(
        3.0, ge=0, le=10, description="On SIGTERM, seconds to flush sinks before exiting."
    )
    camera_restart_after_s: float = Field(
        0.0,
        ge=0,
        description="Stop WATCHDOG pings after the camera was offline this long (0 = never).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Logging level."
    )


class Config(TomlModel):
    """The whole daemon config. Build with :func:`load_config` or :func:`config_from_args`.

    With ``check_files`` in the validation context, the bundle is opened (its manifest
    validated and, per ``model.verify_hashes``, every hash checked) and referenced files
    must exist.
    """

    model: ModelConfig = Field(description="The bundle and how to run it.")
    source: SourceConfig = Field(description="The camera or file.")
    face: FaceConfig = Field(
        default_factory=FaceConfig, description="Face detection and crop locking."
    )
    state: StateConfig = Field(default_factory=StateConfig, description="Recurrent state cache.")
    spotter: SpotterConfig = Field(default_factory=SpotterConfig, description="Event spotting.")
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="Event outputs.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics endpoint.")
    service: ServiceConfig = Field(
        default_factory=ServiceConfig, description="Daemon behaviour under systemd."
    )

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo) -> Config:
        if (info.context or {}).get("check_files"):
            check_files(self)
        return self

    def to_toml(self, header: str = "") -> str:
        return super().to_toml(
            header or "edge-mer daemon config: `edge-mer validate-config FILE` checks it."
        )

    def summary(self) -> list[str]:
        """A few human lines: bundle, source, face, sinks, metrics."""
        sinks = []
        if self.sinks.jsonl.path:
            sinks.append(f"jsonl {self.sinks.jsonl.path}")
        if self.sinks.stdout.enabled:
            sinks.append("stdout")
        if self.sinks.mqtt.host:
            m = self.sinks.mqtt
            sinks.append(f"mqtt {m.host}:{m.port}/{m.topic} qos{m.qos}")
        return [
            f"model    {self.model.bundle} (runner {self.model.runner})",
            f"source   {self.source.uri}",
            f"face     {self.face.detector}, detect every {self.face.detect_every} frames",
            f"sinks    {', '.join(sinks) or 'none (events are only counted)'}",
            "metrics  "
            + (f"http://{self.metrics.bind}/metrics" if self.metrics.enabled else "off"),
        ]


def check_files(cfg: Config) -> None:
    """The files a config names exist, and its bundle opens (raises :func:`field_error`)."""
    face, src = cfg.face, cfg.source
    if face.yunet_model is not None and not face.yunet_model.is_file():
        raise field_error(f"{str(face.yunet_model)!r} does not exist", "face.yunet_model")
    if src.uri.startswith("file://") and not Path(src.uri[7:]).exists():
        raise field_error(f"{src.uri[7:]!r} does not exist", "source.uri")
    from edge_mer.bundle import Bundle
    from edge_mer.errors import BundleError

    try:
        Bundle.open(cfg.model.bundle, verify_hashes=cfg.model.verify_hashes)
    except BundleError as exc:
        raise field_error(str(exc), "model.bundle") from None
