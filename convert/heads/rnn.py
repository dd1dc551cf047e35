"""LSTM / GRU heads (``cnn_lstm``, ``cnn_gru``): today's reference, and the LSTM over a window
whose outputs are pooled by learned attention (``cnn_attn_lstm``).

Both are ``recurrent``: their state depends on all history, so the device reproduces the
clip over the last T frames with staggered banks that restart from zero state.

The attention pooling, ``softmax_t(e_t) . o_t`` over the whole window, is carried causally by
the online-softmax trick: the state holds the running maximum ``m`` of the scores, the
running sum ``z = sum exp(e_t - m)`` and the running weighted sum ``acc = sum exp(e_t - m)
o_t``; each step rescales both by ``exp(m_old - m_new)``. After T steps from zeros,
``acc / z`` is exactly the clip's attention-pooled output, so a bank that has seen the last T
frames gives the clip's logits. A zero ``z`` marks a fresh bank: its first score becomes the
maximum, so no ``exp`` ever sees a positive argument (no overflow, no 0/0).

``reference="window-start"`` (both heads): the recurrent layer reads ``f_t - f_ref``, each
frame's features minus those of the first frame the state has seen, kept as two state
tensors ``ref`` ``[N, D]`` and ``seen`` ``[N, 1]`` (0 in a fresh state, 1 after its first
step). The state cache restarts every bank from zero state each T frames, so on the device
"the first frame" is the first frame of the classified window, exactly as ``classify``
takes ``feats[:, :1]``: a per-window neutral reference (apex minus onset, as the MER field
does), whoever the subject is. The subtraction lives in the step graph, which stays float,
so it widens no quantized layer's range.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_mer.convert.heads import TemporalHead

__all__ = ["REFERENCES", "AttnLstmHead", "RnnHead"]

REFERENCES = ("none", "window-start")


def _reference_step(
    features: torch.Tensor, ref: torch.Tensor, seen: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(``features - ref``, the next ``ref``, the next ``seen``): a fresh state (seen 0)
    takes this frame as its reference (``0 * 0 + 1 * f`` is exactly ``f``), then holds it."""
    ref = seen * ref + (1.0 - seen) * features
    return features - ref, ref, torch.ones_like(seen)


def _check_reference(reference: str) -> bool:
    if reference not in REFERENCES:
        raise ValueError(f"reference={reference!r}: one of {REFERENCES}")
    return reference == "window-start"


def _batch_first(states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(s.transpose(0, 1) for s in states)


def _layers_first(states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # nn.LSTM/GRU keep state as [layers, N, hidden]; the protocol is batch-first.
    return tuple(s.transpose(0, 1).contiguous() for s in states)


class RnnHead(TemporalHead):
    """An LSTM or GRU over the features, a linear classifier on its last output.

    ``baseline`` K >= 2: the RNN reads each frame's features minus a causal running mean
    (EMA with alpha 1/k after k frames, capped at K), carried as the states ``base`` and
    ``count``. 0 = off. ``reference="window-start"``: it reads ``f_t - f_first`` instead
    (states ``ref``, ``seen``; see the module docstring). The two are exclusive.
    """

    state_kind = "recurrent"

    def __init__(
        self,
        kind: str,
        features: int,
        hidden: int,
        layers: int,
        n_labels: int,
        dropout: float = 0.0,
        baseline: int = 0,
        reference: str = "none",
    ) -> None:
        super().__init__()
        self.reference = _check_reference(reference)
        if self.reference and baseline:
            raise ValueError("reference and baseline are exclusive")
        rnn_cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            features, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden, n_labels)
        self._rnn_states = ["h", "c"] if kind == "lstm" else ["h"]
        self.baseline = int(baseline)
        self.state_names = self._rnn_states + (["base", "count"] if self.baseline else [])
        if self.reference:
            self.state_names += ["ref", "seen"]

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """RNN tensors ``[batch, layers, hidden]``; with a baseline also ``base`` ``[batch, D]``
        and ``count`` ``[batch, 1]``; with the reference ``ref`` ``[batch, D]`` and ``seen``
        ``[batch, 1]``."""
        shape = (batch, self.rnn.num_layers, self.rnn.hidden_size)
        state = [torch.zeros(shape) for _ in self._rnn_states]
        if self.baseline or self.reference:
            state += [torch.zeros(batch, self.rnn.input_size), torch.zeros(batch, 1)]
        return tuple(state)

    def _deviation(
        self, f: torch.Tensor, base: torch.Tensor, count: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        count = torch.clamp(count + 1.0, max=float(self.baseline))
        base = base + (f - base) / count
        return f - base, base, count

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        n_rnn = len(self._rnn_states)
        extra: tuple[torch.Tensor, ...] = ()
        if self.baseline:
            features, base, count = self._deviation(features, *state[n_rnn:])
            extra = (base, count)
        elif self.reference:
            features, ref, seen = _reference_step(features, *state[n_rnn:])
            extra = (ref, seen)
        rnn_state = _layers_first(tuple(state[:n_rnn]))
        out, nxt = self.rnn(
            features.unsqueeze(1), rnn_state if len(rnn_state) > 1 else rnn_state[0]
        )
        nxt_t = nxt if isinstance(nxt, tuple) else (nxt,)
        return self.head(out[:, 0]), (*_batch_first(nxt_t), *extra)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        if self.baseline:
            n, t, d = feats.shape
            base, count = feats.new_zeros(n, d), feats.new_zeros(n, 1)
            devs = []
            for i in range(t):
                dev, base, count = self._deviation(feats[:, i], base, count)
                devs.append(dev)
            feats = torch.stack(devs, dim=1)
        elif self.reference:
            feats = feats - feats[:, :1]
        out, _ = self.rnn(feats)
        return self.head(out[:, -1])


class AttnLstmHead(TemporalHead):
    """An LSTM over the window, its outputs pooled by learned attention, then classified.

    Scores ``e_t = v . tanh(W o_t + b)``; pooled ``sum_t softmax(e)_t o_t``; logits
    ``fc(pooled)``. State: ``h``, ``c`` ``[N, layers, hidden]``, ``att_max`` and ``att_sum``
    ``[N, 1]``, ``att_acc`` ``[N, hidden]`` (see the module docstring); with
    ``reference="window-start"`` also ``ref`` ``[N, D]`` and ``seen`` ``[N, 1]``.
    """

    state_kind = "recurrent"

    def __init__(
        self,
        features: int,
        hidden: int,
        layers: int,
        n_labels: int,
        attention: int = 32,
        dropout: float = 0.0,
        reference: str = "none",
    ) -> None:
        super().__init__()
        self.reference = _check_reference(reference)
        self.rnn = nn.LSTM(
            features, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.score = nn.Sequential(nn.Linear(hidden, attention), nn.Tanh(), nn.Linear(attention, 1))
        self.head = nn.Linear(hidden, n_labels)
        self.state_names = ["h", "c", "att_max", "att_sum", "att_acc"]
        if self.reference:
            self.state_names += ["ref", "seen"]

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        layers, hidden = self.rnn.num_layers, self.rnn.hidden_size
        state = (
            torch.zeros(batch, layers, hidden),
            torch.zeros(batch, layers, hidden),
            torch.zeros(batch, 1),
            torch.zeros(batch, 1),
            torch.zeros(batch, hidden),
        )
        if self.reference:
            state += (torch.zeros(batch, self.rnn.input_size), torch.zeros(batch, 1))
        return state

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        h, c, m, z, acc = state[:5]
        extra: tuple[torch.Tensor, ...] = ()
        if self.reference:
            features, ref, seen = _reference_step(features, *state[5:])
            extra = (ref, seen)
        out, (h2, c2) = self.rnn(features.unsqueeze(1), _layers_first((h, c)))
        o = out[:, 0]
        e = self.score(o)  # [N, 1]
        fresh = z <= 0.0  # a bank that has seen no frame yet
        m2 = torch.where(fresh, e, torch.maximum(m, e))
        # exp(m - m2) <= 1 for a running bank; a fresh one discards what it holds.
        scale = torch.where(fresh, torch.zeros_like(z), torch.exp(m - m2))
        w = torch.exp(e - m2)
        z2 = z * scale + w
        acc2 = acc * scale + w * o
        return self.head(acc2 / z2), (*_batch_first((h2, c2)), m2, z2, acc2, *extra)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        if self.reference:
            feats = feats - feats[:, :1]
        out, _ = self.rnn(feats)  # [N, T, hidden]
        weights = torch.softmax(self.score(out), dim=1)  # [N, T, 1]
        return self.head((weights * out).sum(dim=1))
