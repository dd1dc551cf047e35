"""The first release's reference model names, kept so that existing code, configs and
manifests (``factory: edge_mer.convert.models:build``) keep working.

The architectures now live in :mod:`edge_mer.convert.registry` (``arch`` picks one),
:mod:`edge_mer.convert.encoders` and :mod:`edge_mer.convert.heads`. ``CnnRnn`` is the
registry's :class:`~edge_mer.convert.registry.MerModel`; a config without ``arch`` (or with
the old ``arch: "cnn_rnn"``) builds the CNN-LSTM, or the CNN-GRU with ``rnn: "gru"``.
"""

from __future__ import annotations

from edge_mer.convert.encoders import MobileNet, ResNet18, SmallCnn
from edge_mer.convert.registry import ARCHS, DEFAULT_CONFIG, MerModel, build, resolve_config

CnnRnn = MerModel

__all__ = [
    "ARCHS",
    "DEFAULT_CONFIG",
    "CnnRnn",
    "MerModel",
    "MobileNet",
    "ResNet18",
    "SmallCnn",
    "build",
    "resolve_config",
]
