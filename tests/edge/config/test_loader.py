"""The generic TOML loader with a model of its own (as the experiment study file uses it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, model_validator

from edge_mer.config.loader import ConfigError, line_of, load_toml_model, validate_data
from edge_mer.config.toml_model import (
    ConfigPath,
    NonEmptyStr,
    TomlModel,
    describe_fields,
    field_error,
    int_tuple,
)
from edge_mer.errors import InputError


class Fold(TomlModel):
    """[split]: how subjects are split."""

    protocol: Literal["loso", "megc2019", "cross"] = Field("loso", description="Protocol.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Seeds.")
    size: int_tuple(2) = Field((32, 32), description="Height, width.")  # type: ignore[valid-type]


class Study(TomlModel):
    """A study file."""

    name: NonEmptyStr = Field(description="Study name.")
    data: ConfigPath = Field(description="Dataset root.")
    epochs: int = Field(10, ge=1, le=1000, description="Epochs.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    split: Fold = Field(default_factory=Fold, description="Split.")

    @model_validator(mode="after")
    def _lr_with_epochs(self) -> Study:
        if self.epochs > 100 and self.lr > 0.01:
            raise field_error("must be <= 0.01 when epochs > 100", "lr")
        return self


def load(tmp_path: Path, text: str) -> Study:
    p = tmp_path / "study.toml"
    p.write_text(text)
    return load_toml_model(p, Study)


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, text)
    assert isinstance(ei.value, InputError) and ei.value.exit_code == 2
    assert "\n" not in str(ei.value)
    return ei.value


def test_a_model_of_its_own_loads_with_paths_resolved(tmp_path: Path) -> None:
    s = load(tmp_path, 'name = "a"\ndata = "casme2"\n[split]\nseeds = [1, 2]\nsize = [48, 40]\n')
    assert s.data == (tmp_path / "casme2").resolve()
    assert s.split.seeds == [1, 2] and s.split.size == (48, 40) and s.lr == 1e-3


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('name = "a"\ndata = "d"\nepoch = 3\n', ":3: epoch", "unknown key; did you mean 'epochs'?"),
        ('name = "a"\ndata = "d"\n[split]\nprotcol = "loso"\n', ":4: split.protcol", "'protocol'"),
        ('name = "a"\ndata = "d"\nepochs = "3"\n', ":3: epochs", "expected an integer, got '3'"),
        ('name = "a"\ndata = "d"\nepochs = 2.0\n', ":3: epochs", "expected an integer, got 2.0"),
        ('name = "a"\ndata = "d"\nlr = true\n', ":3: lr", "expected a number, got True (bool)"),
        ('name = "a"\ndata = "d"\nlr = inf\n', ":3: lr", "expected a finite number, got inf"),
        ('name = "a"\ndata = "d"\nepochs = 0\n', ":3: epochs", "0 is out of range: must be >= 1"),
        ('name = ""\ndata = "d"\n', ":1: name", "must not be empty"),
        ('name = "a"\ndata = 3\n', ":2: data", "expected a path (string), got 3 (int)"),
        ('name = "a"\ndata = "d"\nsplit.protocol = "LOSO"\n', ":3: split.protocol", "'loso'?"),
        ('name = "a"\ndata = "d"\nsplit = {seeds = []}\n', ":3: split.seeds", "must not be empty"),
        ('name = "a"\ndata = "d"\n[split]\nsize = [1]\n', ":4: split.size", "expected [an integer"),
        ('name = "a"\ndata = "d"\n[split]\nsize = [1, "x"]\n', ":4: split.size[1]", "integer"),
        ('name = "a"\ndata = "d"\nsplit = 3\n', ":3: split", "expected a table, got 3 (int)"),
        ('data = "d"\n', ": name", "missing required key; Study name."),
        ('name = "a"\ndata = "d"\nepochs = 200\nlr = 0.1\n', ":4: lr", "<= 0.01 when epochs"),
    ],
)
def test_every_problem_is_one_line_with_file_line_key(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    e = error(tmp_path, text)
    assert str(e).startswith(f"{tmp_path / 'study.toml'}{where}: "), str(e)
    assert message in str(e)


def test_a_misspelt_key_wins_over_the_missing_one_it_hides(tmp_path: Path) -> None:
    e = error(tmp_path, 'nam = "a"\ndata = "d"\n')
    assert e.key == "nam" and e.line == 1 and "did you mean 'name'?" in str(e)


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    e = error(tmp_path, 'name = "a"\ndata = = 1\n')
    assert e.line == 2 and "TOML syntax error" in str(e)
    with pytest.raises(ConfigError, match=r"nope.toml: no such file"):
        load_toml_model(tmp_path / "nope.toml", Study)


def test_dicts_validate_without_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^study: epochs: 5000 is out of range: must be <= 1000"):
        validate_data({"name": "a", "data": "/d", "epochs": 5000}, Study, origin="study")


def test_line_of_knows_tables_dotted_keys_inline_tables() -> None:
    text = '# c\na = 1\n[t.u]\nb = 2\n"c" = 3\n[t]\nu.d = 4\nv = { w = 5 }\n'
    assert line_of(text, "a") == 2
    assert line_of(text, "t.u.b") == 4 and line_of(text, "t.u.c") == 5
    assert line_of(text, "t.u.d") == 7
    assert line_of(text, "t.v.w") == 8  # inside an inline table: the line that opens it
    assert line_of(text, "t.u.missing") == 3  # a missing key points at its table
    assert line_of(text, "nowhere") is None


def test_describe_and_write_back(tmp_path: Path) -> None:
    rows = describe_fields(Study)
    assert [r[0] for r in rows] == [
        "name",
        "data",
        "epochs",
        "lr",
        "split.protocol",
        "split.seeds",
        "split.size",
    ]
    assert rows[2][1:] == ("an integer, 1..1000", "10", "Epochs.")
    assert rows[0][2] == "required" and all(r[3] for r in rows)
    s = load(tmp_path, 'name = "a"\ndata = "d"\n[split]\nseeds = [3]\n')
    again = load(tmp_path, s.to_toml("a study"))
    assert again == s and again.flatten()["split.seeds"] == [3]
