"""A causal temporal Transformer over per-frame features (``cnn_transformer``), streamed with a
rolling key/value cache that reproduces the clip exactly.

Design (what makes the cache exact):
- pre-norm blocks, LayerNorm per frame (never BatchNorm over time);
- every layer's attention is causal and limited to the last ``span`` (w) frames;
- positions are relative only (ALiBi: a per-head bias ``-slope_h * distance``), so a key's
  contribution depends on how far back it is, never on where the window started;
- the state is, per layer, the keys and values of the previous w - 1 frames (shift
  buffers: drop the oldest, append the newest), plus one ``valid`` row ``[N, w - 1]`` that
  masks the slots a fresh track has not filled yet (zeros = empty, exactly as the clip
  masks positions before its first frame).

Receptive field: layer l at frame t sees layer l - 1 at t - w + 1 .. t, so the output sees
``R = layers * (w - 1) + 1`` frames. When R <= T (the window), the state after any T steps
depends only on those T frames: the model is a ``window`` model and one state row per track
is exact. :func:`span_for_window` gives the largest span with R <= T.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edge_mer.convert.heads import TemporalHead

__all__ = [
    "AttentionProduct",
    "CausalSelfAttention",
    "TransformerHead",
    "receptive_field",
    "span_for_window",
]

# Added to the score of a key that must not be seen: exp() of it is exactly 0 in float32
# (finite, so no inf - inf; and no boolean ops in the exported graphs).
MASKED = -1e9


def receptive_field(layers: int, span: int) -> int:
    """Frames the output at t depends on: ``layers * (span - 1) + 1``."""
    return layers * (span - 1) + 1


def span_for_window(window: int, layers: int) -> int:
    """The largest attention span whose receptive field fits in ``window`` frames."""
    return (window - 1) // layers + 1


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's geometric per-head slopes ``2^(-8 h / heads)``, h = 1..heads."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


class AttentionProduct(nn.Module):
    """``softmax(q k^T / sqrt(d) + bias) v`` on ``[N, heads, L, head_dim]`` tensors: the
    attention arithmetic outside the projections, as one module (the cost counter hooks it)."""

    def __init__(self, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        return torch.matmul(self.drop(torch.softmax(scores + bias, dim=-1)), v)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention, causal, limited to the last ``span`` frames, ALiBi biased.

    ``forward(x)`` runs a whole clip ``[N, T, dim]``; ``step(x, k, v, valid)`` one frame
    ``[N, 1, dim]`` against the cached keys/values ``[N, span - 1, dim]``.
    """

    def __init__(self, dim: int, heads: int, span: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.span = dim, heads, span
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.product = AttentionProduct(self.head_dim, dropout)
        self.proj = nn.Linear(dim, dim)
        slopes = alibi_slopes(heads).view(1, heads, 1, 1)
        self.register_buffer("slopes", slopes, persistent=False)
        # The step's keys are [w - 1 cached ..., current]: key j lies w - 1 - j frames back.
        back = torch.arange(span - 1, -1, -1, dtype=torch.float32).view(1, 1, 1, span)
        self.register_buffer("step_bias", -slopes * back, persistent=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, L, dim]`` -> ``[N, heads, L, head_dim]``."""
        return x.reshape(-1, x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor):
        out = self.product(self._split(q), self._split(k), self._split(v), bias)
        return self.proj(out.transpose(1, 2).reshape(-1, q.shape[1], self.dim))

    def clip_bias(self, t: int) -> torch.Tensor:
        """``[1, heads, t, t]``: ALiBi for keys 0..span-1 frames back, MASKED elsewhere."""
        pos = torch.arange(t, dtype=torch.float32, device=self.slopes.device)
        back = pos.view(t, 1) - pos.view(1, t)
        seen = (back >= 0) & (back < self.span)
        return torch.where(seen, -self.slopes * back, torch.full_like(back, MASKED))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.dim, dim=-1)
        return self._attend(q, k, v, self.clip_bias(x.shape[1]))

    def step(
        self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(x).split(self.dim, dim=-1)
        keys = torch.cat([k_cache, k], dim=1)  # [N, span, dim]
        values = torch.cat([v_cache, v], dim=1)
        seen = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)  # [N, span]
        bias = self.step_bias + ((seen - 1.0) * -MASKED).view(-1, 1, 1, self.span)
        return self._attend(q, keys, values, bias), keys[:, 1:], values[:, 1:]


class _Block(nn.Module):
    """Pre-norm: ``x + attn(LN(x))``, then ``x + ffn(LN(x))``."""

    def __init__(self, dim: int, heads: int, span: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, span, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))

    def step(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn.step(self.norm1(x), k, v, valid)
        x = x + a
        return x + self.ffn(self.norm2(x)), k, v


class TransformerHead(TemporalHead):
    """Input projection, ``layers`` pre-norm blocks, a final LayerNorm, a linear classifier
    on the last frame. State: ``k0, v0, k1, v1, ...`` ``[N, span - 1, hidden]`` and
    ``valid`` ``[N, span - 1]``."""

    state_kind = "window"

    def __init__(
        self,
        features: int,
        hidden: int,
        layers: int,
        heads: int,
        span: int,
        n_labels: int,
        ffn_mult: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if span < 2:
            raise ValueError(f"span {span} must be at least 2 frames")
        self.span = span
        self.hidden = hidden
        self.inp = nn.Linear(features, hidden)
        self.blocks = nn.ModuleList(
            _Block(hidden, heads, span, ffn_mult * hidden, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_labels)
        self.state_names = [f"{kv}{i}" for i in range(layers) for kv in ("k", "v")] + ["valid"]

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        shape = (batch, self.span - 1, self.hidden)
        cache = [torch.zeros(shape) for _ in range(2 * len(self.blocks))]
        return (*cache, torch.zeros(batch, self.span - 1))

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        valid = state[-1]
        x = self.inp(features).unsqueeze(1)  # [N, 1, hidden]
        nxt: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, state[2 * i], state[2 * i + 1], valid)
            nxt += [k, v]
        # Shift in one filled slot: after span - 1 frames every slot is valid for good.
        valid = torch.cat([valid[:, 1:], torch.ones_like(valid[:, :1])], dim=1)
        return self.head(self.norm(x[:, 0])), (*nxt, valid)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.inp(feats)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -1]))
