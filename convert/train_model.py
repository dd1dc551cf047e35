"""The model side of training: build a registry or factory model, tell the CNN's
parameters from the head's, classify feature windows, encode frames in chunks.

Any protocol model trains (DESIGN §2): the CNN's parameters are those ``encode`` uses (found
by one backward pass through ``encode``), the head's are all the others; a model without
``classify_features`` has its head trained through ``step`` unrolled over the window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["build_model", "classifier", "encode_all", "split_parameters"]


def build_model(config: dict[str, Any], factory: str | Callable | None) -> nn.Module:
    """The registry's model for ``config`` or ``factory(config)``, protocol-checked."""
    from edge_mer.convert.protocol import model_spec

    if factory is None:
        from edge_mer.convert.registry import build as build_fn
    elif isinstance(factory, str):
        from edge_mer.convert.checkpoint import _load_factory

        build_fn = _load_factory(factory)
    else:
        build_fn = factory
    model = build_fn(dict(config))
    model_spec(model, "the model to train")
    return model


def split_parameters(model: nn.Module, spec: dict) -> tuple[list, list]:
    """(CNN parameters: those ``encode`` uses, head parameters: all the others)."""
    frames = torch.zeros((2, spec["height"], spec["width"], spec["channels"]), dtype=torch.uint8)
    was = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model.encode(frames).sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    cnn = [p for p in trainable if p.grad is not None]
    head = [p for p in trainable if p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was)
    return cnn, head


def classifier(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Features ``[N, T, D]`` -> logits: ``classify_features``, else ``step`` unrolled."""
    fn = getattr(model, "classify_features", None)
    if callable(fn):
        return fn

    def by_steps(feats: torch.Tensor) -> torch.Tensor:
        state = model.init_state(feats.shape[0])
        state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
        for t in range(feats.shape[1]):
            logits, state = model.step(feats[:, t], state)
            state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
        return logits

    return by_steps


def encode_all(model: nn.Module, frames: np.ndarray, chunk: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                model.encode(torch.from_numpy(frames[s : s + chunk]))
                for s in range(0, len(frames), chunk)
            ]
        )
