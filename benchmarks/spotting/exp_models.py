"""The reference CNN-RNN with a causal per-window reference, for the spotting experiments.

``reference`` (config key):

- ``"none"``: the reference model as it is (:class:`edge_mer.convert.models.CnnRnn`);
- ``"first"``: the recurrent layer reads each frame's features minus those of the first
  frame it saw (``f_t - f_0``). The state cache restarts every bank from zero state, so on
  the device "the first frame" is the first frame of the classified window: the window's
  own neutral reference, the onset-relative input the MER field uses (apex - onset), kept
  as two state tensors (``ref`` [D], ``seen`` [1]). ``forward == encode + step`` holds.
- ``"first+raw"``: both ``f_t - f_0`` and ``f_t`` (the recurrent layer is twice as wide).

Build with :func:`build` (the ``--model-factory`` contract), e.g.
``edge-mer convert ckpt --model-factory benchmarks/spotting/exp_models.py:build``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edge_mer.convert.models import CnnRnn

REFERENCES = ("none", "first", "first+raw")


class RefCnnRnn(CnnRnn):
    def __init__(self, config: dict[str, Any]) -> None:
        cfg = dict(config)
        self.reference = cfg.pop("reference", "none")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference={self.reference!r}: one of {REFERENCES}")
        super().__init__(cfg)
        self.config = {**self.config, "reference": self.reference}
        if self.reference == "none":
            return
        if self.baseline:
            raise ValueError("reference and baseline are exclusive")
        d = self.config["feature_dim"]
        if self.reference == "first+raw":
            rnn_cls = nn.LSTM if self.config["rnn"] == "lstm" else nn.GRU
            self.rnn = rnn_cls(
                2 * d, self.config["hidden"], self.config["layers"], batch_first=True
            )
        self.state_names = [*self._rnn_states, "ref", "seen"]

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        state = super().init_state(batch)
        if self.reference == "none":
            return state
        d = self.config["feature_dim"]
        return (*state, torch.zeros(batch, d), torch.zeros(batch, 1))

    def _relative(self, f: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        rel = f - ref
        return torch.cat([rel, f], dim=-1) if self.reference == "first+raw" else rel

    def step(self, features, state):
        if self.reference == "none":
            return super().step(features, state)
        n_rnn = len(self._rnn_states)
        ref, seen = state[n_rnn], state[n_rnn + 1]
        ref = seen * ref + (1.0 - seen) * features  # the first frame's features, then held
        seen = torch.ones_like(seen)
        x = self._relative(features, ref)
        rnn_state = tuple(s.transpose(0, 1).contiguous() for s in state[:n_rnn])
        out, nxt = self.rnn(x.unsqueeze(1), rnn_state if len(rnn_state) > 1 else rnn_state[0])
        nxt_t = nxt if isinstance(nxt, tuple) else (nxt,)
        return self.head(out[:, 0]), (*(s.transpose(0, 1) for s in nxt_t), ref, seen)

    def rnn_inputs(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``[N, T, D]`` -> what the recurrent layer reads."""
        if self.reference == "none":
            return feats
        return self._relative(feats, feats[:, :1])

    def classify_features(self, feats: torch.Tensor) -> torch.Tensor:
        if self.reference == "none":
            return super().classify_features(feats)
        out, _ = self.rnn(self.rnn_inputs(feats))
        return self.head(out[:, -1])

    def classify_all(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits after every step ``[N, T, K]`` (zero initial state at t = 0)."""
        if self.reference == "none" and self.baseline:
            raise ValueError("classify_all does not do the feature baseline")
        out, _ = self.rnn(self.rnn_inputs(feats))
        return self.head(out)


def build(config: dict[str, Any]) -> RefCnnRnn:
    return RefCnnRnn(config)
