"""Two-stage training from clips in memory (the experiment runner's API) and from a folder.

The clips are learnable: a bright patch rises and falls around the apex at a height that
depends on the class, over per-frame noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_mer.convert.registry import build  # noqa: E402
from edge_mer.convert.train import TrainClip, TrainOptions, fit  # noqa: E402
from edge_mer.errors import DataError, InputError  # noqa: E402
from tests.conftest import TINY  # noqa: E402

LABELS = ["negative", "positive", "surprise"]  # no background class, as LOSO on CASME II
CONFIG = {**TINY, "labels": LABELS}
QUICK = {"cnn_epochs": 1, "head_epochs": 3, "batch_size": 32, "threads": 1}


def clips(subjects: list[str], per_class: int = 2, seed: int = 0) -> list[TrainClip]:
    rng = np.random.default_rng(seed)
    out = []
    for s in subjects:
        for li, label in enumerate(LABELS):
            for k in range(per_class):
                t, onset, apex, offset = 14, 4, 8, 11
                frames = rng.normal(100, 6, (t, 32, 32, 1))
                for i in range(onset, offset + 1):
                    frames[i, 3 + 9 * li : 11 + 9 * li, 8:24] += 70 * (1 - abs(i - apex) / 5)
                clip = np.clip(frames, 0, 255).astype(np.uint8)
                out.append(TrainClip(clip, label, s, onset, apex, offset, f"syn/{s}/{label}{k}"))
    return out


@pytest.fixture(scope="module")
def data() -> tuple[list[TrainClip], list[TrainClip]]:
    return clips(["s1", "s2", "s3"]), clips(["s4"], seed=1)


def test_inner_val_keeps_the_best_epoch_and_reports_every_epoch(data) -> None:
    train, val = data
    opts = TrainOptions(**{**QUICK, "head_epochs": 4}, selection="inner-val", patience=2)
    result = fit(train, {**CONFIG, "arch": "cnn_transformer"}, options=opts, validation=val)
    s2 = result.summary["stage2"]
    assert result.summary["background"] is None and result.summary["clips"] == 18
    assert 1 <= len(s2["epochs"]) <= 4
    figures = [e["validation"] for e in s2["epochs"]]
    assert all({"loss", "uf1", "uar", "accuracy"} <= set(f) for f in figures)
    best = max(range(len(figures)), key=lambda i: (figures[i]["uf1"], -figures[i]["loss"]))
    assert s2["best_epoch"] == best + 1
    # The model returned is the kept epoch's: it scores that epoch's validation figures.
    from edge_mer.convert.train_data import eval_window_end, resolve_events

    model = result.model
    assert not model.training and model.arch == "cnn_transformer"
    windows = []
    for c in val:
        end = eval_window_end(len(c.frames), resolve_events(c, LABELS, None), 6)
        windows.append(c.frames[end - 5 : end + 1])
    with torch.no_grad():
        pred = model(torch.from_numpy(np.stack(windows))).argmax(1).numpy()
    truth = [LABELS.index(c.label) for c in val]
    assert np.mean(pred == truth) == pytest.approx(figures[best]["accuracy"])


@pytest.mark.parametrize("arch", ["cnn_lstm", "cnn_attn_lstm", "cnn_tcn"])
def test_every_head_trains_in_two_stages_and_learns(data, arch) -> None:
    train, val = data
    opts = TrainOptions(**{**QUICK, "cnn_epochs": 2, "head_epochs": 6})
    result = fit(train, {**CONFIG, "arch": arch}, options=opts, validation=val)
    last = result.summary["stage2"]["epochs"][-1]
    assert result.summary["selection"] == "fixed" and result.summary["stage2"]["best_epoch"] == 6
    assert last["validation"]["accuracy"] > 0.5  # chance is 1/3


def test_same_seed_same_weights_other_seed_other_weights(data) -> None:
    train, _ = data

    def weights(seed: int) -> dict:
        opts = TrainOptions(**QUICK, seed=seed, finetune_epochs=1)
        return fit(train, CONFIG, options=opts).model.state_dict()

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_features_are_computed_once_not_every_epoch(data) -> None:
    train, val = data
    encoded: list[int] = []
    marks: dict[str, int] = {}

    def counting(cfg: dict):
        model = build(cfg)
        plain = model.encode

        def encode(frames):
            encoded.append(len(frames))
            return plain(frames)

        model.encode = encode
        return model

    def say(msg: str) -> None:
        if msg.startswith("stage 2:"):
            marks["stage2"] = len(encoded)

    for cached in (True, False):
        encoded.clear()
        opts = TrainOptions(**QUICK, cache_features=cached)
        result = fit(train, CONFIG, options=opts, validation=val, factory=counting, say=say)
        after = sum(encoded[marks["stage2"] :])
        if cached:
            assert after == 0  # stage 2 reads the cache: no frame goes through the CNN again
        else:
            windows = result.summary["windows"]
            assert after == 3 * (windows + len(val)) * 6  # every epoch, every window, T frames


USER_HEAD = """
import torch
from torch import nn


class Mine(nn.Module):
    # No classify_features: the trainer unrolls step() over the window.
    def __init__(self, cfg):
        super().__init__()
        self.labels = cfg["labels"]
        self.input_spec = {"height": 32, "width": 32, "channels": 1, "fps": 50, "window": 6}
        self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten())
        self.gru = nn.GRUCell(8, 8)
        self.out = nn.Linear(8, len(self.labels))

    def encode(self, frames):
        return self.cnn(frames.permute(0, 3, 1, 2).float() / 255.0)

    def init_state(self, n):
        return (torch.zeros(n, 8),)

    def step(self, f, state):
        h = self.gru(f, state[0])
        return self.out(h), (h,)

    def forward(self, clip):
        n, t = clip.shape[:2]
        state = self.init_state(n)
        for i in range(t):
            logits, state = self.step(self.encode(clip[:, i]), state)
        return logits


def build(cfg):
    return Mine(cfg)
"""


def test_a_factory_model_trains_and_converts(tmp_path: Path, data) -> None:
    path = tmp_path / "mine.py"
    path.write_text(USER_HEAD)
    cfg = {"labels": LABELS}
    result = fit(data[0], cfg, options=TrainOptions(**QUICK), factory=f"{path}:build")
    model = result.model
    assert result.summary["arch"] == "Mine" and result.config == cfg
    # Stage 1 moved the CNN, stage 2 the GRU cell (found as "not used by encode").
    from edge_mer.convert.checkpoint import _load_factory

    torch.manual_seed(0)  # fit builds the model under the seed, so this is its start
    fresh = _load_factory(f"{path}:build")(cfg)
    assert not torch.equal(fresh.cnn[0].weight, model.cnn[0].weight)
    assert not torch.equal(fresh.gru.weight_ih, model.gru.weight_ih)
    ckpt = tmp_path / "mine.safetensors"
    result.save(ckpt)
    from edge_mer.convert.pipeline import ConvertOptions, convert

    manifest = convert(ckpt, tmp_path / "bundle", ConvertOptions(factory=f"{path}:build"))
    assert manifest["verification"]["fp32"]["max_abs_streaming_vs_clip"] < 1e-4
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["labels"] == LABELS
    assert model.labels == LABELS


def test_bad_training_inputs_are_refused_in_one_line(data) -> None:
    train, _ = data
    with pytest.raises(InputError, match="selection 'inner-val' needs validation clips"):
        fit(train, CONFIG, options=TrainOptions(selection="inner-val"))
    with pytest.raises(InputError, match="selection='best-on-test'"):
        fit(train, CONFIG, options=TrainOptions(selection="best-on-test"))
    wrong = [TrainClip(train[0].frames, "happiness", "s1", sample_id="casme2/s1/EP01")]
    with pytest.raises(DataError, match=r"casme2/s1/EP01: label 'happiness' is not one of"):
        fit(wrong, CONFIG, options=TrainOptions(**QUICK))
    big = [TrainClip(np.zeros((8, 64, 64, 1), np.uint8), "negative", "s1")]
    with pytest.raises(DataError, match=r"do not match the model input \[T, 32, 32, 1\]"):
        fit(big, CONFIG, options=TrainOptions(**QUICK))
    with pytest.raises(InputError, match="background label 'none' is not in labels"):
        fit(train, CONFIG, options=TrainOptions(**QUICK, background="none"))


def test_cli_trains_a_registry_arch_with_inner_val_then_converts(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    from edge_mer.bundle import Bundle
    from edge_mer.calibration.synth_io import synthesize
    from tests.edge.test_cli import assert_bad_input, run

    synthesize(tmp_path / "data", subjects=3, clips_per_emotion=1, fps=50.0, size=(48, 48))
    root = tmp_path / "data" / "casme2"
    subjects = sorted(p.name.removeprefix("sub") for p in root.glob("sub*"))
    cfg = tmp_path / "model.json"
    cfg.write_text(json.dumps({k: v for k, v in TINY.items() if k != "labels"}))
    out = tmp_path / "m.safetensors"
    args = ["train", root, "--out", out, "--model-config", cfg, "--threads", 1]
    quick = ["--cnn-epochs", 1, "--head-epochs", 2]
    res = run(*args, "--arch", "cnn_gpt", *quick)
    assert_bad_input(res, "arch='cnn_gpt'", "cnn_transformer", out=out)
    res = run(*args, "--arch", "cnn_tcn", "--selection", "inner-val", *quick)
    assert_bad_input(res, "--val-subjects", out=out)
    res = run(*args, "--arch", "cnn_tcn", "--selection", "inner-val", "--val-subjects",
              subjects[0], *quick)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "trained cnn_tcn" in res.output and "kept" in res.output
    res = run("convert", out, "--out", tmp_path / "bundle")
    assert res.exit_code == 0, res.output
    assert Bundle.open(tmp_path / "bundle").state_kind == "window"
