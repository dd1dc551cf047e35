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
