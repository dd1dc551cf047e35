"""Fake copies of every dataset with the documented counts, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("openpyxl")

from tests.calibration.datasets import copies


@pytest.fixture(scope="session")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """casme2 (.xlsx), samm (.xlsx, preamble), smic (HS folders), casme3 (.xlsx)."""
    base = tmp_path_factory.mktemp("copies")
    return {
        "casme2": copies.write_casme2(base / "CASME2"),
        "samm": copies.write_samm(base / "SAMM-copy"),
        "smic-hs": copies.write_smic(base / "SMIC"),
        "casme3": copies.write_casme3(base / "CASME3"),
    }
