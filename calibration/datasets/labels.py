"""Emotion words and the named label maps of the field.

Sheets spell one emotion several ways ("Other", "others", "happy", "Happiness", "sad").
:func:`normalise_emotion` is the one place that turns them into the canonical words of
:data:`CANONICAL`; every label map is defined on those words, so a spelling variant can
never fall through a map. A word that no map knows is an error (exit 2), never a silent drop.

=========  ==================================================================================
map        definition (canonical emotion -> label; "dropped" samples leave the protocol)
=========  ==================================================================================
megc3      negative = disgust, repression, anger, contempt, fear, sadness; positive =
           happiness; surprise = surprise; others dropped (MEGC 2019's three classes;
           SMIC's negative/positive/surprise pass through)
cdmer3     the cross-database benchmark's CASME II relabelling (Zong et al., CDMER):
           negative = disgust, fear, sadness; positive = happiness; surprise = surprise;
           repression and others dropped (anger and contempt, absent from CASME II and SMIC,
           dropped too)
casme2-5   happiness, disgust, repression, surprise, others (fear and sadness dropped)
samm-5     anger, contempt, happiness, surprise, others (disgust, fear, sadness dropped)
raw        every canonical emotion is its own label
=========  ==================================================================================

Use :func:`get_map` and :func:`apply_map` (samples -> :class:`Labelled` samples, the
dropped ones apart); :func:`describe_maps` prints the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edge_mer.calibration.datasets.schema import Sample
from edge_mer.errors import InputError

__all__ = [
    "CANONICAL",
    "LABEL_MAPS",
    "LabelMap",
    "LabelMapError",
    "Labelled",
    "apply_map",
    "describe_maps",
    "get_map",
    "normalise_emotion",
]

# Canonical words: the seven CASME II / SAMM / CAS(ME)^3 emotions, "others", and SMIC's
# three folder labels (SMIC is annotated in three classes only).
CANONICAL = (
    "happiness",
    "disgust",
    "repression",
    "surprise",
    "fear",
    "sadness",
    "anger",
    "contempt",
    "others",
    "negative",
    "positive",
)
_SPELLINGS = {
    "happy": "happiness",
    "happiness": "happiness",
    "disgust": "disgust",
    "disgusted": "disgust",
    "repression": "repression",
    "repressed": "repression",
    "surprise": "surprise",
    "surprised": "surprise",
    "sur": "surprise",
    "fear": "fear",
    "afraid": "fear",
    "sad": "sadness",
    "sadness": "sadness",
    "anger": "anger",
    "angry": "anger",
    "contempt": "contempt",
    "other": "others",
    "others": "others",
    "negative": "negative",
    "ne": "negative",
    "positive": "positive",
    "po": "positive",
}


class LabelMapError(InputError):
    """An emotion no map knows, or a map name that does not exist."""


def normalise_emotion(text: str, *, strict: bool = True) -> str:
    """The canonical word for a sheet's emotion text (case, spaces and spelling variants
    folded). Unknown text raises :class:`LabelMapError` when ``strict``, else comes back
    lower-cased and stripped."""
    key = " ".join(str(text).split()).lower()
    word = _SPELLINGS.get(key)
    if word is None:
        if strict:
            raise LabelMapError(
                f"emotion {text!r} is not one that edge-mer's label maps know "
                f"({', '.join(CANONICAL)}); fix the sheet cell or add the spelling to "
                "edge_mer.calibration.datasets.labels"
            )
        return key
    return word


@dataclass(frozen=True)
class LabelMap:
    """A named map from canonical emotions to labels. ``labels`` is the label order (the
    index a model's logit uses); ``mapping`` sends every canonical emotion the map knows to a
    label or to ``None`` (dropped). Emotions outside ``mapping`` are unknown to the map."""

    name: str
    labels: tuple[str, ...]
    mapping: Mapping[str, str | None]
    description: str

    def label(self, emotion: str) -> str | None:
        """The label of a sheet's emotion text, ``None`` if the map drops it.

        Raises :class:`LabelMapError` for text no map knows, or an emotion this map does not
        cover (for example SMIC's "negative" under ``casme2-5``)."""
        word = normalise_emotion(emotion)
        if word not in self.mapping:
            known = ", ".join(sorted(self.mapping))
            raise LabelMapError(
                f"label map {self.name!r} does not know the emotion {emotion!r} (it knows "
                f"{known}); choose a map for this dataset (edge-mer datasets maps)"
            )
        return self.mapping[word]

    def definition(self) -> list[tuple[str, list[str]]]:
        """(label, emotions) per label in label order, then ("dropped", emotions)."""
        rows = [(lab, [e for e in CANONICAL if self.mapping.get(e) == lab]) for lab in self.labels]
        dropped = [e for e in CANONICAL if e in self.mapping and self.mapping[e] is None]
        return [*rows, ("dropped", dropped)]


def _make(
    name: str, groups: Mapping[str, Iterable[str]], dropped: Iterable[str], description: str
) -> LabelMap:
    mapping: dict[str, str | None] = {}
    for label, emotions in groups.items():
        for e in emotions:
            mapping[e] = label
    for e in dropped:
        mapping[e] = None
    assert set(mapping) <= set(CANONICAL), set(mapping) - set(CANONICAL)
    return LabelMap(name, tuple(groups), mapping, description)


LABEL_MAPS: dict[str, LabelMap] = {
    m.name: m
    for m in (
        _make(
            "megc3",
            {
                "negative": (
                    "disgust",
                    "repression",
                    "anger",
                    "contempt",
                    "fear",
                    "sadness",
                    "negative",
                ),
                "positive": ("happiness", "positive"),
                "surprise": ("surprise",),
            },
            ("others",),
            "MEGC 2019's three classes; others dropped",
        ),
        _make(
            "cdmer3",
            {
                "negative": ("disgust", "fear", "sadness", "negative"),
                "positive": ("happiness", "positive"),
                "surprise": ("surprise",),
            },
            ("repression", "others", "anger", "contempt"),
            "the CDMER benchmark's CASME II relabelling; repression and others dropped",
        ),
        _make(
            "casme2-5",
            {e: (e,) for e in ("happiness", "disgust", "repression", "surprise", "others")},
            ("fear", "sadness"),
            "CASME II's five-class setting; fear and sadness dropped",
        ),
        _make(
            "samm-5",
            {e: (e,) for e in ("anger", "contempt", "happiness", "surprise", "others")},
            ("disgust", "fear", "sadness"),
            "SAMM's five-class setting; disgust, fear and sadness dropped",
        ),
        _make("raw", {e: (e,) for e in CANONICAL}, (), "every emotion is its own label"),
    )
}


def get_map(name: str) -> LabelMap:
    """The label map called ``name``; :class:`LabelMapError` lists the names otherwise."""
    try:
        return LABEL_MAPS[name]
    except KeyError:
        raise LabelMapError(
            f"no label map {name!r}: choose one of {', '.join(LABEL_MAPS)}"
        ) from None


def describe_maps(names: Iterable[str] | None = None) -> str:
    """The definitions as text, one block per map (what ``edge-mer datasets maps`` prints)."""
    blocks = []
    for name in names or LABEL_MAPS:
        m = get_map(name)
        lines = [f"{m.name}: {m.description}"]
        if all(m.mapping[e] == e for e in m.mapping):
            lines.append(f"  labels      = {', '.join(m.labels)}")
        else:
            for label, emotions in m.definition():
                if label == "dropped" and not emotions:
                    continue
                lines.append(f"  {label:<11} = {', '.join(emotions) or '-'}")
        blocks.append("\n".join(lines))
    folded = ", ".join(f"{k} -> {v}" for k, v in _SPELLINGS.items() if k != v)
    blocks.append(
        "Sheet spellings are folded first (case and spaces ignored): " + folded + ". "
        "Any other word is refused, never dropped."
    )
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class Labelled:
    """A sample with the label a protocol scores it by (a label map's, or an official
    list's). Protocols and metrics read ``id``, ``dataset``, ``subject_key`` and ``label``."""

    sample: Sample
    label: str

    @property
    def id(self) -> str:
        return self.sample.id

    @property
    def dataset(self) -> str:
        return self.sample.dataset

    @property
    def subject(self) -> str:
        return self.sample.subject

    @property
    def subject_key(self) -> str:
        return self.sample.subject_key


def apply_map(
    samples: Iterable[Sample], label_map: LabelMap | str
) -> tuple[list[Labelled], list[Sample]]:
    """(labelled samples, dropped samples) under ``label_map`` (a map or its name), in the
    input order. Raises :class:`LabelMapError` at the first emotion the map does not know."""
    m = get_map(label_map) if isinstance(label_map, str) else label_map
    kept: list[Labelled] = []
    dropped: list[Sample] = []
    for s in samples:
        try:
            label = m.label(s.emotion)
        except LabelMapError as e:
            raise LabelMapError(f"{s.id}: {e}") from None
        if label is None:
            dropped.append(s)
        else:
            kept.append(Labelled(s, label))
    return kept, dropped
