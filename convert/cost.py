"""What a model costs on the device: parameters, multiply-accumulates, state memory.

:func:`count_macs` runs a call with forward hooks on every submodule and adds up the
multiply-accumulates of the layers that carry the arithmetic:

- ``Conv1d`` / ``Conv2d``: output elements x (input channels / groups) x kernel size;
- ``Linear``: output elements x input features;
- ``LSTM`` / ``GRU``: per frame and layer, 4 (LSTM) or 3 (GRU) gates x hidden x
  (input + hidden);
- edge-mer's :class:`~edge_mer.convert.heads.transformer.CausalSelfAttention`: the two
  attention products, queries x keys x width each (its projections are ``Linear`` layers).

Element-wise work (activations, normalisation, softmax, additions) and functional ops a
user's model calls directly (``torch.matmul`` outside those layers) are not counted.

:func:`model_cost` gives the manifest's ``cost`` block: ``params``,
``encoder_macs_per_frame`` (one frame), ``step_macs`` (one step row), ``step_rows_per_frame``
(per track: ``window`` staggered banks for a recurrent state at stride 1, 1 for a window
state) and ``state_bytes_per_track`` (rows x the state tensors' bytes).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from edge_mer.convert.heads.transformer import CausalSelfAttention

__all__ = ["count_macs", "model_cost", "step_rows_per_frame"]


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
    x = args[0]  # [N, L, dim]; the step also passes its key cache [N, span - 1, dim]
    keys = x.shape[1] if len(args) == 1 else args[1].shape[1] + x.shape[1]
    return 2 * x.shape[0] * x.shape[1] * keys * module.dim


_COUNTERS: list[tuple[type, Callable[[nn.Module, tuple, Any], int]]] = [
    (nn.Conv1d, _conv),
    (nn.Conv2d, _conv),
    (nn.Linear, _linear),
    (nn.LSTM, _rnn),
    (nn.GRU, _rnn),
    (CausalSelfAttention, _attention),
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
        with torch.no_grad(), _attention_steps_counted(root, hook(_attention)):
            fn(*args)
    finally:
        for h in handles:
            h.remove()
    return total


@contextlib.contextmanager
def _attention_steps_counted(root: nn.Module, on_call: Callable[..., None]) -> Iterator[None]:
    """Count ``CausalSelfAttention.step`` calls too (a method, so no forward hook fires)."""
    layers = [m for m in root.modules() if isinstance(m, CausalSelfAttention)]
    for layer in layers:

        def counted(*args: Any, _layer: Any = layer, _orig: Any = layer.step) -> Any:
            out = _orig(*args)
            on_call(_layer, args, out)
            return out

        layer.step = counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        for layer in layers:
            del layer.step  # back to the class's method


def step_rows_per_frame(state_kind: str, window: int, stride: int = 1) -> int:
    """Step rows per frame and track: ``window / stride`` banks (recurrent) or 1 (window)."""
    return 1 if state_kind == "window" else window // stride


def model_cost(model: nn.Module, spec: dict[str, Any], state_kind: str) -> dict[str, int]:
    """The manifest's ``cost`` block for a protocol model (see the module docstring)."""
    frame = torch.zeros((1, spec["height"], spec["width"], spec["channels"]), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        feats = model.encode(frame)
        state = model.init_state(1)
    state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
    rows = step_rows_per_frame(state_kind, int(spec["window"]))
    row_bytes = sum(s[0].numel() * s.element_size() for s in state)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "encoder_macs_per_frame": count_macs(model, model.encode, frame),
        "step_macs": count_macs(model, model.step, feats, state),
        "step_rows_per_frame": rows,
        "state_bytes_per_track": rows * row_bytes,
    }
