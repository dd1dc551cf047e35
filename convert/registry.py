"""The model registry: reference architectures picked by the config's ``arch`` key.

Every architecture is a CNN encoder per frame (:mod:`edge_mer.convert.encoders`, config key
``cnn``) followed by a temporal head (:mod:`edge_mer.convert.heads`), wrapped in
:class:`MerModel`, which follows edge-mer's streaming protocol (DESIGN §2):

- ``cnn_lstm``: LSTM, classifier on its last output (the reference model); recurrent.
- ``cnn_gru``: the same with a GRU; recurrent.
- ``cnn_attn_lstm``: LSTM over the window, outputs pooled by learned attention; recurrent
  (streamed with an online softmax, see :mod:`edge_mer.convert.heads.rnn`).
- ``cnn_transformer``: causal pre-norm Transformer, ALiBi positions, attention limited to
  the last ``span`` frames in every layer; window (a rolling key/value cache).
- ``cnn_tcn``: causal dilated temporal convolutions; window (each layer's input history).

A config is a JSON-able dict: :data:`COMMON` keys, plus the keys of its arch in
:data:`ARCH_KEYS`. :func:`resolve_config` fills defaults and refuses unknown keys, bad values
and impossible combinations with one line; :func:`build` makes the model (also the
``--model-factory`` contract). Configs of the first release (``arch: "cnn_rnn"`` with an
``rnn`` key) still load, as ``cnn_lstm`` / ``cnn_gru``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edge_mer.convert.encoders import ENCODERS, build_encoder
from edge_mer.convert.heads import TemporalHead
from edge_mer.convert.heads import tcn as tcn_head
from edge_mer.convert.heads import transformer as tf_head
from edge_mer.convert.heads.rnn import REFERENCES, AttnLstmHead, RnnHead
from edge_mer.errors import InputError

__all__ = ["ARCHS", "ARCH_KEYS", "COMMON", "DEFAULT_CONFIG", "MerModel", "build", "resolve_config"]

COMMON: dict[str, Any] = {
    "arch": "cnn_lstm",
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
    "cnn": "small",  # a key of encoders.ENCODERS
    "width_mult": 1.0,  # channel multiplier of the CNN
    "pool": 1,  # CNN output grid before the feature layer: 1 = global average, G = GxG map
    "feature_dim": 64,
    "hidden": 64,  # width of the temporal head (RNN hidden, Transformer model, TCN channels)
    "dropout": 0.0,
}

_RNN = {
    "layers": 1,
    # Causal feature baseline: the RNN reads each frame's features minus a running mean of
    # the frames so far (EMA with alpha 1/K after K frames), carried as state. 0 = off.
    "baseline": 0,
    # "window-start": the RNN reads each frame's features minus those of the first frame of
    # the window (a per-window neutral reference carried as state; heads.rnn). "none" = off.
    "reference": "none",
}
ARCH_KEYS: dict[str, dict[str, Any]] = {
    "cnn_lstm": dict(_RNN),
    "cnn_gru": dict(_RNN),
    "cnn_attn_lstm": {"layers": 1, "attention": 32, "reference": "none"},
    # span None: the largest attention span whose receptive field fits the window.
    "cnn_transformer": {"layers": 2, "heads": 4, "span": None, "ffn_mult": 2},
    # dilations None: 1, 2, 4, ... filling the window (heads.tcn.dilations_for_window).
    "cnn_tcn": {"kernel": 3, "dilations": None},
}
ARCHS = tuple(ARCH_KEYS)
DEFAULT_CONFIG: dict[str, Any] = {**COMMON, **ARCH_KEYS["cnn_lstm"]}
_LEGACY_ARCH = "cnn_rnn"
_RNN_ARCHS = ("cnn_lstm", "cnn_gru")


def _arch_of(config: dict[str, Any]) -> str:
    arch = config.get("arch", _LEGACY_ARCH)
    # First-release configs pick LSTM or GRU with the rnn key; it still does within the RNN
    # family, so that an override {"rnn": "gru"} over a checkpoint's config means a GRU.
    if arch in (_LEGACY_ARCH, *_RNN_ARCHS) and "rnn" in config:
        rnn = config["rnn"]
        if rnn not in ("lstm", "gru"):
            raise InputError(f"model config rnn={rnn!r}: choose one of ['lstm', 'gru']")
        return f"cnn_{rnn}"
    if arch == _LEGACY_ARCH:
        return "cnn_lstm"
    if arch not in ARCH_KEYS:
        raise InputError(
            f"model config arch={arch!r} is not in the registry: choose one of {list(ARCHS)}"
        )
    return str(arch)


def _positive_int(cfg: dict[str, Any], key: str, where: str = "") -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"model config {where}{key}={value!r} must be a positive integer")
    return value


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults for the config's arch overlaid with ``config`` (one level deep for
    ``input``), checked. Raises :class:`InputError` naming the key, value and fix."""
    config = dict(config or {})
    arch = _arch_of(config)
    cfg = copy.deepcopy({**COMMON, **ARCH_KEYS[arch]})
    allowed = set(cfg)
    for key, value in config.items():
        if key == "input" and isinstance(value, dict):
            cfg["input"].update(value)
        elif key in allowed:
            cfg[key] = value
        elif key == "rnn" and arch in _RNN_ARCHS:
            continue  # consumed by _arch_of
        else:
            raise InputError(
                f"model config key {key!r} is not used by arch {arch!r}; its keys are "
                f"{sorted(allowed)}"
            )
    cfg["arch"] = arch
    _check_common(cfg)
    _check_arch(cfg, arch)
    return cfg


def _check_common(cfg: dict[str, Any]) -> None:
    inp = cfg["input"]
    channels = inp["channels"]
    if channels not in (1, 3):
        raise InputError(f"model config input.channels={channels!r}: use 1 (gray) or 3 (RGB)")
    for key in ("mean", "std"):
        if len(inp[key]) == 1 and channels == 3:
            inp[key] = list(inp[key]) * 3
        if len(inp[key]) != channels:
            raise InputError(f"model config input.{key}={inp[key]!r} needs {channels} values")
    if cfg["cnn"] not in ENCODERS:
        raise InputError(f"model config cnn={cfg['cnn']!r}: choose one of {list(ENCODERS)}")
    for key in ("height", "width", "window"):
        _positive_int(inp, key, "input.")
    if min(inp["height"], inp["width"]) < 16:
        raise InputError("model config input height/width must be at least 16 pixels")
    if not isinstance(cfg["pool"], int) or not 1 <= cfg["pool"] <= 8:
        raise InputError(f"model config pool={cfg['pool']!r}: an integer grid size 1..8")
    for key in ("feature_dim", "hidden"):
        _positive_int(cfg, key)
    if not isinstance(cfg["dropout"], (int, float)) or not 0 <= cfg["dropout"] < 1:
        raise InputError(f"model config dropout={cfg['dropout']!r} must be in [0, 1)")
    if not cfg["labels"] or len(set(cfg["labels"])) != len(cfg["labels"]):
        raise InputError(f"model config labels={cfg['labels']!r} must be unique and non-empty")


def _check_arch(cfg: dict[str, Any], arch: str) -> None:
    window = cfg["input"]["window"]
    if arch in _RNN_ARCHS:
        _positive_int(cfg, "layers")
        base = cfg["baseline"]
        if not isinstance(base, int) or base == 1 or base < 0:
            raise InputError(f"model config baseline={base!r}: 0 (off) or K >= 2 frames")
        _check_reference(cfg)
        if base and cfg["reference"] != "none":
            raise InputError(
                f"model config baseline={base!r} and reference={cfg['reference']!r} are "
                "exclusive: the RNN reads one or the other; set baseline 0 or reference 'none'"
            )
    elif arch == "cnn_attn_lstm":
        _positive_int(cfg, "layers")
        _positive_int(cfg, "attention")
        _check_reference(cfg)
    elif arch == "cnn_transformer":
        _check_transformer(cfg, window)
    elif arch == "cnn_tcn":
        _check_tcn(cfg, window)


def _check_reference(cfg: dict[str, Any]) -> None:
    if cfg["reference"] not in REFERENCES:
        raise InputError(
            f"model config reference={cfg['reference']!r}: choose one of {list(REFERENCES)}"
        )


def _check_transformer(cfg: dict[str, Any], window: int) -> None:
    layers = _positive_int(cfg, "layers")
    heads = _positive_int(cfg, "heads")
    _positive_int(cfg, "ffn_mult")
    if cfg["hidden"] % heads:
        raise InputError(f"model config hidden={cfg['hidden']} must be divisible by heads={heads}")
    fit = tf_head.span_for_window(window, layers)
    if fit < 2:
        raise InputError(
            f"model config cnn_transformer: input.window {window} is too short for {layers} "
            f"layers (each needs a span of at least 2 frames); use a window >= {layers + 1}"
        )
    if cfg["span"] is None:
        cfg["span"] = fit
    span = _positive_int(cfg, "span")
    rf = tf_head.receptive_field(layers, span)
    why = f"receptive field layers {layers} x (span {span} - 1) + 1 = {rf} frames"
    if rf > window:
        raise InputError(
            f"model config cnn_transformer: {why} exceeds input.window {window}: one state "
            f"row per track would carry frames the clip never sees; use span <= {fit}, fewer "
            f"layers, or a window >= {rf}"
        )
    if window - rf >= layers:
        raise InputError(
            f"model config cnn_transformer: input.window {window} is larger than the attention "
            f"span allows ({why}): the oldest {window - rf} frames of each window would never "
            f"reach the output; use span {fit} (the default) or a window of {rf}"
        )


def _check_tcn(cfg: dict[str, Any], window: int) -> None:
    kernel = _positive_int(cfg, "kernel")
    if kernel < 2:
        raise InputError(f"model config kernel={kernel} must be at least 2 frames")
    if window < kernel:
        raise InputError(
            f"model config cnn_tcn: input.window {window} is shorter than kernel {kernel}"
        )
    if cfg["dilations"] is None:
        cfg["dilations"] = tcn_head.dilations_for_window(window, kernel)
    dil = cfg["dilations"]
    if (
        not isinstance(dil, list)
        or not dil
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dil)
    ):
        raise InputError(f"model config dilations={dil!r} must be a list of positive integers")
    rf = tcn_head.receptive_field(kernel, dil)
    why = f"receptive field 1 + (kernel {kernel} - 1) x sum(dilations {dil}) = {rf} frames"
    fit = tcn_head.dilations_for_window(window, kernel)
    if rf > window:
        raise InputError(
            f"model config cnn_tcn: {why} exceeds input.window {window}: one state row per "
            f"track would carry frames the clip never sees; use dilations {fit} (the default) "
            f"or a window >= {rf}"
        )
    if window - rf >= kernel - 1:
        raise InputError(
            f"model config cnn_tcn: input.window {window} is larger than the {why} allows: "
            f"the oldest {window - rf} frames of each window would never reach the output; use "
            f"dilations {fit} (the default) or a window of {rf}"
        )


def _build_head(cfg: dict[str, Any]) -> TemporalHead:
    arch, d, hidden = cfg["arch"], cfg["feature_dim"], cfg["hidden"]
    k, drop = len(cfg["labels"]), float(cfg["dropout"])
    if arch in _RNN_ARCHS:
        kind = arch.removeprefix("cnn_")
        return RnnHead(kind, d, hidden, cfg["layers"], k, drop, cfg["baseline"], cfg["reference"])
    if arch == "cnn_attn_lstm":
        return AttnLstmHead(d, hidden, cfg["layers"], k, cfg["attention"], drop, cfg["reference"])
    if arch == "cnn_transformer":
        return tf_head.TransformerHead(
            d, hidden, cfg["layers"], cfg["heads"], cfg["span"], k, cfg["ffn_mult"], drop
        )
    return tcn_head.TcnHead(d, hidden, cfg["kernel"], cfg["dilations"], k, drop)


class MerModel(nn.Module):
    """A registry architecture: CNN encoder per frame + temporal head, streaming protocol.

    Attributes:
        config: the resolved config (JSON-able; what checkpoints carry).
        labels: class names in logit order.
        input_spec: height, width, channels, fps, window, mean, std (the config's ``input``).
        state_kind: ``"recurrent"`` or ``"window"`` (the head's).
        state_names: names of the state tensors in ``step``'s state tuple.
        cnn: the encoder (stage 1 of training).
        temporal: the temporal head (stage 2): its layers (``rnn``, ``blocks``, ``convs``,
            ... and the classifier ``head``) are also children of the model itself.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        self.arch: str = cfg["arch"]
        self.labels: list[str] = list(cfg["labels"])
        self.input_spec: dict[str, Any] = dict(cfg["input"])
        ch = self.input_spec["channels"]
        size = (self.input_spec["height"], self.input_spec["width"])
        self.cnn = build_encoder(
            cfg["cnn"], ch, cfg["feature_dim"], cfg["width_mult"], cfg["pool"], size
        )
        temporal = _build_head(cfg)
        # The head's layers are the model's own children (rnn.*, head.* for the classifier,
        # as the first release's checkpoints name them); the head object, kept outside the
        # module tree, supplies the streaming logic.
        object.__setattr__(self, "temporal", temporal)
        for name, child in temporal.named_children():
            self.add_module(name, child)
        self.state_kind: str = temporal.state_kind
        self.state_names: list[str] = list(temporal.state_names)
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
        """Zero state, batch-first (see the head for the tensors)."""
        return self.temporal.init_state(batch)

    def step(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step: features ``[N, D]``, batch-first state -> logits ``[N, K]``, next state."""
        return self.temporal.step(features, tuple(state))

    def sequence_features(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 clip ``[N, T, H, W, C]`` -> features ``[N, T, D]``."""
        n, t = clip.shape[:2]
        # The frame size from the spec, not clip.shape: it stays a constant in the exported
        # graph, which pooling layers need.
        spec = self.input_spec
        frames = clip.reshape(n * t, spec["height"], spec["width"], spec["channels"])
        return self.encode(frames).reshape(n, t, -1)

    def classify_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``[N, T, D]`` -> logits ``[N, K]`` after the last frame (zero state)."""
        return self.temporal.classify(feats)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 clip ``[N, T, H, W, C]`` -> logits ``[N, K]`` (same as encode + T steps)."""
        return self.classify_features(self.sequence_features(clip))


def build(config: dict[str, Any]) -> MerModel:
    """Model factory for the registry (``--model-factory`` contract): ``config["arch"]``
    picks the architecture."""
    return MerModel(config)
