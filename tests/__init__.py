"""edge-mer's tests; the tree mirrors the package's."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
