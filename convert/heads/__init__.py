"""Temporal heads: per-frame features ``[N, T, D]`` -> logits, with an exact streaming form.

Every head is a :class:`TemporalHead`: ``classify(feats)`` over a whole window equals
``init_state`` followed by ``step`` on every frame. ``state_kind`` says what the device must
keep per face track to reproduce the clip over the last T frames:

- ``"recurrent"`` (``rnn``, ``attn_lstm``): the state depends on all history, so the device
  keeps T/stride staggered banks per track, each restarting from zeros;
- ``"window"`` (``transformer``, ``tcn``): the state after any T steps depends only on those
  T frames (a key/value cache, a convolution history), so one state row per track is exact.

Every head names its classifier ``head``: :class:`~edge_mer.convert.registry.MerModel`
registers a head's layers as its own children, so parameter names stay those of the first
release's CNN-LSTM (``cnn.*``, ``rnn.*``, ``head.*``). Why each head is exact:
``docs/architectures.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_mer.manifest import STATE_KINDS

__all__ = ["STATE_KINDS", "TemporalHead"]


class TemporalHead(nn.Module):
    """Base of the reference heads; see the module docstring for the contract.

    Attributes:
        state_kind: ``"recurrent"`` or ``"window"``.
        state_names: names of the tensors in the state tuple (batch-first, float32).
    """

    state_kind = "recurrent"
    state_names: list[str]

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Zero state for ``batch`` rows."""
        raise NotImplementedError

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Features ``[N, D]`` and state -> logits ``[N, K]`` and the next state."""
        raise NotImplementedError

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``[N, T, D]`` -> logits ``[N, K]`` after the last frame."""
        raise NotImplementedError
