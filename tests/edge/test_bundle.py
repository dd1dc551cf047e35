"""Damaged manifests: each is one line at load time, exit 2, from `inspect` and `run` alike.

Before the manifest was typed, `inspect` accepted an fps of 1e12, a window of "16" and a
negative state dimension, and `run` then looped inside one frame, raised a ValueError
traceback, or refused a window of 0 with a message about the face stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge_mer.bundle import Bundle, BundleWriter
from edge_mer.cli import app, common
from edge_mer.errors import BundleError
from tests.edge.service.test_config import make_bundle

PREFIX = "edge-mer: error:"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "DEBUG", False)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Set ``a.b[0].c`` in the manifest to ``value``."""

    def damage(m: dict) -> None:
        *parents, last = path.replace("[", ".[").split(".")
        node: Any = m
        for part in parents:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return damage


def _drop(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key)


# (id, damage to the manifest dict, or raw manifest text, words the one line must hold)
DAMAGED: list[tuple[str, Any, list[str]]] = [
    (
        "path-escapes",
        _set("graphs.encoder.path", "../encoder.onnx"),
        ["graphs.encoder.path", "leaves the bundle"],
    ),
    (
        "absolute-path",
        _set("graphs.step.path", "/etc/passwd"),
        ["graphs.step.path", "leaves the bundle"],
    ),
    ("bad-json", "{not json", ["not valid JSON"]),
    ("not-an-object", "[1, 2]", ["not a JSON object"]),
    ("missing-key", _drop("graphs"), ["graphs: missing required key"]),
    ("missing-graph", lambda m: m["graphs"].pop("clip"), ["graphs", "'clip' is not listed"]),
    ("unknown-schema", _set("schema", 2), ["schema", "2 is not the supported schema 1"]),
    ("tampered-graph", "tamper", ["step.onnx", "fails its hash check"]),
    ("fps-1e12", _set("input.fps", 1e12), ["input.fps", "out of range: must be <= 1000"]),
    (
        "fps-nan",
        _set("input.fps", float("nan")),
        ["input.fps", "expected a finite number, got nan"],
    ),
    ("fps-string", _set("input.fps", "50"), ["input.fps", "expected a number, got '50' (str)"]),
    (
        "negative-state-dim",
        _set("state[0].shape[1]", -16),
        ["state[0].shape[1]", "-16 is out of range: must be >= 1"],
    ),
    ("huge-state", _set("state[0].shape", [65536, 65536]), ["state[0].shape", "values per track"]),
    (
        "window-string",
        _set("input.window", "16"),
        ["input.window", "expected an integer, got '16' (str)"],
    ),
    ("window-zero", _set("input.window", 0), ["input.window", "0 is out of range: must be >= 1"]),
    ("window-float", _set("input.window", 6.5), ["input.window", "expected an integer, got 6.5"]),
    ("height-huge", _set("input.height", 100000), ["input.height", "must be <= 4096"]),
    ("channels-2", _set("input.channels", 2), ["input.channels", "2 is not one of 1, 3"]),
    ("labels-empty", _set("labels", []), ["labels", "must not be empty"]),
    ("labels-repeat", _set("labels", ["a", "a"]), ["labels", "repeats a label"]),
    ("sha-not-hex", _set("graphs.clip.sha256", "xyz"), ["graphs.clip.sha256", "not a sha256"]),
    ("state-name-clash", _set("state[0].name", "logits"), ["state[0].name", "cannot name"]),
    ("state-kind", _set("state_kind", "lstm"), ["state_kind", "'lstm' is not one of"]),
    ("cost-negative", _set("cost", {"params": -1}), ["cost.params", "must be >= 0"]),
    ("cost-rows-zero", _set("cost", {"step_rows_per_frame": 0}), ["cost.step_rows_per_frame"]),
    ("spotter-not-a-dict", _set("spotter", [1]), ["spotter", "expected an object, got [1]"]),
    (
        "target-missing-graph",
        _set("targets", {"tensorrt": "encoder_int8"}),
        ["targets.tensorrt", "'encoder_int8'"],
    ),
]


def damaged(root: Path, damage: Any) -> Path:
    bundle = make_bundle(root)
    mpath = bundle / "manifest.json"
    if damage == "tamper":
        (bundle / "step.onnx").write_bytes(b"tampered")
    elif isinstance(damage, str):
        mpath.write_text(damage)
    else:
        manifest = json.loads(mpath.read_text())
        damage(manifest)
        mpath.write_text(json.dumps(manifest))
    return bundle


def one_line(result: Any, words: list[str]) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(PREFIX)]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for w in words:
        assert w in lines[0], f"{w!r} not in: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize(("damage", "words"), [d[1:] for d in DAMAGED], ids=[d[0] for d in DAMAGED])
def test_damaged_manifest_is_one_line_from_open_inspect_and_run(
    tmp_path: Path, damage: Any, words: list[str]
) -> None:
    bundle = damaged(tmp_path / "bundle", damage)
    with pytest.raises(BundleError) as ei:
        Bundle.open(bundle)
    assert "\n" not in str(ei.value)
    line = one_line(CliRunner().invoke(app, ["inspect", str(bundle)]), words)
    assert "manifest.json" in line or "step.onnx" in line
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        app, ["run", "--bundle", str(bundle), "--source", "synthetic://", "--events", str(events)]
    )
    assert "model.bundle" in one_line(result, words)
    assert not events.exists()


def test_newer_writers_keys_are_kept_and_known_ones_still_checked(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    m["from_the_future"] = {"anything": [1, 2]}
    m["input"]["colour_space"] = "bt709"
    m["graphs"]["encoder"]["precision"] = "fp8"
    m["state_kind"] = "window"
    m["cost"] = {"params": 1200, "step_rows_per_frame": 1, "state_bytes_per_track": 64}
    m["spotter"] = {"threshold_on": 0.7, "whatever": True}
    mpath.write_text(json.dumps(m))
    b = Bundle.open(bundle)
    assert b.manifest["from_the_future"] == {"anything": [1, 2]}
    assert b.spec.state_kind == "window" and b.spec.cost.params == 1200
    assert b.spec.spotter == {"threshold_on": 0.7, "whatever": True}
    assert [s.shape for s in b.states] == [(1, 16)]
    result = CliRunner().invoke(app, ["inspect", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "32x32x1 uint8, 50 fps, window 6 frames" in result.stdout
    m.pop("state_kind")
    mpath.write_text(json.dumps(m))
    assert Bundle.open(bundle).spec.state_kind == "recurrent"  # absent means recurrent


def test_the_writer_refuses_what_the_reader_would(tmp_path: Path) -> None:
    good = json.loads((make_bundle(tmp_path / "b") / "manifest.json").read_text())
    good["input"]["window"] = 0
    with BundleWriter(tmp_path / "out") as w, pytest.raises(BundleError, match=r"input\.window"):
        w.commit(good)
    assert not (tmp_path / "out").exists()
