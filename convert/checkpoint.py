"""Checkpoint intake: safetensors, state_dict pickles loaded safely, user model factories.

The protocol checks a loaded model goes through live in :mod:`edge_mer.convert.protocol`
(re-exported here).

Nothing is ever unpickled by default: ``.pt``/``.pth`` files go through
``torch.load(weights_only=True)``, whose restricted unpickler refuses any global that is not
a tensor type before it can be called. A checkpoint that needs full unpickling is refused
unless the caller passes ``trust_checkpoint=True`` (``--trust-checkpoint``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_mer.convert.protocol import model_spec, model_state_kind, probe_protocol
from edge_mer.errors import CheckpointError, InputError, ModelProtocolError

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_METADATA_KEY",
    "SPOTTER_METADATA_KEY",
    "LoadedModel",
    "load_model",
    "model_spec",
    "model_state_kind",
    "probe_protocol",
    "read_json",
    "read_weights",
    "save_checkpoint",
]

CONFIG_METADATA_KEY = "edge_mer_config"
# The spotter settings chosen on the training streams (convert.train_tune), if any.
SPOTTER_METADATA_KEY = "edge_mer_spotter"
_SAFETENSORS_HEADER_CAP = 100 * 1024 * 1024  # the reference implementation's cap


@dataclass
class LoadedModel:
    """A model ready for export, with where it came from."""

    model: nn.Module
    config: dict[str, Any]
    source: Path
    factory: str
    spec: dict[str, Any] = field(default_factory=dict)  # height, width, channels, fps, window
    labels: list[str] = field(default_factory=list)
    state_names: list[str] = field(default_factory=list)
    state_kind: str = "recurrent"  # or "window" (the model's optional state_kind attribute)
    spotter: dict[str, Any] | None = None  # chosen on the training streams, for the manifest


def save_checkpoint(
    model: nn.Module, path: Path, config: dict[str, Any], spotter: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s weights as safetensors with ``config`` (and ``spotter``, the
    settings chosen on the training streams) in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    metadata = {CONFIG_METADATA_KEY: json.dumps(config)}
    if spotter is not None:
        metadata[SPOTTER_METADATA_KEY] = json.dumps(spotter)
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is truncated ({size} bytes): not a safetensors file"
            )
        (hlen,) = struct.unpack("<Q", head)
        if hlen > _SAFETENSORS_HEADER_CAP or 8 + hlen > size:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a valid safetensors file "
                f"(header length {hlen} for a {size}-byte file): truncated "
                "or not safetensors; export it again"
            )
        try:
            header = json.loads(fh.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(
                f"checkpoint {str(path)!r} has a corrupt safetensors header; export it again"
            ) from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} could not be read as safetensors "
            f"({exc}); it is truncated or damaged"
        ) from None
    meta = header.get("__metadata__") or {}
    return tensors, meta


def _read_pickle(path: Path, trust: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") and not trust:
        raise CheckpointError(
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set, which would make torch "
            "unpickle arbitrary code; unset it, or pass --trust-checkpoint"
        )
    try:
        # weights_only=True explicitly (TorchFix TOR102): the restricted unpickler.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        text = str(exc)
        # The restricted unpickler names the global it refused ("GLOBAL posix.system"):
        # that file needs code to load. Anything else is a damaged or foreign file.
        if "GLOBAL" in text:
            if not trust:
                culprit = _first_global(text)
                raise CheckpointError(
                    f"checkpoint {str(path)!r} needs full unpickling{culprit}, which can run "
                    "arbitrary code; re-save it as a state_dict or safetensors, or pass "
                    "--trust-checkpoint if you trust its origin"
                ) from None
            log.warning("loading %s with full unpickling (--trust-checkpoint)", path)
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} could not be unpickled: "
                    f"{type(exc2).__name__}: {exc2}"
                ) from None
        else:
            # torch's own message opens with advice to retry with weights_only=False: the
            # opposite of ours. Its actual reason follows "WeightsUnpickler error:".
            reason = text.split("WeightsUnpickler error:", 1)[-1]
            lines = [ln.strip() for ln in reason.splitlines() if ln.strip()]
            first = lines[0] if lines else type(exc).__name__
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a readable PyTorch "
                f"checkpoint ({first}); it is truncated, damaged or another "
                "format (use .safetensors, .pt or .pth)"
            ) from None
    return _state_dict_of(obj, path)


def _first_global(text: str) -> str:
    for marker in ("Unsupported global: GLOBAL ", "GLOBAL "):
        if marker in text:
            name = text.split(marker, 1)[1].split()[0].rstrip(".,")
            return f" (it references {name})"
    return ""


def _state_dict_of(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(obj, nn.Module):
        return obj.state_dict(), meta
    if isinstance(obj, dict):
        if isinstance(obj.get("config"), dict):
            meta[CONFIG_METADATA_KEY] = obj["config"]
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors, meta
    raise CheckpointError(
        f"checkpoint {str(path)!r} holds no state_dict (found "
        f"{type(obj).__name__}); save model.state_dict()"
    )


def read_weights(
    path: Path, *, trust_checkpoint: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata (config under ``edge_mer_config``) of a checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _read_pickle(path, trust_checkpoint)
    raise CheckpointError(
        f"checkpoint {str(path)!r}: unknown extension {suffix!r}; use .safetensors, .pt or .pth"
    )


def _load_factory(spec: str) -> Any:
    """``path/file.py:fn`` or ``package.module:fn`` -> the callable."""
    if ":" not in spec:
        raise ModelProtocolError(
            f"--model-factory {spec!r} must be FILE.py:function or package.module:function"
        )
    target, _, fname = spec.rpartition(":")
    try:
        if target.endswith(".py") or os.sep in target:
            fpath = Path(target)
            if not fpath.is_file():
                raise ModelProtocolError(f"--model-factory file {target!r} does not exist")
            mod_name = f"_edge_mer_factory_{abs(hash(str(fpath.resolve())))}"
            mspec = importlib.util.spec_from_file_location(mod_name, fpath)
            if mspec is None or mspec.loader is None:
                raise ModelProtocolError(f"--model-factory {target!r} is not a Python file")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelProtocolError:
        raise
    except Exception as exc:
        raise ModelProtocolError(
            f"--model-factory {spec!r} could not be imported: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, fname, None)
    if not callable(fn):
        raise ModelProtocolError(f"--model-factory {spec!r}: {target!r} has no callable {fname!r}")
    return fn


def _config_candidates(path: Path) -> list[Path]:
    return [
        path.with_suffix(".json"),
        path.with_name(path.stem + ".config.json"),
        path.parent / "config.json",
    ]


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {str(path)!r} must hold a JSON object")
    return data


def _meta_json(raw: str, key: str, checkpoint: Path) -> Any:
    """A safetensors metadata value that holds JSON, or one line naming the key."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r}: metadata {key!r} is not JSON"
        ) from None


def load_model(
    checkpoint: Path,
    *,
    factory: str | None = None,
    config_path: Path | None = None,
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """Build the model (reference or ``factory``) and load the checkpoint's weights into it.

    The config comes from, in rising priority: the checkpoint's metadata, a JSON beside the
    checkpoint (``<name>.json``, ``<name>.config.json``, ``config.json``), ``config_path``.
    """
    checkpoint = Path(checkpoint)
    tensors, meta = read_weights(checkpoint, trust_checkpoint=trust_checkpoint)
    config: dict[str, Any] = {}
    raw_cfg = meta.get(CONFIG_METADATA_KEY)
    if isinstance(raw_cfg, str):
        config = _meta_json(raw_cfg, CONFIG_METADATA_KEY, checkpoint)
    elif isinstance(raw_cfg, dict):
        config = raw_cfg
    if config_path is None:
        config_path = next((p for p in _config_candidates(checkpoint) if p.is_file()), None)
    if config_path is not None:
        config = {**config, **read_json(config_path, "--model-config")}

    if factory:
        build_fn = _load_factory(factory)
        origin = f"--model-factory {factory!r}"
    else:
        if not config:
            raise CheckpointError(
                f"checkpoint {str(checkpoint)!r} carries no model config: "
                "pass --model-config cfg.json (and --model-factory for your "
                "own architecture)"
            )
        from edge_mer.convert.registry import build as build_fn

        origin = f"the registry model {config.get('arch', 'cnn_rnn')!r}"
    try:
        model = build_fn(dict(config))
    except InputError:
        raise
    except Exception as exc:
        raise ModelProtocolError(
            f"{origin} failed to build the model: {type(exc).__name__}: {exc}"
        ) from None
    spec, labels, names = model_spec(model, origin)
    kind = model_state_kind(model, origin)
    _load_weights(model, tensors, checkpoint)
    model.eval()
    probe_protocol(model, spec, len(labels), origin)
    spotter = None
    raw_spotter = meta.get(SPOTTER_METADATA_KEY)
    if isinstance(raw_spotter, str):
        spotter = _meta_json(raw_spotter, SPOTTER_METADATA_KEY, checkpoint)
    return LoadedModel(
        model,
        config,
        checkpoint,
        factory or "edge_mer.convert.models:build",
        spec,
        labels,
        names,
        kind,
        spotter if isinstance(spotter, dict) else None,
    )


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k} {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for what, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        ):
            if items:
                more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
                parts.append(f"{what}: {', '.join(items[:4])}{more}")
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the model: "
            f"{'; '.join(parts)}; check --model-config/--model-factory"
        )
    model.load_state_dict(tensors, strict=True)
