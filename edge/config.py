"""The daemon's config: typed dataclasses and a small strict TOML loader (DESIGN §7).

Every key is a dataclass field with a description (shown by ``edge-mer validate-config``
and in the README). Loading rejects unknown keys with the full key path and a suggestion,
wrong types with the expected type and the value given, values out of range, and a
bundle that is missing or broken. Every failure is one :class:`ConfigError` line naming
the file, the key path (and the line where it can be found) and the fix.

Relative paths in a file resolve against the file's folder, so the loaded config, and
:meth:`Config.to_toml`, hold absolute paths.
"""

# ruff: noqa: RUF009  (_f wraps dataclasses.field to attach descriptions; defaults are frozen)
from __future__ import annotations

import copy
import dataclasses
import difflib
import ipaddress
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_mer.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

SOURCE_SCHEMES = ("synthetic", "file", "frames", "v4l2", "csi", "gst", "picam")


class ConfigError(InputError):
    """A config file or value that cannot be used: names the file, key path and the fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file, self.key, self.line = file, key, line
        where = file or "config"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def _f(default: Any = dataclasses.MISSING, desc: str = "", **checks: Any) -> Any:
    """A config field: ``desc`` documents it; ``ge``/``le``/``gt`` bound numbers."""
    meta = {"description": desc, **checks}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    """[model]: the bundle and how to run it."""

    bundle: Path = _f(desc="Bundle folder written by `edge-mer convert --out` (required).")
    runner: Literal["auto", "onnxruntime", "tensorrt"] = _f(
        "auto", "Inference backend; auto = TensorRT when it and a built engine exist, else ORT."
    )
    engines_dir: Path | None = _f(
        None, "Folder of TensorRT engines from `edge-mer build-engine` (default BUNDLE/engines)."
    )
    threads: int = _f(0, "CPU threads for ONNX Runtime (0 = runtime decides).", ge=0, le=256)
    verify_hashes: bool = _f(True, "Check every bundle file's sha256 at start (and on reload).")


@dataclass(frozen=True)
class SourceConfig:
    """[source]: the camera or file, by URI."""

    uri: str = _f(
        desc="Frame source: v4l2:///dev/video0, csi://0, picam://0, gst://PIPELINE, "
        "file://clip.mp4, frames://DIR or synthetic:// (required)."
    )
    width: int | None = _f(None, "Requested capture width in pixels (default: camera's).", ge=16)
    height: int | None = _f(None, "Requested capture height in pixels (default: camera's).", ge=16)
    fps: float | None = _f(None, "Requested capture rate (default: camera's).", gt=0, le=1000)
    ring_frames: int = _f(
        2, "Frames buffered between capture and inference (drop-oldest).", ge=1, le=64
    )
    read_timeout_s: float = _f(
        2.0, "A read that returns no frame within this is a lost camera.", gt=0
    )
    reconnect_min_s: float = _f(0.5, "First reopen delay after the camera is lost.", gt=0)
    reconnect_max_s: float = _f(30.0, "Cap of the exponential (jittered) reopen delay.", gt=0)


@dataclass(frozen=True)
class FaceConfig:
    """[face]: finding the face and locking the crop."""

    detector: Literal["haar", "yunet", "roi", "none"] = _f(
        "haar",
        "haar (OpenCV cascade), yunet (needs yunet_model), roi (fixed box), none (whole frame).",
    )
    detect_every: int = _f(5, "Run the detector every N frames; track in between.", ge=1, le=10_000)
    roi: tuple[int, int, int, int] | None = _f(
        None, "Fixed face box [x, y, w, h] in pixels (required with detector = 'roi')."
    )
    yunet_model: Path | None = _f(None, "YuNet ONNX file (required with detector = 'yunet').")
    min_face: int = _f(48, "Smallest face side in pixels the detector reports.", ge=8, le=8192)
    max_faces: int = _f(1, "Faces tracked at once (each has its own recurrent state).", ge=1, le=64)
    relock_drift: float = _f(
        0.25, "Re-lock the crop when the face moved this fraction of its size.", gt=0, le=1
    )


@dataclass(frozen=True)
class StateConfig:
    """[state]: the per-track recurrent state cache."""

    ttl_s: float = _f(2.0, "Forget a track's state when its face was unseen this long.", gt=0)
    reset_gap_s: float = _f(
        0.5, "A frame gap longer than this resets the state (the LSTM must not bridge holes).", gt=0
    )


@dataclass(frozen=True)
class SpotterConfig:
    """[spotter]: turning per-frame probabilities into causal events."""

    smoothing_frames: int = _f(
        3, "Moving-average length over per-frame probabilities.", ge=1, le=1000
    )
    threshold_on: float = _f(
        0.6, "Event starts when the smoothed score rises above this.", ge=0, le=1
    )
    threshold_off: float = _f(
        0.4, "Event ends when it falls below this (<= threshold_on).", ge=0, le=1
    )
    min_duration_ms: int = _f(
        40, "Shorter events are dropped (micro-expressions: 40-500 ms).", ge=0
    )
    max_duration_ms: int = _f(500, "Longer events are macro-expressions, see `macro`.", gt=0)
    refractory_ms: int = _f(200, "No new event for this long after one ends.", ge=0)
    macro: Literal["report", "drop"] = _f(
        "report", "Events longer than max_duration_ms: report or drop."
    )
    lag_frames: int | None = _f(
        None,
        "Date events this many model frames earlier: a decision at frame t rests on the "
        "window ending at t (default: a quarter window, how the reference trainer labels).",
        ge=0,
        le=10_000,
    )


@dataclass(frozen=True)
class JsonlSink:
    """[sinks.jsonl]: one JSON event per line, rotated by size."""

    path: Path | None = _f(None, "Events file (unset = off); under systemd use /var/log/edge-mer/.")
    max_bytes: int = _f(
        64 * 1024 * 1024, "Rotate when the file reaches this size (0 = never).", ge=0
    )
    backups: int = _f(5, "Rotated files kept (events.jsonl.1 ...).", ge=0, le=1000)


@dataclass(frozen=True)
class StdoutSink:
    """[sinks.stdout]: events on standard output (the journal, under systemd)."""

    enabled: bool = _f(False, "Print each event as one JSON line on stdout.")


@dataclass(frozen=True)
class MqttSink:
    """[sinks.mqtt]: publish events to a broker (needs edge-mer[mqtt])."""

    host: str | None = _f(None, "Broker host name or address (unset = off).")
    port: int = _f(1883, "Broker TCP port.", ge=1, le=65535)
    topic: str = _f("edge-mer/events", "Topic events are published to.")
    qos: int = _f(1, "MQTT QoS level 0, 1 or 2.", ge=0, le=2)
    queue_size: int = _f(1000, "Events held while the broker is away; oldest dropped.", ge=1)
    client_id: str | None = _f(None, "MQTT client id (default edge-mer-HOSTNAME).")
    keepalive_s: int = _f(30, "MQTT keep-alive in seconds.", ge=5, le=3600)


@dataclass(frozen=True)
class SinksConfig:
    """[sinks]: where events go."""

    jsonl: JsonlSink = _f(JsonlSink(), "JSON-lines file sink.")
    stdout: StdoutSink = _f(StdoutSink(), "Standard output sink.")
    mqtt: MqttSink = _f(MqttSink(), "MQTT sink.")


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: Prometheus text endpoint."""

    enabled: bool = _f(True, "Serve /metrics over HTTP.")
    bind: str = _f("127.0.0.1:9108", "HOST:PORT to listen on; keep it on localhost unless scraped.")


@dataclass(frozen=True)
class ServiceConfig:
    """[service]: daemon behaviour under systemd."""

    watchdog_stall_s: float = _f(
        10.0, "Inference older than this stops WATCHDOG pings, so systemd restarts us.", gt=0
    )
    status_interval_s: float = _f(5.0, "Seconds between STATUS= updates.", gt=0)
    drain_s: float = _f(3.0, "On SIGTERM, seconds to flush sinks before exiting.", ge=0, le=10)
    camera_restart_after_s: float = _f(
        0.0, "Stop WATCHDOG pings after the camera was offline this long (0 = never).", ge=0
    )
    log_level: Literal["debug", "info", "warning", "error"] = _f("info", "Logging level.")


@dataclass(frozen=True)
class Config:
    """The whole daemon config. Build with :func:`load_config` or :func:`config_from_args`."""

    model: ModelConfig = _f(desc="The bundle and how to run it.")
    source: SourceConfig = _f(desc="The camera or file.")
    face: FaceConfig = _f(FaceConfig(), "Face detection and crop locking.")
    state: StateConfig = _f(StateConfig(), "Recurrent state cache.")
    spotter: SpotterConfig = _f(SpotterConfig(), "Event spotting.")
    sinks: SinksConfig = _f(SinksConfig(), "Event outputs.")
    metrics: MetricsConfig = _f(MetricsConfig(), "Metrics endpoint.")
    service: ServiceConfig = _f(ServiceConfig(), "Daemon behaviour under systemd.")

    def to_toml(self) -> str:
        """The config as TOML with each key's description as a comment; unset keys are
        written commented out. ``load_config`` of the result gives back an equal config."""
        out = ["# edge-mer daemon config: `edge-mer validate-config FILE` checks it.", ""]
        _emit(self, "", out)
        return "\n".join(out).rstrip() + "\n"

    def flatten(self) -> dict[str, Any]:
        """Key path -> value for every leaf (e.g. ``"sinks.mqtt.port": 1883``)."""
        return dict(_leaves(self, ""))

    def changed_keys(self, other: Config) -> list[str]:
        """Key paths whose values differ from ``other`` (for a SIGHUP reload's log line)."""
        a, b = self.flatten(), other.flatten()
        return [k for k in a if a[k] != b[k]]

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


def describe_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every leaf key, in file order."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp, key + "."))  # type: ignore[arg-type]
            continue
        default = "required" if f.default is dataclasses.MISSING else _toml_value(f.default)
        rows.append((key, _type_name(tp), default, f.metadata.get("description", "")))
    return rows


# ---------------------------------------------------------------------------- loading


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read, validate and return the config at ``path``.

    Args:
        check_files: also open the bundle (``Bundle.open``, hashes per ``model.verify_hashes``)
            and check other referenced files exist. Off only for rendering/inspection.

    Raises:
        ConfigError: unreadable file, TOML syntax (with line), unknown key, wrong type,
            value out of range, missing or broken bundle.
    """
    p = Path(path)
    label = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no such file; pass an existing TOML file (see systemd/edge-mer.toml)", file=label
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc})", file=label) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            f"TOML syntax error: {msg}; fix the file", file=label, line=line
        ) from None
    return config_from_dict(
        data, origin=label, base_dir=p.resolve().parent, text=text, check_files=check_files
    )


def config_from_dict(
    data: dict[str, Any],
    *,
    origin: str = "config",
    base_dir: Path | None = None,
    text: str | None = None,
    check_files: bool = True,
) -> Config:
    """Validate a parsed TOML document (see :func:`load_config`)."""
    ctx = _Ctx(origin, base_dir or Path.cwd(), text)
    cfg = ctx.build(Config, data, "")
    _cross_check(cfg, ctx, check_files)
    return cfg


def config_from_args(
    bundle: str | Path,
    source: str,
    *,
    events: str | Path | None = None,
    stdout: bool | None = None,
    runner: str = "auto",
    tables: dict[str, dict[str, Any]] | None = None,
    check_files: bool = True,
) -> Config:
    """A config from command-line flags (``edge-mer run --bundle B --source URI``).

    Args:
        events: JSON-lines events file; ``stdout`` defaults to on when it is not given.
        tables: more keys as parsed TOML, e.g. ``{"face": {"detector": "none"}}``.
    """
    data: dict[str, Any] = copy.deepcopy(tables or {})
    data.setdefault("model", {}).update(bundle=str(bundle), runner=runner)
    data.setdefault("source", {})["uri"] = source
    sinks = data.setdefault("sinks", {})
    if events is not None:
        sinks.setdefault("jsonl", {})["path"] = str(events)
    sinks.setdefault("stdout", {})["enabled"] = events is None if stdout is None else stdout
    return config_from_dict(data, origin="command line", check_files=check_files)


class _Ctx:
    def __init__(self, origin: str, base_dir: Path, text: str | None) -> None:
        self.origin, self.base_dir, self.text = origin, base_dir, text

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.origin, key=key, line=self.line_of(key))

    def line_of(self, key: str) -> int | None:
        """Best-effort line of ``key`` (plain ``[table]`` + ``name =`` layouts only)."""
        if not self.text or not key:
            return None
        table, _, name = key.rpartition(".")
        current = ""
        for no, raw in enumerate(self.text.splitlines(), 1):
            line = raw.strip()
            header = re.match(r"^\[\s*([A-Za-z0-9_.\s\"-]+?)\s*\]", line)
            if header:
                current = re.sub(r"\s*\.\s*", ".", header.group(1)).replace('"', "")
                if current == key:
                    return no
                continue
            if current == table and re.match(rf"^\"?{re.escape(name)}\"?\s*=", line):
                return no
        return None

    def build(self, cls: type, data: Any, prefix: str) -> Any:
        where = prefix.rstrip(".") or "top level"
        if not isinstance(data, dict):
            raise self.error(where, f"expected a table, got {data!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key in data:
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                fix = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(fields)}"
                raise self.error(f"{prefix}{key}", f"unknown key; {fix}")
        values = {}
        for name, f in fields.items():
            key = f"{prefix}{name}"
            tp = hints[name]
            if name not in data:
                if f.default is dataclasses.MISSING:
                    if dataclasses.is_dataclass(tp):
                        values[name] = self.build(tp, {}, key + ".")  # type: ignore[arg-type]
                        continue
                    raise self.error(key, f"missing required key; {f.metadata['description']}")
                continue
            if dataclasses.is_dataclass(tp):
                values[name] = self.build(tp, data[name], key + ".")  # type: ignore[arg-type]
            else:
                values[name] = self.convert(tp, data[name], key, f.metadata)
        return cls(**values)

    def convert(self, tp: Any, value: Any, key: str, meta: Any) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            (tp,) = [a for a in args if a is not type(None)]
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        want = _type_name(tp)
        bad = self.error(key, f"expected {want}, got {value!r} ({type(value).__name__})")
        if origin is Literal:
            if not isinstance(value, str) or value not in args:
                close = difflib.get_close_matches(str(value), list(args), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                choices = ", ".join(repr(a) for a in args)
                raise self.error(key, f"{value!r} is not one of {choices}{hint}")
            return value
        if origin is tuple:
            if not isinstance(value, list) or len(value) != len(args):
                raise bad
            return tuple(
                self.convert(a, v, f"{key}[{i}]", {})
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        if tp is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
        elif tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            value = float(value)
        elif tp is str:
            if not isinstance(value, str) or not value:
                raise bad if not isinstance(value, str) else self.error(key, "must not be empty")
            return value
        elif tp is Path:
            if not isinstance(value, str) or not value:
                raise bad if not isinstance(value, str) else self.error(key, "must not be empty")
            p = Path(value).expanduser()
            return p if p.is_absolute() else (self.base_dir / p).resolve()
        else:  # pragma: no cover - a field type the loader does not know
            raise TypeError(f"unsupported config type {tp!r} for {key}")
        for check, ok, words in (
            ("ge", lambda v, b: v >= b, ">="),
            ("gt", lambda v, b: v > b, ">"),
            ("le", lambda v, b: v <= b, "<="),
        ):
            if check in meta and not ok(value, meta[check]):
                raise self.error(key, f"{value!r} is out of range: must be {words} {meta[check]}")
        return value


def _cross_check(cfg: Config, ctx: _Ctx, check_files: bool) -> None:
    src, face, sp = cfg.source, cfg.face, cfg.spotter
    scheme, sep, _ = src.uri.partition("://")
    if not sep or scheme not in SOURCE_SCHEMES:
        raise ctx.error(
            "source.uri",
            f"{src.uri!r} has no known scheme; use one of "
            + ", ".join(f"{s}://" for s in SOURCE_SCHEMES),
        )
    if src.reconnect_min_s > src.reconnect_max_s:
        raise ctx.error("source.reconnect_min_s", "must be <= source.reconnect_max_s")
    if sp.threshold_off > sp.threshold_on:
        raise ctx.error("spotter.threshold_off", "must be <= spotter.threshold_on (hysteresis)")
    if sp.min_duration_ms > sp.max_duration_ms:
        raise ctx.error("spotter.min_duration_ms", "must be <= spotter.max_duration_ms")
    if face.detector == "roi" and face.roi is None:
        raise ctx.error("face.roi", "required with detector = 'roi': set roi = [x, y, w, h]")
    if face.roi is not None and (min(face.roi[:2]) < 0 or min(face.roi[2:]) <= 0):
        raise ctx.error("face.roi", f"{list(face.roi)!r} needs x, y >= 0 and w, h > 0")
    if face.detector == "yunet" and face.yunet_model is None:
        raise ctx.error(
            "face.yunet_model", "required with detector = 'yunet': path to the ONNX file"
        )
    host, _, port = cfg.metrics.bind.rpartition(":")
    try:
        if not host or not 0 < int(port) < 65536:
            raise ValueError
        if host not in ("localhost", "*"):
            ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ctx.error(
            "metrics.bind", f"{cfg.metrics.bind!r} is not HOST:PORT, e.g. '127.0.0.1:9108'"
        ) from None
    if not check_files:
        return
    if face.yunet_model is not None and not face.yunet_model.is_file():
        raise ctx.error("face.yunet_model", f"{str(face.yunet_model)!r} does not exist")
    if src.uri.startswith("file://") and not Path(src.uri[7:]).exists():
        raise ctx.error("source.uri", f"{src.uri[7:]!r} does not exist")
    from edge_mer.bundle import Bundle
    from edge_mer.errors import BundleError

    try:
        Bundle.open(cfg.model.bundle, verify_hashes=cfg.model.verify_hashes)
    except BundleError as exc:
        raise ctx.error("model.bundle", str(exc)) from None


# ---------------------------------------------------------------------------- writing


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        return f"[{', '.join(_type_name(a) for a in args)}]"
    if args and type(None) in args:
        return _type_name(next(a for a in args if a is not type(None)))
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path (string)",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        return "unset"
    return json.dumps(str(v), ensure_ascii=False)


def _emit(obj: Any, prefix: str, out: list[str]) -> None:
    nested = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f, value))
            continue
        desc = f.metadata.get("description", "")
        out.append(f"# {desc}")
        out.append(f"# {f.name} = ..." if value is None else f"{f.name} = {_toml_value(value)}")
    if prefix and not nested:
        out.append("")
    for f, value in nested:
        table = f"{prefix}{f.name}"
        if any(
            not dataclasses.is_dataclass(getattr(value, g.name)) for g in dataclasses.fields(value)
        ):
            doc = (type(value).__doc__ or "").split("]: ", 1)[-1]
            out.extend([f"[{table}]", f"# {doc}".rstrip()])
        _emit(value, table + ".", out)


def _leaves(obj: Any, prefix: str) -> typing.Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value
