"""``edge-mer datasets summary|check|maps`` as a new user meets them."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_mer.cli import app, common
from tests.calibration.datasets import copies

PREFIX = "edge-mer: error:"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "DEBUG", False)


def run(*args: object):
    return CliRunner().invoke(app, ["datasets", *[str(a) for a in args]])


def bad_input(result, *names: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(PREFIX)]
    assert len(lines) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]}"
    return lines[0]


def test_summary_table_and_json(roots, tmp_path) -> None:
    out = tmp_path / "casme2.json"
    r = run("summary", "casme2", roots["casme2"], "--label-map", "megc3", "--json", out)
    assert r.exit_code == 0, r.output
    assert "negative" in r.stdout and "156 samples of 24 subjects" in r.stdout
    assert "erratum casme2/04/EP12_01f" in r.stdout
    data = json.loads(out.read_text())
    assert (data["samples"], data["subjects"], data["missing"]) == (156, 24, [])
    assert data["labels"] == {"negative": 99, "positive": 32, "surprise": 25}
    assert data["errata"][0]["sample"] == "casme2/04/EP12_01f" and data["dropped"] == 99
    r = run("summary", "smic-hs", roots["smic-hs"])
    assert r.exit_code == 0 and "no apex" in r.stdout


def test_summary_of_the_composite(roots, tmp_path) -> None:
    out = tmp_path / "megc.json"
    args = ["--casme2", roots["casme2"], "--samm", roots["samm"], "--smic-hs", roots["smic-hs"]]
    r = run("summary", "megc2019", *args, "--json", out)
    assert r.exit_code == 0, r.output
    assert "442/68" in r.stdout
    data = json.loads(out.read_text())
    assert (data["samples"], data["subjects"], data["missing"]) == (442, 68, [])
    assert data["datasets"]["samm"]["labels"] == {"negative": 92, "positive": 26, "surprise": 15}
    assert {"samples", "subjects", "labels", "missing", "errata"} <= set(data["datasets"]["casme2"])


def test_missing_composite_samples(roots, tmp_path) -> None:
    smic = copies.write_smic(tmp_path / "smic")
    shutil.rmtree(smic / "HS" / "s1" / "micro" / "positive")
    args = ["--casme2", roots["casme2"], "--samm", roots["samm"], "--smic-hs", smic]
    bad_input(run("summary", "megc2019", *args), "smic-hs/s1/s1_po_01", "--allow-missing")
    out = tmp_path / "m.json"
    r = run("summary", "megc2019", *args, "--allow-missing", "--json", out)
    assert r.exit_code == 0 and "MISSING" in r.stdout
    assert "smic-hs/s1/s1_po_01" in json.loads(out.read_text())["missing"]
    r = run("check", "megc2019", *args)
    assert r.exit_code == 1 and "smic-hs/s1/s1_po_01  missing-folder" in r.stdout


def test_check_complete_and_incomplete(roots, tmp_path) -> None:
    r = run("check", "samm", roots["samm"])
    assert r.exit_code == 0 and "159 samples checked, all complete" in r.stdout
    root = copies.write_casme2(tmp_path / "c2", suffix=".csv", rows=copies.casme2_rows()[:4])
    shutil.rmtree(root / "CASME2_RAW_selected" / "sub01" / "EP19_05f")
    (root / "CASME2_RAW_selected" / "sub01" / "EP02_01f" / "img11.jpg").unlink()
    (root / "README.txt").write_text("fps: 100\n")
    out = tmp_path / "check.json"
    r = run("check", "casme2", root, "--json", out)
    assert r.exit_code == 1
    assert "casme2/01/EP19_05f  missing-folder" in r.stdout
    assert "casme2/01/EP02_01f  gap" in r.stdout and "documented at 200 fps" in r.stdout
    report = json.loads(out.read_text())
    assert report["ok"] is False and len(report["failures"]) == 3


def test_maps() -> None:
    r = run("maps")
    assert r.exit_code == 0
    for name in ("megc3", "cdmer3", "casme2-5", "samm-5", "raw"):
        assert f"{name}:" in r.stdout
    r = run("maps", "cdmer3")
    assert "negative    = disgust, fear, sadness" in r.stdout and "megc3:" not in r.stdout


def test_bad_inputs_are_one_line(roots, tmp_path, monkeypatch) -> None:
    bad_input(run("summary", "casme", tmp_path), "'casme'", "casme2")
    bad_input(run("summary", "casme2", tmp_path), "CASME2-coding-20140508.xlsx")
    bad_input(run("summary", "samm", roots["casme2"]), "SAMM_Micro_FACS_Codes_v2.xlsx")
    bad_input(run("summary", "smic-vis", roots["smic-hs"]), "VIS/s1/micro")
    bad_input(run("summary", "casme2", roots["casme2"], "--label-map", "x"), "'x'", "megc3")
    bad_input(run("summary", "smic-hs", roots["smic-hs"], "--label-map", "casme2-5"), "'negative'")
    bad_input(run("summary", "megc2019", "--casme2", roots["casme2"]), "--samm", "--smic-hs")
    bad_input(run("summary", "casme2"), "ROOT")
    sheetless = tmp_path / "c2"
    copies.write_sheet(
        sheetless / "CASME2-coding.csv", [["Subject", "Filename", "Onset"], ["1", "a", "3"]]
    )
    copies.touch_frames(sheetless / "sub01" / "a", ["img3.jpg"])
    bad_input(run("summary", "casme2", sheetless), "['offset', 'emotion']", "'Onset'")
    mismatched = tmp_path / "c3"
    copies.write_sheet(
        mismatched / "CASME2-coding.csv",
        [copies.CASME2_HEADER, ["1", "EP01", "", "3", "4", "5", "", "", "happiness"]],
    )
    copies.touch_frames(mismatched / "sub02" / "EP07", ["img3.jpg"])
    bad_input(run("summary", "casme2", mismatched), "do not match", "sub01/EP01")
    real = builtins.__import__

    def no_openpyxl(name, *args, **kwargs):
        if name == "openpyxl":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openpyxl)
    bad_input(run("summary", "samm", roots["samm"]), "openpyxl", "edge-mer[datasets]")


def test_json_path_is_checked(roots, tmp_path: Path) -> None:
    r = run("summary", "smic-hs", roots["smic-hs"], "--json", tmp_path / "no" / "x.json")
    bad_input(r, "does not exist")
