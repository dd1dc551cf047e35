"""The study file: one TOML that says what to compare, on which data, under which protocol.

```toml
[data]                      # dataset roots by reader name (relative to this file)
casme2 = "/data/CASME2"
smic-hs = "/data/SMIC"
[protocol]
kind = "loso"               # loso | megc2019 | cross | leave-one-dataset-out
dataset = "casme2"          # loso; cross: train = "casme2", test = ["smic-hs"]
label_map = "megc3"
fps = 0                     # 0: each model's own fps; N: resample every dataset to N fps
[[model]]                   # one table per architecture
name = "cnn-lstm"
arch = "cnn_lstm"           # or factory = "mymodel.py:build" with config = {...}
[train]
cnn_epochs = 8
head_epochs = 30
seeds = [0, 1, 2]
selection = "inner-val"     # inner-val | fixed
streams = false             # true: also train on ROOT/streams/ (training subjects' only)
[deploy]
int8 = true
```
Every key has a description (``edge-mer experiment keys``); unknown keys are refused with
their path and a suggestion. :meth:`Study.digest` is the hash that names what a job
computes: a finished job whose marker holds another hash is redone on ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_mer.config.loader import load_toml_model
from edge_mer.config.toml_model import ConfigPath, TomlModel, field_error

DATASETS = ("casme2", "samm", "smic-hs", "smic-vis", "smic-nir", "casme3")
PROTOCOLS = ("loso", "megc2019", "cross", "leave-one-dataset-out")
RUNTIMES = ("pytorch", "onnxruntime-fp32", "onnxruntime-int8")
# Selection rules that read the test fold: refused with the reason, never silently renamed.
_PEEKING = {
    "test": "it picks the epoch on the left-out subjects",
    "best-test": "it picks the epoch on the left-out subjects",
    "best-epoch": "in public LOSO code the best epoch is the one that scores best on the "
    "left-out subject",
    "oracle": "it reads the test labels",
    "last-best": "it picks the epoch on the left-out subjects",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StudyInfo(TomlModel):
    name: str = Field("study", description="A name for the study, shown in reports.")
    description: str = Field("", description="Free text, shown in reports.")


class ProtocolSection(TomlModel):
    kind: Literal["loso", "megc2019", "cross", "leave-one-dataset-out"] = Field(
        description="loso: one fold per subject of `dataset`; megc2019: 68-fold LOSO over "
        "the official composite list; cross: train on all of `train`, test on all of each "
        "`test`; leave-one-dataset-out: one fold per dataset of `datasets`."
    )
    dataset: str | None = Field(None, description="loso: the dataset (a [data] key).")
    train: str | None = Field(None, description="cross: the training dataset.")
    test: list[str] = Field(default_factory=list, description="cross: the test datasets.")
    datasets: list[str] = Field(
        default_factory=list, description="leave-one-dataset-out: the datasets pooled."
    )
    label_map: str = Field(
        "megc3",
        description="Label map applied to every dataset (edge-mer datasets maps); "
        "megc2019 uses the official list's labels.",
    )
    fps: Annotated[float, Field(ge=0, le=1000)] = Field(
        0,
        description="0: each model at its own fps; N: every dataset resampled to N fps "
        "by seconds (the models' fps is then overridden to N).",
    )
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.2,
        description="Share of each fold's training subjects held out (per dataset, at least "
        "one) as its inner-validation subjects (selection = inner-val).",
    )
    face: Literal["haar", "none"] = Field(
        "haar",
        description="Face crop when clips are cached: haar = the device's detector on each "
        "clip's first frame, locked for the clip; none = whole frames (cropped releases, "
        "synthetic data).",
    )
    allow_missing: bool = Field(
        False, description="megc2019: run on a copy that lacks samples of the official list."
    )

    @model_validator(mode="after")
    def _needs(self) -> ProtocolSection:
        need = {
            "loso": ("dataset",),
            "cross": ("train", "test"),
            "leave-one-dataset-out": ("datasets",),
            "megc2019": (),
        }[self.kind]
        for key in need:
            if not getattr(self, key):
                raise field_error(f"kind = {self.kind!r} needs this key", key)
        if self.kind == "cross" and self.train in self.test:
            raise field_error(f"names the training dataset {self.train!r}", "test")
        if self.kind == "leave-one-dataset-out" and len(set(self.datasets)) < 2:
            raise field_error("leave-one-dataset-out needs at least two datasets", "datasets")
        return self

    def dataset_names(self) -> list[str]:
        """The datasets this protocol reads, in order."""
        if self.kind == "loso":
            return [str(self.dataset)]
        if self.kind == "cross":
            return [str(self.train), *self.test]
        if self.kind == "megc2019":
            return ["casme2", "samm", "smic-hs"]
        return list(self.datasets)


class ModelSection(TomlModel):
    name: str = Field(description="Row name in the results; also the job folder's name.")
    arch: str | None = Field(None, description="A registry architecture (edge-mer train --help).")
    factory: str | None = Field(
        None, description="Your model: FILE.py:function or package.module:function."
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Model config (overrides of the registry defaults)."
    )
    train_fn: str | None = Field(
        None,
        description="Your training function FILE.py:function, called as "
        "fn(train, config, *, options, validation, factory[, streams]) -> TrainResult "
        "(see README).",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise field_error(
                f"{v!r}: use letters, digits, '_', '.', '-' (it names a folder), at most 64"
            )
        return v

    @field_validator("factory", "train_fn")
    @classmethod
    def _resolve_file(cls, v: str | None, info: ValidationInfo) -> str | None:
        """``FILE.py:function`` with FILE relative to the study file's folder."""
        if v is None or ".py:" not in v:
            return v
        file, _, fn = v.rpartition(":")
        path = Path(file).expanduser()
        if not path.is_absolute():
            path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
        if not path.is_file():
            raise field_error(f"{str(path)!r} does not exist")
        return f"{path.resolve()}:{fn}"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.arch is None) == (self.factory is None):
            raise field_error(f"model {self.name!r}: give exactly one of arch or factory", "arch")
        return self


class TrainSection(TomlModel):
    cnn_epochs: Annotated[int, Field(ge=0, le=1000)] = Field(6, description="Stage-1 epochs.")
    head_epochs: Annotated[int, Field(ge=1, le=10000)] = Field(
        30, description="Stage-2 (temporal head) epochs: the maximum with inner-val."
    )
    finetune_epochs: Annotated[int, Field(ge=0, le=1000)] = Field(
        0, description="Optional end-to-end fine-tune epochs after stage 2."
    )
    batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(64, description="Batch size.")
    lr: Annotated[float, Field(gt=0, le=1)] = Field(2e-3, description="Learning rate.")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], min_length=1, description="One run per seed."
    )
    selection: str = Field(
        "inner-val",
        description="inner-val: keep the epoch that scores best (UF1) on the fold's "
        "validation subjects; fixed: the last epoch. Nothing ever looks at test subjects.",
    )

    streams: bool = Field(
        False,
        description="Also train on the continuous streams in each training dataset's "
        "ROOT/streams/ (edge-mer synth --subject-streams; one video per subject with its "
        "coded events): the background class 'none' (and 'macro' when they hold "
        "macro-expressions) learns what a stream holds between micro-expressions, and the "
        "spotter's settings are chosen on them. Only the fold's training subjects' streams "
        "are read; the protocol's classes alone are scored.",
    )

    @field_validator("selection")
    @classmethod
    def _honest(cls, v: str) -> str:
        if v in _PEEKING:
            raise field_error(
                f"{v!r} is refused: {_PEEKING[v]}, which inflates UF1 (by 0.06-0.14 on the "
                "composite in re-runs of public models); use 'inner-val' (validation "
                "subjects drawn from the fold's training subjects) or 'fixed'"
            )
        if v not in ("inner-val", "fixed"):
            raise field_error(f"{v!r} is not one of 'inner-val', 'fixed'")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise field_error(f"seeds {v} repeat a seed")
        return v


class DeploySection(TomlModel):
    int8: bool = Field(True, description="Per fold: calibrate on training subjects, score INT8.")
    calib_method: Literal["minmax", "entropy", "percentile"] = Field(
        "entropy", description="INT8 calibration method."
    )
    calib_clips: Annotated[int, Field(ge=2, le=10000)] = Field(
        64, description="At most this many training-subject clips calibrate each fold."
    )
    min_agreement: Annotated[float, Field(ge=0, le=1)] = Field(
        0.98, description="INT8-vs-FP32 top-1 agreement convert requires on held-out clips."
    )


class Study(TomlModel):
    study: StudyInfo = Field(default_factory=StudyInfo, description="Name and description.")
    data: dict[str, ConfigPath] = Field(description="Dataset roots by reader name.")
    protocol: ProtocolSection = Field(description="How samples split into folds.")
    model: list[ModelSection] = Field(min_length=1, description="The architectures compared.")
    train: TrainSection = Field(default_factory=TrainSection, description="Training.")
    deploy: DeploySection = Field(default_factory=DeploySection, description="INT8 per fold.")

    @field_validator("data")
    @classmethod
    def _known(cls, v: dict[str, Path]) -> dict[str, Path]:
        for name in v:
            if name not in DATASETS:
                raise field_error(f"unknown dataset {name!r}; readers: {', '.join(DATASETS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        for name in self.protocol.dataset_names():
            if name not in DATASETS:
                raise field_error(
                    f"{name!r} is no dataset; readers: {', '.join(DATASETS)}", "protocol"
                )
            if name not in self.data:
                raise field_error(f"the protocol reads {name}: add {name} = ROOT", "data")
        names = [m.name for m in self.model]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise field_error(f"model names repeat: {dup}", "model")
        return self

    def digest(self) -> str:
        """sha256 (16 hex) of everything that decides what the jobs compute.

        Dataset roots are left out (a copy moved elsewhere gives the same results); the
        samples themselves are hashed per job by their ids. A user's ``FILE.py:function``
        counts by the file's content, not its path: moving the study keeps its results,
        editing the model redoes them.
        """
        body = self.model_dump(mode="json", exclude={"data": True, "study": True})
        if not body["train"]["streams"]:
            del body["train"]["streams"]  # off: the digest of a study from before the key
        for m in body["model"]:
            for key in ("factory", "train_fn"):
                ref = m.get(key)
                if ref and ".py:" in ref:
                    file, _, fn = ref.rpartition(":")
                    content = hashlib.sha256(Path(file).read_bytes()).hexdigest()
                    m[key] = f"{Path(file).name}@{content}:{fn}"
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_study(path: Path) -> Study:
    """The study file at ``path``; one ConfigError line (file:line: key: fix) if it is bad."""
    return load_toml_model(path, Study)
