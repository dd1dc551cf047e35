"""Shared fixtures: tiny real models and checkpoints built in-test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None

TINY = {
    "labels": ["none", "positive", "negative", "surprise"],
    "input": {"height": 32, "width": 32, "channels": 1, "fps": 50.0, "window": 6},
    "cnn": "small",
    "width_mult": 0.5,
    "feature_dim": 16,
    "hidden": 16,
}


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A safetensors checkpoint of a tiny reference CNN-LSTM (random weights)."""
    if not HAS_TORCH:
        pytest.skip("torch is not installed")
    import torch

    from edge_mer.convert.checkpoint import save_checkpoint
    from edge_mer.convert.models import build

    torch.manual_seed(0)
    model = build(TINY)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path, model.config)
    return path


@pytest.fixture(scope="session")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of CASME II (.xlsx), SAMM (.xlsx, preamble), SMIC-HS (folders) and CAS(ME)^3
    (.xlsx) laid out as distributed, with the documented counts (tests/calibration/datasets/
    copies.py); empty frame files. Written once per session."""
    pytest.importorskip("openpyxl")
    from tests.calibration.datasets import copies

    base = tmp_path_factory.mktemp("copies")
    return {
        "casme2": copies.write_casme2(base / "CASME2"),
        "samm": copies.write_samm(base / "SAMM-copy"),
        "smic-hs": copies.write_smic(base / "SMIC"),
        "casme3": copies.write_casme3(base / "CASME3"),
    }
