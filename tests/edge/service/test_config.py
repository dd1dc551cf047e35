"""The strict TOML config loader: key paths, suggestions, types, ranges, bundle, round trip."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_mer.config import (
    Config,
    ConfigError,
    config_from_args,
    describe_fields,
    load_config,
)
from edge_mer.errors import InputError


def make_bundle(root: Path) -> Path:
    """A minimal valid bundle (placeholder graph bytes; only the manifest and hashes matter)."""
    root.mkdir(parents=True)
    graphs = {}
    for name in ("encoder", "step", "clip"):
        data = f"not really onnx: {name}".encode()
        (root / f"{name}.onnx").write_bytes(data)
        graphs[name] = {"path": f"{name}.onnx", "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "schema": 1,
        "name": "tiny",
        "labels": ["none", "surprise"],
        "input": {"height": 32, "width": 32, "channels": 1, "fps": 50.0, "window": 6},
        "state": [{"name": "h", "shape": [1, 16], "dtype": "float32"}],
        "graphs": graphs,
        "verification": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge-mer.toml"
    p.write_text(text)
    return p


MINIMAL = '[model]\nbundle = "bundle"\n\n[source]\nuri = "synthetic://"\n'


def test_minimal_file_gets_defaults_and_relative_paths_resolve(
    tmp_path: Path, bundle: Path
) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.model.bundle == bundle.resolve()
    assert cfg.model.runner == "auto" and cfg.face.detector == "haar"
    assert cfg.metrics.bind == "127.0.0.1:9108" and cfg.metrics.enabled
    assert cfg.sinks.mqtt.host is None and cfg.sinks.jsonl.path is None
    assert cfg.spotter.threshold_off <= cfg.spotter.threshold_on
    assert "synthetic://" in "\n".join(cfg.summary())


def test_unknown_key_names_the_path_and_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + '\n[sinks.mqtt]\nhots = "broker.lan"\n')
    with pytest.raises(ConfigError) as ei:
        load_config(p, check_files=False)
    msg = str(ei.value)
    assert msg == f"{p}:8: sinks.mqtt.hots: unknown key; did you mean 'host'?"
    assert isinstance(ei.value, InputError) and ei.value.exit_code == 2


def test_unknown_section_lists_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"camera: unknown key; valid keys: model, source"):
        load_config(write(tmp_path, MINIMAL + "[camera]\nx = 1\n"), check_files=False)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[face]\ndetect_every = "5"', r"face.detect_every: expected an integer, got '5' \(str\)"),
        ("[face]\ndetect_every = true", r"face.detect_every: expected an integer, got True"),
        ("[face]\ndetect_every = 0", r"face.detect_every: 0 is out of range: must be >= 1"),
        ('[model]\nrunner = "tensorrtt"', r"did you mean 'tensorrt'\?"),
        ("[spotter]\nthreshold_on = 1.5", r"spotter.threshold_on: 1.5 is out of range"),
        (
            "[spotter]\nthreshold_on = 0.3",
            r"spotter.threshold_off: must be <= spotter.threshold_on",
        ),
        ('[face]\ndetector = "roi"', r"face.roi: required with detector = 'roi'"),
        ("[face]\nroi = [1, 2, 3]", r"face.roi: expected \[an integer, an integer"),
        ('[metrics]\nbind = "localhost"', r"metrics.bind: 'localhost' is not HOST:PORT"),
        ("[sinks.mqtt]\nport = 70000", r"sinks.mqtt.port: 70000 is out of range: must be <= 65535"),
    ],
)
def test_wrong_values_are_one_clear_line(tmp_path: Path, extra: str, expected: str) -> None:
    # Merge the extra table into MINIMAL's text so [model] is not declared twice.
    text = MINIMAL
    if extra.startswith("[model]"):
        text = text.replace('[model]\nbundle = "bundle"', extra + '\nbundle = "bundle"')
    else:
        text += "\n" + extra + "\n"
    with pytest.raises(ConfigError, match=expected) as ei:
        load_config(write(tmp_path, text), check_files=False)
    assert "\n" not in str(ei.value)


def test_wrong_type_points_at_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "\n[source]\n".replace("[source]", "[state]") + "ttl_s = 'x'\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, check_files=False)
    assert ei.value.key == "state.ttl_s" and ei.value.line == 8


def test_missing_required_and_bad_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.bundle: missing required key"):
        load_config(write(tmp_path, '[source]\nuri = "synthetic://"\n'), check_files=False)
    with pytest.raises(ConfigError, match=r"source.uri: 'rtsp://cam' has no known scheme"):
        config_from_args("b", "rtsp://cam", check_files=False)


def test_missing_bundle_names_key_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, MINIMAL))
    msg = str(ei.value)
    assert "model.bundle" in msg and "is not a directory" in msg and "edge-mer convert" in msg


def test_broken_bundle_hash_is_caught_unless_skipped(tmp_path: Path, bundle: Path) -> None:
    (bundle / "step.onnx").write_bytes(b"tampered")
    with pytest.raises(ConfigError, match=r"model.bundle: .*fails its hash check"):
        load_config(write(tmp_path, MINIMAL))
    text = MINIMAL.replace('bundle = "bundle"', 'bundle = "bundle"\nverify_hashes = false')
    assert not load_config(write(tmp_path, text)).model.verify_hashes


def test_toml_syntax_error_reports_line(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "\n[face]\ndetect_every = = 3\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.line == 8
    assert str(ei.value).startswith(f"{p}:8: TOML syntax error")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: no such file"):
        load_config(tmp_path / "nope.toml")


def test_round_trip_to_toml(tmp_path: Path, bundle: Path) -> None:
    cfg = config_from_args(
        bundle,
        "v4l2:///dev/video0",
        events=tmp_path / "ev.jsonl",
        tables={
            "face": {"detector": "roi", "roi": [10, 20, 64, 64]},
            "sinks": {"mqtt": {"host": "broker.lan", "qos": 2}},
            "source": {"fps": 30, "width": 640},
        },
    )
    text = cfg.to_toml()
    assert "# Broker host name or address" in text  # descriptions ride along
    again = load_config(write(tmp_path, text))
    assert again == cfg
    assert again.face.roi == (10, 20, 64, 64) and again.source.fps == 30.0
    assert not cfg.sinks.stdout.enabled and again.sinks.mqtt.qos == 2


def test_args_config_defaults_to_stdout_and_diff(bundle: Path) -> None:
    a = config_from_args(bundle, "synthetic://")
    assert a.sinks.stdout.enabled
    b = config_from_args(bundle, "synthetic://", tables={"spotter": {"threshold_on": 0.7}})
    assert a.changed_keys(b) == ["spotter.threshold_on"]


def test_every_field_is_described() -> None:
    rows = describe_fields(Config)
    assert len(rows) > 40
    assert all(desc for _, _, _, desc in rows)
    assert rows[0][:3] == ("model.bundle", "a path (string)", "required")
