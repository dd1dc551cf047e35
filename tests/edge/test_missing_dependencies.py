"""Every command, with an optional module not installed: one line naming the extra, exit 2.

Each scenario runs in a fresh interpreter whose import system cannot find the hidden
top-level modules (``importlib.util.find_spec`` says None, ``import`` raises
ModuleNotFoundError), exactly as where they were never installed; the commands then run
through typer's CliRunner in that interpreter. ``scripts/installed-smoke.sh`` does the same
in a real venv with the wheel and no extras.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.edge.service.test_config import make_bundle

OPTIONAL = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "safetensors",
    "openpyxl",
    "cv2",
    "paho",
    "matplotlib",
    "tensorrt",
    "pycuda",
    "cuda",
    "picamera2",
)

SCRIPT = """
import importlib.machinery, json, sys

hidden = set(sys.argv[1].split(","))


class NotInstalled(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [
    NotInstalled if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
from typer.testing import CliRunner

from edge_mer.cli import app

results = []
for args in json.loads(sys.argv[2]):
    r = CliRunner().invoke(app, args)
    results.append(
        {
            "args": args,
            "code": r.exit_code,
            "stdout": r.stdout,
            "stderr": r.stderr,
            "exception": repr(r.exception),
        }
    )
print(json.dumps(results))
"""


def run_without(hidden: tuple[str, ...] | str, commands: list[list[str]], cwd: Path) -> list:
    hidden = (hidden,) if isinstance(hidden, str) else hidden
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(hidden), json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd)},
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def one_line(result: dict, *words: str) -> str:
    """Exit 2, stderr is exactly one error line holding ``words``."""
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    assert result["code"] == 2, result
    assert len(lines) == 1 and lines[0].startswith("edge-mer: error: "), result
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bundle (placeholder graphs: every command must stop before it would read them), a
    checkpoint file, a clips folder, and configs."""
    root = tmp_path_factory.mktemp("deps")
    bundle = make_bundle(root / "bundle")
    (root / "m.safetensors").write_bytes(b"not read")
    (root / "clips").mkdir()
    plain = f'[model]\nbundle = "{bundle}"\n[source]\nuri = "synthetic://?seconds=1"\n'
    (root / "plain.toml").write_text(plain)
    (root / "mqtt.toml").write_text(plain + '[sinks.mqtt]\nhost = "127.0.0.1"\n')
    return {"root": root, "bundle": bundle}


def test_base_install_every_command(files: dict[str, Path]) -> None:
    """No extra at all: what needs one names it; what does not, works."""
    b, root = str(files["bundle"]), files["root"]
    commands = {
        "demo": (["demo", "--out", "d"], "edge-mer[convert]"),
        "synth": (["synth", "--out", "s"], "edge-mer[convert]"),
        "train": (["train", "clips", "--out", "t.safetensors"], "edge-mer[convert]"),
        "convert": (["convert", "m.safetensors", "--out", "c"], "edge-mer[convert]"),
        "build-engine": (["build-engine", b], "JetPack"),
        "run": (["run", "--bundle", b, "--source", "synthetic://"], "edge-mer[cpu]"),
        "run --config": (["run", "--config", "plain.toml"], "edge-mer[cpu]"),
        "bench": (["bench", b, "--frames", "10"], "edge-mer[cpu]"),
        "validate-config": (["validate-config", "plain.toml"], "edge-mer[cpu]"),
        "install-service": (
            ["install-service", "--dry-run", "--config", "plain.toml", "--prefix", "etc"],
            "edge-mer[cpu]",
        ),
    }
    fine = {
        "inspect": ["inspect", b],
        "validate-config --no-files": ["validate-config", "--no-files", "mqtt.toml"],
        "doctor": ["doctor"],
    }
    results = run_without(OPTIONAL, [a for a, _ in commands.values()] + list(fine.values()), root)
    for (name, (_, extra)), result in zip(commands.items(), results[: len(commands)], strict=True):
        line = one_line(result, extra)
        assert name.split()[0] in line or "needs" in line, line
    for name, result in zip(fine, results[len(commands) :], strict=True):
        assert result["code"] == 0, (name, result)
    assert not any((root / d).exists() for d in ("d", "s", "c", "t.safetensors", "etc"))


@pytest.mark.parametrize(
    ("hidden", "commands", "words"),
    [
        (
            "onnxruntime",
            [["run", "--bundle", "{b}", "--source", "synthetic://"], ["bench", "{b}"]],
            ["'onnxruntime'", "edge-mer[cpu]"],
        ),
        (
            "onnxruntime",
            [["convert", "m.safetensors", "--out", "c"], ["demo", "--out", "d"]],
            ["'onnxruntime'", "edge-mer[convert]"],
        ),
        (
            "cv2",
            [["run", "--config", "plain.toml"], ["bench", "{b}"]],
            ["'opencv-python-headless'", "edge-mer[cpu]"],
        ),
        (
            "cv2",
            [
                ["synth", "--out", "s"],
                ["train", "clips", "--out", "t.safetensors"],
                ["convert", "m.safetensors", "--out", "c", "--int8", "--calib", "clips"],
            ],
            ["'opencv-python-headless'", "edge-mer[convert]"],
        ),
        (
            "paho",
            [
                ["run", "--config", "mqtt.toml"],
                ["validate-config", "mqtt.toml"],
                ["install-service", "--dry-run", "--config", "mqtt.toml", "--prefix", "etc"],
            ],
            ["sinks.mqtt.host", "'paho-mqtt'", "edge-mer[mqtt]"],
        ),
        ("matplotlib", [["bench", "{b}", "--plot", "p.png"]], ["'matplotlib'", "edge-mer[plots]"]),
        (
            "tensorrt",
            [
                ["build-engine", "{b}"],
                ["run", "--bundle", "{b}", "--source", "synthetic://", "--runner", "tensorrt"],
                ["bench", "{b}", "--runners", "tensorrt"],
            ],
            ["TensorRT", "JetPack"],
        ),
        ("torch", [["train", "clips", "--out", "t.safetensors"]], ["'torch'", "[convert]"]),
        ("onnx", [["convert", "m.safetensors", "--out", "c"]], ["'onnx'", "[convert]"]),
        ("safetensors", [["demo", "--out", "d"]], ["'safetensors'", "[convert]"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_one_module_missing(
    files: dict[str, Path], hidden: str, commands: list[list[str]], words: list[str]
) -> None:
    # What the commands check before the hidden module must be there (the dev install).
    for other in {"torch", "onnx", "onnxruntime", "safetensors", "cv2"} - {hidden}:
        if importlib.util.find_spec(other) is None:
            pytest.skip(f"{other} is not installed: {hidden!r} alone cannot be the one missing")
    b = str(files["bundle"])
    commands = [[a.replace("{b}", b) for a in args] for args in commands]
    for result in run_without(hidden, commands, files["root"]):
        one_line(result, *words)
    assert not any((files["root"] / d).exists() for d in ("d", "s", "c", "t.safetensors", "etc"))


def test_doctor_reports_what_is_missing_and_still_succeeds(files: dict[str, Path]) -> None:
    (result,) = run_without(OPTIONAL, [["doctor", "--json"]], files["root"])
    assert result["code"] == 0, result
    findings = {f["name"]: f for f in json.loads(result["stdout"])}
    missing = [f for f in findings.values() if f["ok"] is False]
    assert any("onnxruntime" in f["name"].lower() for f in missing), findings
    assert any("opencv" in (f["name"] + f["fix"]).lower() for f in missing), findings
