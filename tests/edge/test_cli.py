"""The CLI as a new user meets it: every bad input is one clear line and exit code 2.

Each bad input must give exit code 2, exactly one ``edge-mer: error:`` line on stderr that
names the file, key or value, no traceback, and nothing half-written (no ``--out`` folder,
no hidden staging folder beside it). ``--debug`` is the one way to see a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from edge_mer.cli import app, common  # noqa: E402
from edge_mer.convert.checkpoint import save_checkpoint  # noqa: E402
from edge_mer.convert.models import build  # noqa: E402
from edge_mer.errors import CheckpointError  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.convert.test_pipeline import write_videos  # noqa: E402

PREFIX = "edge-mer: error:"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``--debug`` sets a module global; no test may leak it into the next one.
    monkeypatch.setattr(common, "DEBUG", False)


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_bad_input(result, *names: str, out: Path | None = None) -> str:
    """Exit 2, one error line naming ``names``, no traceback, nothing left at ``out``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(PREFIX)]
    assert len(lines) == 1, result.stderr
    assert PREFIX not in result.stdout
    line = lines[0]
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    if out is not None:
        assert not out.exists(), f"{out} was left behind"
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return line


def _ckpt(folder: Path, name: str = "tiny.safetensors", config: dict | None = None) -> Path:
    torch.manual_seed(0)
    model = build(config or TINY)
    path = folder / name
    save_checkpoint(model, path, model.config)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_videos(tmp_path_factory.mktemp("calib") / "vids", 8, frames=20)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, videos: Path):
    """One successful ``convert --int8`` through the CLI: (result, bundle path)."""
    root = tmp_path_factory.mktemp("ok")
    ckpt = _ckpt(root)
    out = root / "bundle"
    result = run("convert", ckpt, "--out", out, "--int8", "--calib", videos)
    return result, out


# --- convert: the success path ------------------------------------------------------------


def test_convert_int8_prints_verification_and_exits_0(converted) -> None:
    result, out = converted
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and PREFIX not in result.output
    text = result.stdout
    assert "max |PyTorch - ONNX|" in text and "max |streaming - clip|" in text
    assert "FP32" in text
    assert "INT8" in text and "top-1 agreement" in text and "held-out windows" in text
    assert "ms" in text and "median" in text  # encoder latency line
    assert "32x32x1 uint8" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["int8"]["top1_agreement"] >= 0.98
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_inspect_lists_every_file_ok(converted) -> None:
    _, out = converted
    result = run("inspect", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    lines = result.stdout.splitlines()
    assert {"encoder", "step", "clip", "encoder_int8"} <= set(manifest["graphs"])
    for name, entry in manifest["graphs"].items():
        hits = [ln for ln in lines if entry["path"] in ln and ln.rstrip().endswith("ok")]
        assert hits, f"{name} ({entry['path']}) not listed with ok:\n{result.stdout}"
    assert "top-1 agreement" in result.stdout


def test_inspect_json_is_the_manifest(converted) -> None:
    _, out = converted
    result = run("inspect", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((out / "manifest.json").read_text())


def test_inspect_tampered_bundle(converted, tmp_path: Path) -> None:
    _, out = converted
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    with open(copy / "step.onnx", "ab") as fh:
        fh.write(b"\0")
    assert_bad_input(run("inspect", copy), "step.onnx", "hash check")


@pytest.mark.parametrize("kind", ["missing", "empty", "junk"])
def test_inspect_not_a_bundle(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "notabundle"
    if kind != "missing":
        folder.mkdir()
    if kind == "junk":
        (folder / "manifest.json").write_text("{not json")
    assert_bad_input(run("inspect", folder), "notabundle")


# --- convert: bad checkpoints ---------------------------------------------------------------


def test_missing_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "b"
    line = assert_bad_input(run("convert", tmp_path / "nope.pt", "--out", out), "nope.pt", out=out)
    assert "does not exist" in line


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read a chmod 000 file"
)
def test_unreadable_checkpoint(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    ckpt.chmod(0)
    try:
        out = tmp_path / "b"
        assert_bad_input(run("convert", ckpt, "--out", out), ckpt.name, "readable", out=out)
    finally:
        ckpt.chmod(0o644)


def test_checkpoint_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").mkdir()
    out = tmp_path / "b"
    assert_bad_input(
        run("convert", tmp_path / "weights.pt", "--out", out), "weights.pt", "readable", out=out
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_random_bytes_checkpoint(tmp_path: Path, suffix: str) -> None:
    ckpt = tmp_path / f"noise{suffix}"
    ckpt.write_bytes(os.urandom(4096))
    out = tmp_path / "b"
    line = assert_bad_input(run("convert", ckpt, "--out", out), ckpt.name, out=out)
    assert "weights_only" not in line and "Re-running" not in line


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_checkpoint(tmp_path: Path, suffix: str) -> None:
    full = _ckpt(tmp_path)
    ckpt = tmp_path / f"cut{suffix}"
    if suffix == ".pt":
        torch.save(build(TINY).state_dict(), ckpt)
        (tmp_path / "cut.json").write_text(json.dumps(TINY))
    else:
        shutil.copy(full, ckpt)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    out = tmp_path / "b"
    assert_bad_input(run("convert", ckpt, "--out", out), ckpt.name, out=out)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["state-dict-with-passenger", "pickle-p2", "pickle-p4"])
def test_pickle_that_would_run_code(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    if kind == "state-dict-with-passenger":
        torch.save({"state_dict": build(TINY).state_dict(), "x": _RunsCode(marker)}, ckpt)
    else:
        with open(ckpt, "wb") as fh:
            pickle.dump(_RunsCode(marker), fh, protocol=int(kind[-1]))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "b"
    line = assert_bad_input(
        run("convert", ckpt, "--out", out, "--model-config", cfg), "evil.pt", out=out
    )
    assert not marker.exists(), "the pickle ran code"
    # Never torch's own advice to retry with weights_only=False.
    assert "weights_only" not in line and "Re-running" not in line
    if kind != "pickle-p4":  # protocol 4 framing is refused before the global is seen
        assert "--trust-checkpoint" in line and "system" in line


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    cfg = tmp_path / "bigger.json"
    cfg.write_text(json.dumps({**TINY, "hidden": 24}))
    out = tmp_path / "b"
    line = assert_bad_input(
        run("convert", ckpt, "--out", out, "--model-config", cfg), ckpt.name, out=out
    )
    assert "does not fit" in line and "rnn.weight_hh_l0" in line


def test_nan_weights(tmp_path: Path) -> None:
    model = build(TINY)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    ckpt = tmp_path / "nan.safetensors"
    save_checkpoint(model, ckpt, model.config)
    out = tmp_path / "b"
    line = assert_bad_input(run("convert", ckpt, "--out", out), out=out)
    assert "NaN" in line and "logits" in line


# --- convert: user model factories ------------------------------------------------------------

_NO_PROTOCOL = """
from torch import nn

def build(config):
    return nn.Linear(4, 2)
"""

# input_spec promises gray frames, the first conv wants RGB: frames of the wrong channel count.
_WRONG_CHANNELS = """
import torch
from torch import nn


class Net(nn.Module):
    labels = ["a", "b"]
    input_spec = {"height": 32, "width": 32, "channels": 1, "fps": 50, "window": 4}
    state_names = ["h"]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.rnn = nn.GRU(4, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def encode(self, frames):
        return self.conv(frames.permute(0, 3, 1, 2).float() / 255).mean((2, 3))

    def init_state(self, batch):
        return (torch.zeros(batch, 1, 8),)

    def step(self, features, state):
        out, h = self.rnn(features.unsqueeze(1), state[0].transpose(0, 1).contiguous())
        return self.head(out[:, 0]), (h.transpose(0, 1),)

    def forward(self, clip):
        n, t = clip.shape[:2]
        feats = self.encode(clip.reshape(n * t, *clip.shape[2:])).reshape(n, t, -1)
        return self.head(self.rnn(feats)[0][:, -1])


def build(config):
    return Net()
"""


@pytest.mark.parametrize(
    ("kind", "source", "expect"),
    [
        ("missing-file", None, "does not exist"),
        ("syntax", "def build(config):\n    return (\n", "SyntaxError"),
        ("missing-import", "import no_such_module_for_edge_mer\n", "no_such_module_for_edge_mer"),
        ("missing-module", None, "no_such_package_for_edge_mer"),
        ("no-function", "x = 1\n", "no callable 'build'"),
        ("no-protocol", _NO_PROTOCOL, "encode"),
        ("wrong-channels", _WRONG_CHANNELS, "channels 1"),
    ],
)
def test_bad_model_factory(tmp_path: Path, kind: str, source: str | None, expect: str) -> None:
    factory_file = tmp_path / "my_model.py"
    if source is not None:
        factory_file.write_text(textwrap.dedent(source))
    if kind == "missing-module":
        factory = "no_such_package_for_edge_mer.models:build"
    else:
        factory = f"{factory_file}:build"
    if kind == "wrong-channels":
        ckpt = tmp_path / "w.pt"
        spec = importlib.util.spec_from_file_location("_wrong_channels_net", factory_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.save(module.build({}).state_dict(), ckpt)
    else:
        ckpt = _ckpt(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    out = tmp_path / "b"
    result = run("convert", ckpt, "--out", out, "--model-factory", factory, "--model-config", cfg)
    line = assert_bad_input(result, "--model-factory", factory.split(":")[0], out=out)
    assert expect in line


def test_model_config_with_impossible_channel_count(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"input": {"channels": 2}}))
    out = tmp_path / "b"
    assert_bad_input(
        run("convert", ckpt, "--out", out, "--model-config", cfg), "channels=2", out=out
    )


def test_model_config_not_json(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{hidden: 3")
    out = tmp_path / "b"
    assert_bad_input(run("convert", ckpt, "--out", out, "--model-config", cfg), "cfg.json", out=out)


# --- convert: calibration clips and options ---------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "extra", "expect"),
    [
        ("empty", [], "no clips"),
        ("garbage", [], "not a video"),
        ("two", [], "need at least 4"),
        ("four", ["--holdout", "0.75"], "--holdout"),
        ("missing", [], "does not exist"),
    ],
)
def test_bad_calibration(tmp_path: Path, setup: str, extra: list[str], expect: str) -> None:
    calib = tmp_path / "clips"
    if setup == "empty":
        calib.mkdir()
    elif setup == "garbage":
        calib.mkdir()
        for i in range(5):
            (calib / f"clip{i}.mp4").write_bytes(os.urandom(2048))
    elif setup == "two":
        write_videos(calib, 2, frames=12)
    elif setup == "four":
        write_videos(calib, 4, frames=12)
    out = tmp_path / "b"
    result = run("convert", _ckpt(tmp_path), "--out", out, "--int8", "--calib", calib, *extra)
    line = assert_bad_input(result, "clips", out=out)
    assert expect in line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--int8"], ["--int8", "--calib"]),
        (["--calib-method", "magic"], ["--calib-method", "'magic'", "entropy"]),
        (["--holdout", "1.5"], ["--holdout", "1.5"]),
        (["--min-agreement", "0"], ["--min-agreement"]),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], names: list[str]) -> None:
    calib = tmp_path / "clips"
    calib.mkdir()
    if args[0] != "--int8":
        args = ["--int8", "--calib", str(calib), *args]
    out = tmp_path / "b"
    assert_bad_input(run("convert", _ckpt(tmp_path), "--out", out, *args), *names, out=out)


def test_output_not_empty_then_force(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = assert_bad_input(run("convert", ckpt, "--out", out))
    assert "'" + str(out) + "'" in line and "--force" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]

    result = run("convert", ckpt, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists()
    assert (out / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]


def test_output_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.write_text("x")
    assert_bad_input(run("convert", _ckpt(tmp_path), "--out", out), str(out))
    assert out.read_text() == "x"


# --- --debug ------------------------------------------------------------------------------------


def test_debug_raises_the_error_instead_of_one_line(tmp_path: Path) -> None:
    result = run("--debug", "convert", tmp_path / "missing.pt", "--out", tmp_path / "x")
    assert isinstance(result.exception, CheckpointError)
    assert "missing.pt" in str(result.exception)
    assert result.exit_code == 1
    assert PREFIX not in result.output
    assert not (tmp_path / "x").exists()


def test_debug_shows_a_traceback_in_a_real_process(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "from edge_mer.cli import main; main()"]
    env = {**os.environ, "COLUMNS": "200"}
    plain = subprocess.run(
        [*cmd, "convert", "missing.pt", "--out", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr + plain.stdout
    assert plain.stderr.count(PREFIX) == 1
    debug = subprocess.run(
        [*cmd, "--debug", "convert", "missing.pt", "--out", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
    assert "CheckpointError" in debug.stderr and "missing.pt" in debug.stderr
    assert not (tmp_path / "x").exists()


# --- synth and train ----------------------------------------------------------------------------


def test_synth_refuses_non_empty_out(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    line = assert_bad_input(run("synth", "--out", out))
    assert str(out) in line and "--force" in line
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--subjects", "0"], ["--subjects", "0"]),
        (["--clips-per-emotion", "100"], ["--clips-per-emotion", "100"]),
        (["--fps", "5"], ["--fps", "5"]),
        (["--fps", "nan"], ["--fps", "nan"]),
        (["--fps", "-200"], ["--fps", "-200"]),
        (["--size", "8"], ["--size", "8"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--stream-seconds", "-3"], ["--stream-seconds", "-3"]),
    ],
)
def test_synth_bad_numbers(tmp_path: Path, args: list[str], names: list[str]) -> None:
    out = tmp_path / "data"
    assert_bad_input(run("synth", "--out", out, *args), *names, out=out)


def test_train_missing_clips(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    assert_bad_input(
        run("train", tmp_path / "no_clips_here", "--out", out), "no_clips_here", out=out
    )


def test_train_out_must_be_safetensors(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    out = tmp_path / "m.pt"
    line = assert_bad_input(run("train", clips, "--out", out), "m.pt", out=out)
    assert ".safetensors" in line
