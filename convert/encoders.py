"""Per-frame CNN encoders: a face frame ``[N, C, H, W]`` (already normalised) -> ``[N, D]``.

- ``small``: four strided conv blocks (~0.1 M parameters at width 1);
- ``resnet18``: the ResNet-18 layout (2-2-2-2 basic blocks), any channel count;
- ``mobilenet``: MobileNetV2-like, inverted residual blocks with depthwise 3x3
  convolutions, linear bottlenecks and ReLU6: what people run on a Raspberry Pi.

Plain PyTorch (no torchvision). Every encoder ends in a pooling layer to a ``pool`` x ``pool``
grid and a linear feature layer. Pick one by name with :func:`build_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edge_mer.errors import InputError

__all__ = ["ENCODERS", "MobileNet", "ResNet18", "SmallCnn", "build_encoder"]


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


def _divisible(c: float, by: int = 8) -> int:
    """Round a channel count to a multiple of ``by`` (at least ``by``), as MobileNet does."""
    return max(by, int(c + by / 2) // by * by)


class _InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 (stride) -> 1x1 linear projection; residual when shapes
    allow. ReLU6 after the expansion and the depthwise conv, none after the projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNet(nn.Module):
    """A MobileNetV2-like encoder sized for face crops of 32-112 px.

    Stem conv (stride 2), then inverted residual stages (expansion, channels, repeats,
    stride) ``(1,16,1,1) (6,24,2,2) (6,32,2,2) (6,64,2,2) (6,96,1,1)``, a 1x1 conv to
    ``4 x`` the last width, grid pooling and the feature layer. ``width_mult`` scales every
    width (rounded to multiples of 8).
    """

    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(
        self,
        channels: int,
        feature_dim: int,
        width_mult: float = 1.0,
        pool: int = 1,
        size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        cin = _divisible(32 * width_mult)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, cin, 3, 2, 1, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
        ]
        for expand, c, repeats, stride in self.STAGES:
            cout = _divisible(c * width_mult)
            for i in range(repeats):
                layers.append(_InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        last = _divisible(4 * cin)
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        pooling, cells = _grid_pool(self.features, channels, size, pool)
        self.head = nn.Sequential(pooling, nn.Flatten(), nn.Linear(last * cells, feature_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


EncoderFactory = Callable[[int, int, float, int, tuple[int, int]], nn.Module]
ENCODERS: dict[str, EncoderFactory] = {
    "small": SmallCnn,
    "resnet18": ResNet18,
    "mobilenet": MobileNet,
}


def build_encoder(
    name: str, channels: int, feature_dim: int, width_mult: float, pool: int, size: tuple[int, int]
) -> nn.Module:
    """The encoder ``name`` (a key of :data:`ENCODERS`) for ``size`` = (height, width) frames."""
    if name not in ENCODERS:
        raise InputError(f"model config cnn={name!r}: choose one of {list(ENCODERS)}")
    return ENCODERS[name](channels, feature_dim, width_mult, pool, size)
