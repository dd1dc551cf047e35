"""Tiny synthetic datasets and study files for the experiment tests (written once)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

TINY = (
    "{ input = { height = 32, width = 32, window = 6, fps = 50.0 }, width_mult = 0.5, "
    "feature_dim = 16, hidden = 16 }"
)


def study_text(
    data: Path,
    *,
    protocol: str = 'kind = "loso"\ndataset = "casme2"',
    models: str = "",
    seeds: str = "[0]",
    selection: str = "inner-val",
    extra: str = "",
) -> str:
    models = models or f'[[model]]\nname = "lstm"\narch = "cnn_lstm"\nconfig = {TINY}\n'
    return f"""\
[study]
name = "tiny"
[data]
casme2 = "{data / "casme2"}"
smic-hs = "{data / "smic-hs"}"
[protocol]
{protocol}
label_map = "megc3"
face = "none"
validation_fraction = 0.34
{models}
[train]
cnn_epochs = 1
head_epochs = 3
seeds = {seeds}
selection = "{selection}"
{extra}
[deploy]
int8 = true
calib_clips = 8
"""


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic CASME II (4 subjects) and SMIC-HS (3 subjects), 32x32 frames."""
    from edge_mer.calibration.synth_io import synthesize

    out = tmp_path_factory.mktemp("synthetic")
    synthesize(out, layouts=("casme2",), subjects=4, clips_per_emotion=1, size=(32, 32), seed=0)
    synthesize(out, layouts=("smic-hs",), subjects=3, clips_per_emotion=1, size=(32, 32), seed=1)
    return out


@pytest.fixture
def write_study(tmp_path: Path, synthetic: Path):
    def write(name: str = "study.toml", **kw: str) -> Path:
        path = tmp_path / name
        path.write_text(study_text(synthetic, **kw))
        return path

    return write
