"""Named maps from dataset emotion words to model labels."""

from __future__ import annotations

# CASME II / SAMM 'Estimated Emotion' -> the three MEGC 2019 classes, "others" as the
# background class a streaming model needs.
MEGC3_WITH_BACKGROUND = {
    "happiness": "positive",
    "disgust": "negative",
    "repression": "negative",
    "sadness": "negative",
    "fear": "negative",
    "anger": "negative",
    "contempt": "negative",
    "surprise": "surprise",
    "others": "none",
}
