"""Bundle accuracy on coded clips, streamed through the bundle's graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from edge_mer.bundle import Bundle
from edge_mer.calibration.evaluate import clip_windows, evaluate
from edge_mer.calibration.synth_io import write_casme2
from edge_mer.convert.pipeline import ConvertOptions, convert
from edge_mer.errors import DataError
from edge_mer.streaming import ort_session


@pytest.fixture(scope="module")
def bundle_and_clips(tmp_path_factory) -> tuple[Bundle, Path]:
    import torch

    from edge_mer.convert.checkpoint import save_checkpoint
    from edge_mer.convert.models import build
    from tests.conftest import TINY

    tmp = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    model = build(TINY)
    save_checkpoint(model, tmp / "m.safetensors", model.config)
    convert(tmp / "m.safetensors", tmp / "b", ConvertOptions())
    root = write_casme2(
        tmp / "clips", subjects=2, clips_per_emotion=1, fps=100.0, size=(48, 48), seed=1
    )
    return Bundle.open(tmp / "b"), root


def test_windows_and_labels(bundle_and_clips) -> None:
    bundle, root = bundle_and_clips
    windows, truth = clip_windows(bundle, root)
    assert windows.shape == (8, 6, 32, 32, 1) and windows.dtype == np.uint8
    # happiness->positive, disgust->negative, surprise->surprise, others->none; 2 subjects each
    assert sorted(truth.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_scores_match_the_clip_graph(bundle_and_clips) -> None:
    bundle, root = bundle_and_clips
    windows, truth = clip_windows(bundle, root)
    result = evaluate(bundle, windows, truth)
    assert "encoder_int8" not in result  # FP32-only bundle
    clip = ort_session(bundle.graph_path("clip"))
    pred = clip.run(["logits"], {"clip": windows})[0].argmax(1)
    expected = float(np.mean(pred == truth))
    assert result["encoder"]["accuracy"] == pytest.approx(expected)
    assert np.asarray(result["encoder"]["confusion"]).sum() == len(truth)


def test_no_matching_clips(bundle_and_clips, tmp_path: Path) -> None:
    bundle, _ = bundle_and_clips
    root = write_casme2(
        tmp_path / "c",
        subjects=1,
        clips_per_emotion=1,
        fps=100.0,
        size=(48, 48),
        emotions=("others",),
    )
    with pytest.raises(DataError, match="no coded clips"):
        clip_windows(bundle, root, label_map={"others": "not-a-label"})
