"""The bundle: a directory that holds everything the device needs (DESIGN §3).

``Bundle.open`` reads and checks a bundle (manifest schema, every file's sha256);
``BundleWriter`` builds one in a staging directory beside the target and renames it into
place only when the manifest is complete, so a failed or interrupted convert never
leaves a directory that looks like a bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mer.errors import BundleError, InputError
from edge_mer.manifest import GRAPH_NAMES, SCHEMA, STATE_KINDS, Manifest, validate_manifest

log = logging.getLogger(__name__)

__all__ = [
    "GRAPH_NAMES",
    "MANIFEST",
    "SCHEMA",
    "STATE_KINDS",
    "Bundle",
    "BundleWriter",
    "StateSpec",
    "sha256_file",
    "write_atomic",
]

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename.

    Readers see either the old file or the whole new one, never a partial write.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: ``shape`` excludes the leading batch axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


class Bundle:
    """A verified bundle on disk. Construct with :meth:`open`.

    ``manifest`` is the JSON as read (every key, a newer writer's too); ``spec`` is the
    same manifest validated (:class:`~edge_mer.manifest.Manifest`), the typed view.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], manifest_sha256: str) -> None:
        self.path = path
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256
        self.spec: Manifest = _check_manifest(manifest, path / MANIFEST)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify_hashes: bool = True) -> Bundle:
        """Read ``path/manifest.json`` and check the schema and, by default, every hash.

        Raises:
            BundleError: the directory, the manifest or a listed file is missing or wrong.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(
                f"bundle {str(root)!r} is not a directory: pass the folder "
                "that `edge-mer convert --out` wrote"
            )
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(
                f"{str(mpath)!r} is missing: {str(root)!r} is not a complete "
                "bundle; convert again with `edge-mer convert ... --out DIR`"
            )
        raw = mpath.read_bytes()
        try:
            manifest = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{str(mpath)!r} is not valid JSON ({exc}); convert again") from None
        bundle = cls(root, manifest, hashlib.sha256(raw).hexdigest())
        if verify_hashes:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every listed file against its sha256; raise :class:`BundleError` on mismatch."""
        for name, entry in self.files().items():
            fpath = self.path / entry["path"]
            if not fpath.is_file():
                raise BundleError(f"bundle file {str(fpath)!r} ({name}) is missing; convert again")
            actual = sha256_file(fpath)
            if actual != entry["sha256"]:
                raise BundleError(
                    f"bundle file {str(fpath)!r} ({name}) fails its hash check "
                    f"(sha256 {actual[:12]}…, manifest says {entry['sha256'][:12]}…): the file "
                    "was changed or damaged after convert; convert again"
                )

    def files(self) -> dict[str, dict[str, Any]]:
        """Every hashed file: graphs and extra artifacts, name -> {path, sha256, ...}."""
        out = dict(self.manifest["graphs"])
        out.update(self.manifest.get("artifacts", {}))
        return out

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def input(self) -> dict[str, Any]:
        return dict(self.manifest["input"])

    @property
    def state_kind(self) -> str:
        """``"recurrent"`` (the default when the manifest has none) or ``"window"``."""
        return self.spec.state_kind

    @property
    def states(self) -> list[StateSpec]:
        return [StateSpec(s.name, tuple(s.shape), s.dtype) for s in self.spec.state]

    def graph_path(self, name: str) -> Path:
        """Path of graph ``name`` (``encoder``, ``step``, ``clip``, ``encoder_int8``...)."""
        graphs = self.manifest["graphs"]
        if name not in graphs:
            raise BundleError(
                f"bundle {str(self.path)!r} has no graph {name!r}; it has {sorted(graphs)}"
            )
        return self.path / graphs[name]["path"]


def _check_manifest(m: Any, mpath: Path) -> Manifest:
    spec, problem = validate_manifest(m)
    if spec is None:
        raise BundleError(f"{str(mpath)!r}: {problem}; convert again with this edge-mer")
    return spec


class BundleWriter:
    """Builds a bundle in a staging directory; :meth:`commit` moves it into place.

    Use as a context manager: leaving the block with an exception removes the staging
    directory, so nothing half-written remains at ``target``.
    """

    def __init__(self, target: str | os.PathLike[str], *, force: bool = False) -> None:
        self.target = Path(target)
        if self.target.exists():
            if not self.target.is_dir():
                raise InputError(
                    f"output {str(self.target)!r} exists and is not a directory; "
                    "choose another --out"
                )
            if any(self.target.iterdir()) and not force:
                raise InputError(
                    f"output folder {str(self.target)!r} is not empty; choose "
                    "another --out or pass --force to replace it"
                )
        parent = self.target.resolve().parent
        if not parent.is_dir():
            raise InputError(f"the parent folder of --out {str(self.target)!r} does not exist")
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=parent))
        self._committed = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def path(self, rel: str) -> Path:
        """Where to write ``rel`` inside the staging directory (parents are created)."""
        p = self.staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def entry(self, rel: str, **extra: Any) -> dict[str, Any]:
        """A manifest entry for a file already written at ``rel``: path, sha256, size."""
        p = self.staging / rel
        return {"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size, **extra}

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest last, then swap the staging directory into ``target``.
        The manifest is validated as a reader will see it (after a JSON round trip)."""
        _check_manifest(json.loads(json.dumps(manifest)), self.target / MANIFEST)
        write_atomic(self.staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False))
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.staging, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._committed = True
        log.info("bundle written to %s", self.target)
        return self.target


def iter_state_names(manifest: dict[str, Any]) -> Iterator[str]:
    """State tensor names in graph order."""
    for s in manifest["state"]:
        yield s["name"]
