"""A causal temporal convolution network over per-frame features (``cnn_tcn``).

Layer i is a residual causal convolution, kernel k and dilation d_i: ``x + relu(conv(x))``,
left-padded with zeros by ``(k - 1) d_i`` frames in the clip. Streaming, each layer keeps its
last ``(k - 1) d_i`` inputs (a shift buffer; zeros at the start, exactly the clip's padding)
and runs the same ``nn.Conv1d`` on history + the new frame, which gives one output frame.

Receptive field ``R = 1 + (k - 1) sum(d_i)``. When R <= T (the window) the state after any T
steps depends only on those T frames: a ``window`` model, one state row per track.
:func:`dilations_for_window` gives doubling dilations that fill a window.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edge_mer.convert.heads import TemporalHead

__all__ = ["TcnHead", "dilations_for_window", "receptive_field"]


def receptive_field(kernel: int, dilations: list[int]) -> int:
    """Frames the output at t depends on: ``1 + (kernel - 1) * sum(dilations)``."""
    return 1 + (kernel - 1) * sum(dilations)


def dilations_for_window(window: int, kernel: int) -> list[int]:
    """Dilations 1, 2, 4, ... while they fit, then the largest that still fit, so that the
    receptive field is at most ``window`` and within ``kernel - 1`` frames of it."""
    budget = (window - 1) // (kernel - 1)  # sum of dilations allowed
    out: list[int] = []
    d = 1
    while sum(out) + d <= budget:
        out.append(d)
        d *= 2
    while (rest := budget - sum(out)) > 0:
        out.append(1 << (rest.bit_length() - 1))
    return out


class TcnHead(TemporalHead):
    """Input projection, residual causal dilated convolutions, LayerNorm, a classifier on the
    last frame. State: ``hist0, hist1, ...`` ``[N, (k - 1) d_i, hidden]`` (oldest first)."""

    state_kind = "window"

    def __init__(
        self,
        features: int,
        hidden: int,
        kernel: int,
        dilations: list[int],
        n_labels: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(features, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, dilation=d) for d in dilations)
        self.history = [(kernel - 1) * d for d in dilations]
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_labels)
        self.state_names = [f"hist{i}" for i in range(len(dilations))]

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(batch, h, self.hidden) for h in self.history)

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x = self.inp(features)  # [N, hidden]
        nxt: list[torch.Tensor] = []
        for conv, hist in zip(self.convs, state, strict=True):
            full = torch.cat([hist, x.unsqueeze(1)], dim=1)  # [N, (k-1)d + 1, hidden]
            y = conv(full.transpose(1, 2))[:, :, 0]  # exactly one output frame
            nxt.append(full[:, 1:])
            x = x + torch.relu(y)
        return self.head(self.norm(x)), tuple(nxt)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.inp(feats).transpose(1, 2)  # [N, hidden, T]
        for conv, pad in zip(self.convs, self.history, strict=True):
            x = x + self.drop(torch.relu(conv(F.pad(x, (pad, 0)))))
        return self.head(self.norm(x[:, :, -1]))
