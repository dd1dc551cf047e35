"""What a model costs on the device: parameters, multiply-accumulates, state memory.

:func:`count_macs` runs a call with forward hooks on every submodule and adds up the
multiply-accumulates of the layers that carry the arithmetic:

- ``Conv1d`` / ``Conv2d``: output elements x (input channels / groups) x kernel size;
- ``Linear``: output elements x input features;
- ``LSTM`` / ``GRU``: per frame and layer, 4 (LSTM) or 3 (GRU) gates x hidden x
  (input + hidden);
- edge-mer's attention (:class:`~edge_mer.convert.heads.transformer.AttentionProduct`):
  ``q k^T`` and ``weights v``, queries x keys x width each (the projections are ``Linear``).

Element-wise work (activations, normalisation, softmax, additions) and functional ops a
user's model calls directly (``torch.matmul`` outside those layers) are not counted.

:func:`model_cost` gives the manifest's ``cost`` block: ``params``,
``encoder_macs_per_frame`` (one frame), ``step_macs`` (one step row), ``step_rows_per_frame``
(per track: ``window`` staggered banks for a recurrent state at stride 1, 1 for a window
state) and ``state_bytes_per_track`` (rows x the state tensors' bytes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edge_mer.convert.heads.transformer import AttentionProduct
from edge_mer.pipeline.state_cache import rows_per_track

__all__ = ["count_macs", "model_cost"]


def _conv(module: nn.Module, args: tuple, out: torch.Tensor) -> int:
    per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
    return out.numel() * per_out


def _linear(module: nn.Module, args: tuple, out: torch.Tensor) -> int:
    return out.numel() * module.in_features


def _rnn(module: nn.Module, args: tuple, out: Any) -> int:
    x = args[0]
    frames = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    gates = 4 if isinstance(module, nn.LSTM) else 3
    hidden = module.hidden_size
    total = 0
    for layer in range(module.num_layers):
        inp = module.input_size if layer == 0 else hidden * (2 if module.bidirectional else 1)
        total += gates * hidden * (inp + hidden) * (2 if module.bidirectional else 1)
    return frames * total


def _attention(module: nn.Module, args: tuple, out: torch.Tensor) -> int:
    q, k = args[0], args[1]  # [N, heads, queries, head_dim], [N, heads, keys, head_dim]
    return 2 * q.numel() * k.shape[2]


_COUNTERS: list[tuple[type, Callable[[nn.Module, tuple, Any], int]]] = [
    (nn.Conv1d, _conv),
    (nn.Conv2d, _conv),
    (nn.Linear, _linear),
    (nn.LSTM, _rnn),
    (nn.GRU, _rnn),
    (AttentionProduct, _attention),
]


def count_macs(root: nn.Module, fn: Callable[..., Any], *args: Any) -> int:
    """Multiply-accumulates of ``fn(*args)`` over the counted layers inside ``root``."""
    total = 0
    handles = []

    def hook(counter: Callable[[nn.Module, tuple, Any], int]) -> Callable[..., None]:
        def on_forward(module: nn.Module, inputs: tuple, output: Any) -> None:
            nonlocal total
            total += int(counter(module, inputs, output))

        return on_forward

    for module in root.modules():
        for kind, counter in _COUNTERS:
            if isinstance(module, kind):
                handles.append(module.register_forward_hook(hook(counter)))
                break
    try:
        with torch.no_grad():
            fn(*args)
    finally:
        for h in handles:
            h.remove()
    return total


def model_cost(model: nn.Module, spec: dict[str, Any], state_kind: str) -> dict[str, int]:
    """The manifest's ``cost`` block for a protocol model (see the module docstring)."""
    frame = torch.zeros((1, spec["height"], spec["width"], spec["channels"]), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        feats = model.encode(frame)
        state = model.init_state(1)
    state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
    rows = rows_per_track(state_kind, int(spec["window"]))
    row_bytes = sum(s[0].numel() * s.element_size() for s in state)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "encoder_macs_per_frame": count_macs(model, model.encode, frame),
        "step_macs": count_macs(model, model.step, feats, state),
        "step_rows_per_frame": rows,
        "state_bytes_per_track": rows * row_bytes,
    }
