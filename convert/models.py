"""Reference CNN-RNN micro-expression models that follow the streaming protocol (DESIGN §2).

A model reads uint8 face frames ``[N, H, W, C]`` (C = 1 gray or 3 RGB); normalisation
happens inside :meth:`CnnRnn.encode`, so the exported encoder takes camera bytes as they are.
``forward(clip)`` equals ``encode`` on every frame followed by ``step`` over time: that
identity is what makes the on-device state cache exact.

Build one from a JSON-able config with :func:`build` (also the ``--model-factory`` contract:
``build(config: dict) -> torch.nn.Module``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edge_mer.errors import InputError

DEFAULT_CONFIG: dict[str, Any] = {
    "arch": "cnn_rnn",
    "labels": ["none", "positive", "negative", "surprise"],
    "input": {
        "height": 64,
        "width": 64,
        "channels": 1,
        "fps": 50.0,
        "window": 16,
        "mean": [0.5],
        "std": [0.25],
    },
    "cnn": "small",  # "small" | "resnet18"
    "width_mult": 1.0,  # channel multiplier of the CNN
    "pool": 1,  # CNN output grid before the feature layer: 1 = global average, G = GxG map
    "feature_dim": 64,
    "rnn": "lstm",  # "lstm" | "gru"
    "layers": 1,
    "hidden": 64,
    "dropout": 0.0,
    # Causal feature baseline: the RNN reads each frame's features minus a running mean of
    # the frames so far (EMA with alpha 1/K after K frames), carried as state. 0 = off.
    "baseline": 0,
}

_CNN_KINDS = ("small", "resnet18")
_RNN_KINDS = ("lstm", "gru")


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_CONFIG`` overlaid with ``config`` (one level deep for ``input``), checked."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if key == "input" and isinstance(value, dict):
            cfg["input"].update(value)
        else:
            cfg[key] = value
    inp = cfg["input"]
    channels = inp["channels"]
    if channels not in (1, 3):
        raise InputError(f"model config input.channels={channels!r}: use 1 (gray) or 3 (RGB)")
    for key in ("mean", "std"):
        if len(inp[key]) == 1 and channels == 3:
            inp[key] = list(inp[key]) * 3
        if len(inp[key]) != channels:
            raise InputError(f"model config input.{key}={inp[key]!r} needs {channels} values")
    if cfg["cnn"] not in _CNN_KINDS:
        raise InputError(f"model config cnn={cfg['cnn']!r}: choose one of {list(_CNN_KINDS)}")
    if cfg["rnn"] not in _RNN_KINDS:
        raise InputError(f"model config rnn={cfg['rnn']!r}: choose one of {list(_RNN_KINDS)}")
    for key in ("height", "width", "window"):
        if not isinstance(inp[key], int) or inp[key] < 1:
            raise InputError(f"model config input.{key}={inp[key]!r} must be a positive integer")
    if min(inp["height"], inp["width"]) < 16:
        raise InputError("model config input height/width must be at least 16 pixels")
    if not isinstance(cfg["pool"], int) or not 1 <= cfg["pool"] <= 8:
        raise InputError(f"model config pool={cfg['pool']!r}: an integer grid size 1..8")
    if not isinstance(cfg["baseline"], int) or cfg["baseline"] == 1 or cfg["baseline"] < 0:
        raise InputError(f"model config baseline={cfg['baseline']!r}: 0 (off) or K >= 2 frames")
    if not cfg["labels"] or len(set(cfg["labels"])) != len(cfg["labels"]):
        raise InputError(f"model config labels={cfg['labels']!r} must be unique and non-empty")
    return cfg


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _grid_pool(
    trunk: nn.Module, channels: int, size: tuple[int, int], pool: int
) -> tuple[nn.Module, int]:
    """A pooling layer that leaves about a ``pool`` x ``pool`` map, and its output cells.

    The grid is a fixed-kernel average pool sized from the trunk's output for this input
    size (measured once here), not an adaptive one: the TorchScript ONNX exporter cannot
    export adaptive pooling to a grid once the frame size is symbolic, as in the clip graph.
    """
    trunk.eval()  # batch norm cannot see one value per channel in training mode
    with torch.no_grad():
        _, _, sh, sw = trunk(torch.zeros(1, channels, *size)).shape
    trunk.train()
    if pool == 1:
        return nn.AdaptiveAvgPool2d(1), 1
    if sh < pool or sw < pool:
        raise InputError(
            f"model config pool={pool} exceeds the CNN's {sh}x{sw} output map for "
            f"{size[0]}x{size[1]} input; use a smaller pool or a larger input"
        )
    kh, kw = sh // pool, sw // pool
    return nn.AvgPool2d((kh, kw)), (sh // kh) * (sw // kw)


class SmallCnn(nn.Sequential):
    """Four strided conv blocks, pooling to a grid, a feature layer: ~0.1 M parameters."""

    def __init__(
        self,
        channels: int,
        feature_dim: int,
        width_mult: float = 1.0,
        pool: int = 1,
        size: tuple[int, int] = (64, 64),
    ) -> None:
        w = [max(8, int(c * width_mult)) for c in (16, 32, 64, 96)]
        trunk = [
            _conv_bn(channels, w[0], 2),
            _conv_bn(w[0], w[1], 2),
            _conv_bn(w[1], w[2], 2),
            _conv_bn(w[2], w[3], 2),
        ]
        pooling, cells = _grid_pool(nn.Sequential(*trunk), channels, size, pool)
        super().__init__(*trunk, pooling, nn.Flatten(), nn.Linear(w[3] * cells, feature_dim))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18 layout (2-2-2-2 basic blocks), any channel count, no torchvision needed."""

    def __init__(
        self,
        channels: int,
        feature_dim: int,
        width_mult: float = 1.0,
        pool: int = 1,
        size: tuple[int, int] = (112, 112),
    ) -> None:
        super().__init__()
        w = [max(8, int(c * width_mult)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, w[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers: list[nn.Module] = []
        cin = w[0]
        for i, cout in enumerate(w):
            stride = 1 if i == 0 else 2
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        pooling, cells = _grid_pool(nn.Sequential(self.stem, self.layers), channels, size, pool)
        self.head = nn.Sequential(pooling, nn.Flatten(), nn.Linear(cin * cells, feature_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class CnnRnn(nn.Module):
    """A two-stage CNN-LSTM (or CNN-GRU) following edge-mer's streaming protocol.

    Attributes:
        labels: class names in logit order.
        input_spec: height, width, channels, fps, window, mean, std (the config's ``input``).
        state_names: names of the state tensors in ``step``'s state tuple.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        self.labels: list[str] = list(cfg["labels"])
        self.input_spec: dict[str, Any] = dict(cfg["input"])
        ch = self.input_spec["channels"]
        cnn_cls = SmallCnn if cfg["cnn"] == "small" else ResNet18
        size = (self.input_spec["height"], self.input_spec["width"])
        self.cnn = cnn_cls(ch, cfg["feature_dim"], cfg["width_mult"], cfg["pool"], size)
        rnn_cls = nn.LSTM if cfg["rnn"] == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            cfg["feature_dim"],
            cfg["hidden"],
            cfg["layers"],
            batch_first=True,
            dropout=cfg["dropout"] if cfg["layers"] > 1 else 0.0,
        )
        self.head = nn.Linear(cfg["hidden"], len(self.labels))
        self._rnn_states = ["h", "c"] if cfg["rnn"] == "lstm" else ["h"]
        self.baseline = int(cfg["baseline"])
        self.state_names: list[str] = self._rnn_states + (
            ["base", "count"] if self.baseline else []
        )
        mean = torch.tensor(self.input_spec["mean"], dtype=torch.float32).view(1, ch, 1, 1)
        std = torch.tensor(self.input_spec["std"], dtype=torch.float32).view(1, ch, 1, 1)
        # Folded into one multiply-add: x/255 then (x - mean)/std.
        self.register_buffer("_scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("_shift", -mean / std, persistent=False)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[N, H, W, C]`` -> float32 features ``[N, D]``."""
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        return self.cnn(x * self._scale + self._shift)

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Zero state, batch-first: RNN tensors ``[batch, layers, hidden]``; with a baseline
        also ``base`` ``[batch, D]`` and ``count`` ``[batch, 1]``."""
        shape = (batch, self.rnn.num_layers, self.rnn.hidden_size)
        state = [torch.zeros(shape) for _ in self._rnn_states]
        if self.baseline:
            state += [torch.zeros(batch, self.rnn.input_size), torch.zeros(batch, 1)]
        return tuple(state)

    def _deviation(
        self, f: torch.Tensor, base: torch.Tensor, count: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features minus the running baseline, and the updated baseline and count."""
        count = torch.clamp(count + 1.0, max=float(self.baseline))
        base = base + (f - base) / count
        return f - base, base, count

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step: features ``[N, D]``, batch-first state -> logits ``[N, K]``, next state."""
        n_rnn = len(self._rnn_states)
        extra: tuple[torch.Tensor, ...] = ()
        if self.baseline:
            features, base, count = self._deviation(features, *state[n_rnn:])
            extra = (base, count)
        # nn.LSTM/GRU keep state as [layers, N, hidden]; the protocol is batch-first.
        rnn_state = tuple(s.transpose(0, 1).contiguous() for s in state[:n_rnn])
        out, nxt = self.rnn(
            features.unsqueeze(1), rnn_state if len(rnn_state) > 1 else rnn_state[0]
        )
        nxt_t = nxt if isinstance(nxt, tuple) else (nxt,)
        return self.head(out[:, 0]), (*(s.transpose(0, 1) for s in nxt_t), *extra)

    def sequence_features(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 clip ``[N, T, H, W, C]`` -> features ``[N, T, D]``."""
        n, t = clip.shape[:2]
        # The frame size from the spec, not clip.shape: it stays a constant in the exported
        # graph, which pooling layers need.
        spec = self.input_spec
        frames = clip.reshape(n * t, spec["height"], spec["width"], spec["channels"])
        return self.encode(frames).reshape(n, t, -1)

    def classify_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``[N, T, D]`` -> logits ``[N, K]`` after the last frame (zero initial state)."""
        if self.baseline:
            n, t, d = feats.shape
            base, count = feats.new_zeros(n, d), feats.new_zeros(n, 1)
            devs = []
            for i in range(t):
                dev, base, count = self._deviation(feats[:, i], base, count)
                devs.append(dev)
            feats = torch.stack(devs, dim=1)
        out, _ = self.rnn(feats)
        return self.head(out[:, -1])

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 clip ``[N, T, H, W, C]`` -> logits ``[N, K]`` (same as encode + T steps)."""
        return self.classify_features(self.sequence_features(clip))


def build(config: dict[str, Any]) -> CnnRnn:
    """Model factory for the reference architecture (``--model-factory`` contract)."""
    return CnnRnn(config)
