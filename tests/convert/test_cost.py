"""The MAC counter against hand-computed values, and the manifest's cost block."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edge_mer.convert.cost import count_macs, model_cost  # noqa: E402
from edge_mer.convert.heads.transformer import CausalSelfAttention  # noqa: E402
from edge_mer.convert.registry import build  # noqa: E402
from tests.conftest import TINY  # noqa: E402


def macs(module: nn.Module, *args) -> int:
    return count_macs(module, module, *args)


def test_layer_counts_by_hand() -> None:
    # 2 output channels x 4x4 positions x (1 input channel x 3x3 kernel)
    assert macs(nn.Conv2d(1, 2, 3, padding=1), torch.zeros(1, 1, 4, 4)) == 2 * 16 * 9
    # depthwise: each output channel sees one input channel
    dw = nn.Conv2d(2, 2, 3, padding=1, groups=2)
    assert macs(dw, torch.zeros(1, 2, 4, 4)) == 2 * 16 * 1 * 9
    # dilated Conv1d, 5 frames -> 5 - (2 - 1) x 2 = 3 outputs of 4 channels x (3 x 2 taps)
    assert macs(nn.Conv1d(3, 4, 2, dilation=2), torch.zeros(1, 3, 5)) == 3 * 4 * 3 * 2
    assert macs(nn.Linear(8, 3), torch.zeros(2, 8)) == 2 * 3 * 8
    # LSTM, 2 layers, 5 frames: 4 gates x hidden x (input + hidden) per layer and frame
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    assert macs(lstm, torch.zeros(1, 5, 3)) == 5 * (4 * 4 * (3 + 4) + 4 * 4 * (4 + 4))
    gru = nn.GRU(3, 5, batch_first=True)
    assert macs(gru, torch.zeros(2, 1, 3)) == 2 * 3 * 5 * (3 + 5)


def test_attention_counts_clip_and_step_by_hand() -> None:
    attn = CausalSelfAttention(dim=4, heads=2, span=3).eval()
    # clip of 5 frames: qkv 5 x 12 x 4, proj 5 x 4 x 4, QK^T and AV 2 x 5 x 5 x 4
    assert macs(attn, torch.zeros(1, 5, 4)) == 240 + 80 + 200
    # one step against 2 cached frames: 3 keys
    cache, valid = torch.zeros(1, 2, 4), torch.zeros(1, 2)
    step = count_macs(attn, attn.step, torch.zeros(1, 1, 4), cache, cache, valid)
    assert step == 48 + 16 + 2 * 1 * 3 * 4


def test_model_cost_rows_and_state_bytes_follow_the_state_kind() -> None:
    lstm = build(TINY)
    cost = model_cost(lstm, lstm.input_spec, lstm.state_kind)
    assert cost["step_rows_per_frame"] == 6  # one bank per frame of the window
    assert cost["state_bytes_per_track"] == 6 * (2 * 16) * 4  # h and c, float32
    assert cost["step_macs"] == 4 * 16 * (16 + 16) + 16 * 4  # LSTM + classifier
    assert cost["params"] == sum(p.numel() for p in lstm.parameters())
    tf = build({**TINY, "arch": "cnn_transformer", "layers": 2})  # span 3
    cost = model_cost(tf, tf.input_spec, tf.state_kind)
    assert cost["step_rows_per_frame"] == 1
    assert cost["state_bytes_per_track"] == (2 * 2 * 2 * 16 + 2) * 4  # k, v x 2 layers + valid
    assert (
        cost["encoder_macs_per_frame"]
        == model_cost(lstm, lstm.input_spec, "recurrent")["encoder_macs_per_frame"]
    )
