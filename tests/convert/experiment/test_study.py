"""Study files: every bad key or value is one line with file, line and key; exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_mer.cli import app
from edge_mer.config.loader import ConfigError
from edge_mer.convert.experiment.study import load_study


def _one_line_error(path: Path) -> str:
    res = CliRunner().invoke(app, ["experiment", "run", str(path), "--out", str(path.parent / "o")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert not (path.parent / "o").exists(), "nothing is written for a bad study"
    return lines[0]


def test_a_good_study_loads_with_defaults(write_study) -> None:
    study = load_study(write_study())
    assert study.protocol.kind == "loso" and study.train.selection == "inner-val"
    assert study.deploy.int8 and study.model[0].arch == "cnn_lstm"
    assert study.digest() == load_study(write_study("again.toml")).digest()


def test_digest_ignores_roots_but_not_what_is_computed(write_study, tmp_path: Path) -> None:
    a = load_study(write_study())
    b = load_study(write_study("b.toml", seeds="[0, 1]"))
    assert a.digest() != b.digest()
    moved = write_study("moved.toml").read_text().replace(str(a.data["casme2"]), "/elsewhere")
    (tmp_path / "moved2.toml").write_text(moved)
    assert load_study(tmp_path / "moved2.toml").digest() == a.digest()


def test_streams_off_keeps_the_digest_and_on_changes_every_job_hash(write_study) -> None:
    from edge_mer.convert.experiment.jobs import FoldSpec, Job

    off = load_study(write_study())
    # This study's digest before [train] streams existed (main at 63d6948): studies that
    # do not turn it on keep their digests, job hashes and --resume.
    assert off.digest() == "429d45108a30b34b"
    assert load_study(write_study("off.toml", extra="streams = false")).digest() == off.digest()
    on = load_study(write_study("on.toml", extra="streams = true"))
    assert on.train.streams and on.digest() != off.digest()
    fold = FoldSpec("casme2_01", ("casme2/02",), (), ("casme2/01",), ("a",), (), ("b",))
    assert Job("lstm", 0, fold, on.digest()).hash != Job("lstm", 0, fold, off.digest()).hash


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("selection", "inner-vall"), "train.selection: 'inner-vall' is not one of"),
        (("[train]", "[train]\nhead_epoch = 3"), "train.head_epoch: unknown key; did you mean"),
        (('kind = "loso"', 'kind = "lso"'), "protocol.kind"),
        (('dataset = "casme2"', 'dataset = "casme9"'), "protocol: 'casme9' is no dataset"),
        (("seeds = [0]", "seeds = [0, 0]"), "train.seeds: seeds [0, 0] repeat a seed"),
        (("seeds = [0]", 'seeds = ["0"]'), "train.seeds"),
        (('arch = "cnn_lstm"', 'arch = "cnn_lstm"\nfactory = "x:y"'), "exactly one of arch"),
    ],
)
def test_bad_keys_and_values_name_the_key(write_study, edit, expected: str) -> None:
    path = write_study()
    old, new = edit
    text = path.read_text()
    if old == "selection":
        text = text.replace('selection = "inner-val"', f'selection = "{new}"')
    else:
        assert old in text
        text = text.replace(old, new, 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert expected in str(err.value)
    line = _one_line_error(path)
    assert str(path) in line and expected in line


def test_selection_on_test_subjects_is_refused_with_the_reason(write_study) -> None:
    path = write_study(selection="best-epoch")
    line = _one_line_error(path)
    assert "train.selection: 'best-epoch' is refused" in line
    assert "inflates UF1" in line and "inner-val" in line


def test_cross_without_its_datasets_points_at_the_protocol(write_study) -> None:
    path = write_study(protocol='kind = "cross"\ntrain = "casme2"')
    line = _one_line_error(path)
    assert "protocol.test: kind = 'cross' needs this key" in line


def test_a_protocol_dataset_without_a_root_is_named(write_study) -> None:
    path = write_study()
    path.write_text(path.read_text().replace("casme2 = ", "samm = ", 1))
    line = _one_line_error(path)
    assert "data: the protocol reads casme2: add casme2 = ROOT" in line


def test_keys_lists_every_key_with_its_description() -> None:
    res = CliRunner().invoke(app, ["experiment", "keys"])
    assert res.exit_code == 0, res.output
    for key in ("protocol.kind", "train.selection", "train.streams", "deploy.int8", "data"):
        assert key in res.output
