"""Whether an engine on disk may be loaded here: sidecars, checks and engine lookup.

An engine is loaded only with a valid sidecar (``<same name>.json``, written by
:func:`make_sidecar` after a build) whose engine sha256, TensorRT version, compute capability
and ONNX sha256 match this device and bundle (:func:`check_engine`). :func:`find_engine` picks
the best engine for a graph among those on disk. Plain Python like
:mod:`edge_mer.runners.tensorrt.plan`, whose plans and names this module reads; the TensorRT
calls live in :mod:`edge_mer.runners.tensorrt.build`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_mer import __version__
from edge_mer.bundle import Bundle, sha256_file
from edge_mer.errors import EngineError, InputError
from edge_mer.runners.tensorrt.device import ROLES, DeviceFacts, TrtVersion
from edge_mer.runners.tensorrt.plan import (
    EngineName,
    EnginePlan,
    GraphBuild,
    default_engines_dir,
    rebuild_hint,
    sidecar_path,
)

log = logging.getLogger(__name__)

SIDECAR_SCHEMA = 1


def make_sidecar(
    build: GraphBuild,
    plan: EnginePlan,
    engine_sha256: str,
    engine_bytes: int,
    profiles: Mapping[str, Any],
    build_seconds: float,
) -> dict[str, Any]:
    """The record written beside an engine; :func:`check_engine` reads it back."""
    f = plan.facts
    return {
        "schema": SIDECAR_SCHEMA,
        "graph": build.graph,
        "source": build.source,
        "onnx": build.onnx_path.name,
        "onnx_sha256": build.onnx_sha256,
        "engine": build.engine_path.name,
        "engine_sha256": engine_sha256,
        "engine_bytes": engine_bytes,
        "tensorrt": str(f.trt_version),
        "compute_capability": f"{f.compute_capability[0]}.{f.compute_capability[1]}",
        "gpu_name": f.gpu_name,
        "l4t_release": f.l4t_release,
        "precision": build.precision,
        "builder_flags": list(build.builder_flags),
        "network_flags": list(build.network_flags),
        "profile": {k: [list(s) for s in v] for k, v in profiles.items()},
        "batch": asdict(plan.batch),
        "workspace_mib": plan.workspace_mib,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(float(build_seconds), 3),
        "edge_mer": __version__,
    }


def read_sidecar(path: Path, hint: str) -> dict[str, Any]:
    """Read a sidecar; missing or unreadable -> :class:`EngineError` with ``hint``."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EngineError(
            f"engine metadata {str(path)!r} is missing, so the engine cannot be trusted; {hint}"
        ) from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"engine metadata {str(path)!r} is unreadable ({exc}); {hint}") from None
    needed = ("graph", "source", "onnx_sha256", "engine_sha256", "tensorrt", "compute_capability")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        raise EngineError(f"engine metadata {str(path)!r} is incomplete; {hint}")
    return data


def check_engine(
    engine_path: Path,
    sidecar: Path | None,
    facts: DeviceFacts,
    bundle: Bundle,
    engines_dir: Path | None = None,
) -> None:
    """Refuse an engine this device must not load.

    Raises:
        EngineError: missing engine or sidecar, engine bytes that do not match the sidecar's
            sha256, another TensorRT version, another compute capability, or an ONNX that
            changed since the build. The message ends with the rebuild command.
    """
    engine_path = Path(engine_path)
    hint = rebuild_hint(bundle.path, engines_dir if engines_dir else engine_path.parent)
    if not engine_path.is_file():
        raise EngineError(f"engine {str(engine_path)!r} does not exist; {hint}")
    meta = read_sidecar(sidecar or sidecar_path(engine_path), hint)
    actual = sha256_file(engine_path)
    if actual != meta["engine_sha256"]:
        raise EngineError(
            f"engine {str(engine_path)!r} does not match its metadata (sha256 "
            f"{actual[:12]}…, recorded {str(meta['engine_sha256'])[:12]}…): it is "
            f"corrupt or was replaced; {hint}"
        )
    built = TrtVersion.parse(str(meta["tensorrt"]))
    if (built.major, built.minor, built.patch) != (
        facts.trt_version.major,
        facts.trt_version.minor,
        facts.trt_version.patch,
    ):
        raise EngineError(
            f"engine {engine_path.name!r} was built with TensorRT {built}, this "
            f"device has TensorRT {facts.trt_version}; {hint}"
        )
    cc = f"{facts.compute_capability[0]}.{facts.compute_capability[1]}"
    if str(meta["compute_capability"]) != cc:
        raise EngineError(
            f"engine {engine_path.name!r} was built for compute capability "
            f"{meta['compute_capability']} ({meta.get('gpu_name', '?')}), this GPU "
            f"is {cc} ({facts.gpu_name}); {hint}"
        )
    graphs = bundle.manifest["graphs"]
    src = str(meta["source"])
    if src not in graphs or graphs[src]["sha256"] != meta["onnx_sha256"]:
        raise EngineError(
            f"engine {engine_path.name!r} was built from another {src!r} ONNX "
            f"than the one in bundle {str(bundle.path)!r} (the model changed); "
            f"{hint}"
        )
    if meta.get("gpu_name") and meta["gpu_name"] != facts.gpu_name:
        log.warning(
            "engine %s was built on %s, this GPU is %s (same compute capability %s)",
            engine_path.name,
            meta["gpu_name"],
            facts.gpu_name,
            cc,
        )


_PRECISION_PREFERENCE = {"int8": 0, "fp16": 1, "fp32": 2}


def find_engine(
    bundle: Bundle,
    graph: str,
    facts: DeviceFacts,
    engines_dir: Path | None = None,
    *,
    precision: str | None = None,
    min_batch: int = 1,
) -> Path:
    """The checked engine for ``graph`` on this device: best precision, then largest batch.

    Raises:
        EngineError: none fits; the message says what exists (other TensorRT, other GPU,
            older model) and how to rebuild.
    """
    if graph not in ROLES:
        raise InputError(f"graph {graph!r} is not one of {list(ROLES)}")
    edir = Path(engines_dir) if engines_dir else default_engines_dir(bundle.path)
    hint = rebuild_hint(bundle.path, edir)
    graphs = bundle.manifest["graphs"]
    shas = {v["sha256"][:12] for k, v in graphs.items() if k == graph or k.startswith(graph + "_")}
    found = [
        (p, n)
        for p in (sorted(edir.glob(f"{graph}-*.engine")) if edir.is_dir() else [])
        if (n := EngineName.parse(p.name)) is not None and n.graph == graph
    ]
    fits = [
        (p, n)
        for p, n in found
        if n.sha12 in shas
        and n.trt == str(facts.trt_version)
        and n.sm == facts.sm
        and n.max_batch >= min_batch
        and (precision is None or n.precision == precision)
    ]
    if fits:
        fits.sort(key=lambda pn: (_PRECISION_PREFERENCE[pn[1].precision], -pn[1].max_batch))
        path = fits[0][0]
        check_engine(path, None, facts, bundle, edir)
        return path
    want = (
        f"TensorRT {facts.trt_version}, sm{facts.sm}"
        + (f", {precision}" if precision else "")
        + f", batch >= {min_batch}"
    )
    if not found:
        raise EngineError(f"no {graph} engine in {str(edir)!r} ({want}); {hint}")
    why = []
    for _, n in found:
        if n.sha12 not in shas:
            why.append(f"{n.filename} (another model)")
        elif n.trt != str(facts.trt_version):
            why.append(f"{n.filename} (TensorRT {n.trt})")
        elif n.sm != facts.sm:
            why.append(f"{n.filename} (sm{n.sm})")
        else:
            why.append(f"{n.filename} ({n.precision}, batch <= {n.max_batch})")
    raise EngineError(
        f"no usable {graph} engine in {str(edir)!r} for {want}; found {', '.join(why)}; {hint}"
    )


def deserialize_failure(engine_path: Path, messages: Iterable[str], hint: str) -> EngineError:
    """The error for an engine TensorRT refused to deserialize (``None`` or an exception)."""
    text = " | ".join(m.strip() for m in messages if m and m.strip())
    if re.search(
        r"kSERIALIZATION_VERSION|[Vv]ersion tag does not match|magicTag|"
        r"[Ss]erialization assertion",
        text,
    ):
        why = "it was serialized by another TensorRT version"
    elif re.search(r"compute capability|different (GPU|device)|[Pp]latform", text):
        why = "it was built for another GPU"
    else:
        why = "TensorRT could not deserialize it"
    detail = f" (TensorRT: {text[:300]})" if text else ""
    return EngineError(f"engine {str(engine_path)!r} cannot be loaded: {why}{detail}; {hint}")
