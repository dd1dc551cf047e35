"""Checkpoint intake: formats, safety, user factories and the errors users will meet."""

from __future__ import annotations

import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edge_mer.convert.checkpoint import load_model, read_weights, save_checkpoint  # noqa: E402
from edge_mer.convert.models import build  # noqa: E402
from edge_mer.errors import CheckpointError, InputError, ModelProtocolError  # noqa: E402
from tests.conftest import TINY  # noqa: E402


def test_safetensors_carries_config_and_weights(tiny_checkpoint: Path) -> None:
    loaded = load_model(tiny_checkpoint)
    assert loaded.labels == TINY["labels"]
    assert loaded.spec == {"height": 32, "width": 32, "channels": 1, "fps": 50.0, "window": 6}
    assert loaded.state_names == ["h", "c"]
    ref = build(TINY)
    ref.load_state_dict(dict(read_weights(tiny_checkpoint)[0]))
    x = torch.randint(0, 256, (1, 6, 32, 32, 1), dtype=torch.uint8)
    assert torch.equal(loaded.model(x), ref.eval()(x))


def test_state_dict_pt_with_config_beside_it(tmp_path: Path) -> None:
    model = build(TINY)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps(TINY))
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.labels == TINY["labels"]


def test_pt_wrapped_dict_with_config(tmp_path: Path) -> None:
    model = build(TINY)
    torch.save({"state_dict": model.state_dict(), "config": TINY, "epoch": 3}, tmp_path / "m.pth")
    assert load_model(tmp_path / "m.pth").spec["window"] == 6


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/edge-mer-pwned",))


def test_pickle_that_runs_code_is_refused_before_running(tmp_path: Path) -> None:
    marker = Path("/tmp/edge-mer-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": build(TINY).state_dict(), "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"needs full unpickling.*--trust-checkpoint"):
        load_model(path, config_path=_write_cfg(tmp_path))
    assert not marker.exists()


def test_plain_pickle_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.pt"
    with open(path, "wb") as fh:
        pickle.dump(_Evil(), fh)
    with pytest.raises(CheckpointError):
        load_model(path, config_path=_write_cfg(tmp_path))
    assert not Path("/tmp/edge-mer-pwned").exists()


def test_trust_flag_allows_full_pickle_of_a_module(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(build(TINY), path)
    with pytest.raises(CheckpointError, match="needs full unpickling"):
        load_model(path, config_path=_write_cfg(tmp_path))
    loaded = load_model(path, config_path=_write_cfg(tmp_path), trust_checkpoint=True)
    assert loaded.labels == TINY["labels"]


def test_env_override_of_weights_only_refused(tmp_path: Path, monkeypatch) -> None:
    torch.save(build(TINY).state_dict(), tmp_path / "m.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        load_model(tmp_path / "m.pt", config_path=_write_cfg(tmp_path))


def _write_cfg(tmp_path: Path, cfg: dict | None = None) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg or TINY))
    return path


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.safetensors", None, "does not exist"),
        ("random.safetensors", os.urandom(4096), "not a valid safetensors"),
        ("short.safetensors", b"\x01\x02", "truncated"),
        ("random.pt", os.urandom(4096), "not a readable PyTorch checkpoint"),
        ("model.onnx", b"x", "unknown extension"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_truncated_safetensors(tiny_checkpoint: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    tiny_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated|damaged|not a valid"):
        load_model(tiny_checkpoint)


def test_truncated_pt(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(build(TINY).state_dict(), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(path, config_path=_write_cfg(tmp_path))


def test_weights_that_do_not_fit_list_keys_and_shapes(tiny_checkpoint: Path, tmp_path) -> None:
    other = {**TINY, "hidden": 24}
    with pytest.raises(CheckpointError) as info:
        load_model(tiny_checkpoint, config_path=_write_cfg(tmp_path, other))
    assert "shape mismatch" in str(info.value) and "rnn.weight_hh_l0" in str(info.value)
    gru = {**TINY, "rnn": "gru"}
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(tiny_checkpoint, config_path=_write_cfg(tmp_path, gru))
    two = {**TINY, "layers": 2}
    with pytest.raises(CheckpointError, match=r"missing: rnn.bias_hh_l1.*rnn.weight_ih_l1"):
        load_model(tiny_checkpoint, config_path=_write_cfg(tmp_path, two))


def test_no_config_anywhere(tmp_path: Path) -> None:
    torch.save(build(TINY).state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="--model-config"):
        load_model(tmp_path / "m.pt")


def test_bad_config_values(tmp_path: Path) -> None:
    torch.save(build(TINY).state_dict(), tmp_path / "m.pt")
    bad = {**TINY, "rnn": "transformer"}
    with pytest.raises(InputError, match=r"rnn=.transformer."):
        load_model(tmp_path / "m.pt", config_path=_write_cfg(tmp_path, bad))
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(tmp_path / "m.pt", config_path=tmp_path / "broken.json")


FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        labels = ["a", "b"]
        state_names = ["h"]

        def __init__(self, cfg):
            super().__init__()
            self.input_spec = {"height": 24, "width": 20, "channels": 3, "fps": 30, "window": 4}
            self.conv = nn.Conv2d(3, 4, 3, 2)
            self.gru = nn.GRU(4, 5, 2, batch_first=True)
            self.head = nn.Linear(5, 2)

        def encode(self, frames):
            x = frames.permute(0, 3, 1, 2).float() / 255.0
            return self.conv(x).mean((2, 3))

        def init_state(self, n):
            return (torch.zeros(n, 2, 5),)

        def step(self, f, state):
            out, h = self.gru(f.unsqueeze(1), state[0].transpose(0, 1).contiguous())
            return self.head(out[:, 0]), (h.transpose(0, 1),)

        def forward(self, clip):
            n, t = clip.shape[:2]
            f = self.encode(clip.reshape(n * t, *clip.shape[2:])).reshape(n, t, -1)
            out, _ = self.gru(f)
            return self.head(out[:, -1])

    def build(cfg):
        return Tiny(cfg)

    def not_a_model(cfg):
        return nn.Linear(2, 2)

    def broken(cfg):
        raise ValueError("hidden size must be even")
    """
)


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "mymodel.py"
    path.write_text(FACTORY)
    return path


def test_user_factory_file(factory_file: Path, tmp_path: Path) -> None:
    spec = {}
    exec(compile(FACTORY, "f", "exec"), spec)  # build the same architecture for the weights
    torch.save(spec["build"]({}).state_dict(), tmp_path / "w.pt")
    loaded = load_model(
        tmp_path / "w.pt", factory=f"{factory_file}:build", config_path=_write_cfg(tmp_path, {})
    )
    assert loaded.spec["channels"] == 3 and loaded.state_names == ["h"]


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("{f}:not_a_model", r"without \['encode', 'step', 'init_state'\]"),
        ("{f}:missing", "has no callable 'missing'"),
        ("{f}:broken", "failed to build the model: ValueError: hidden size must be even"),
        ("/no/such/file.py:build", "does not exist"),
        ("no_such_package_xyz.models:build", "could not be imported: ModuleNotFoundError"),
        ("justaname", "must be FILE.py:function"),
    ],
)
def test_bad_factories(factory_file: Path, tmp_path: Path, target: str, match: str) -> None:
    torch.save(build(TINY).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelProtocolError, match=match):
        load_model(
            tmp_path / "w.pt",
            factory=target.format(f=factory_file),
            config_path=_write_cfg(tmp_path, {}),
        )


def test_factory_with_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def build(cfg):\n    return (\n")
    torch.save(build(TINY).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelProtocolError, match="could not be imported: SyntaxError"):
        load_model(tmp_path / "w.pt", factory=f"{bad}:build", config_path=_write_cfg(tmp_path))


def test_save_is_atomic_and_roundtrips(tmp_path: Path) -> None:
    model = build(TINY)
    save_checkpoint(model, tmp_path / "a.safetensors", model.config)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
