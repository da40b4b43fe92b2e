"""Natural-language captions for Fashion-MNIST (and the scikit-image photos), built from class names
and attributes measured on each image.

The tiny VLM's generative pre-training (``genrep lco pretrain-vlm``) needs image-caption pairs; the
bundled datasets only have labels. A caption here combines

- a class noun phrase, drawn from several synonyms per class ("a pullover", "a sweater",
  "a jumper"; "a pair of trousers", "a pair of jeans"...);
- attributes computed from the pixels: the tone of the garment (dark / grey / light, from the mean
  brightness of its pixels) and its texture (plain / patterned, from the variation inside it);
- one of several sentence templates.

``class_of_caption`` reads the class back from a (generated) caption: the caption class accuracy
of the generative score. ``caption_triplets`` makes the *text-only* refinement data of the GRSL
experiment: (caption, another caption of the same class, a caption of another class that shares
the first one's template and attributes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from genrep.lco.data import Triplet

# Fashion-MNIST label -> noun phrases (the first one is the class name used in zero-shot prompts).
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("t-shirt", "tee", "top"),
    ("pair of trousers", "pair of pants", "pair of jeans"),
    ("pullover", "sweater", "jumper"),
    ("dress", "gown", "frock"),
    ("coat", "jacket", "parka"),
    ("sandal", "flip-flop", "strappy sandal"),
    ("shirt", "blouse", "button-down shirt"),
    ("sneaker", "trainer", "running shoe"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot", "bootie"),
)
CLASS_NAMES = tuple(s[0] for s in SYNONYMS)
TONES = ("dark", "grey", "light")
PATTERNS = ("plain", "patterned")
TEMPLATES = (
    "A photo of {np}.",
    "{NP} on a black background.",
    "This picture shows {np}.",
    "A grayscale image of {np}.",
    "A product shot of {np}.",
    "Here is {np}.",
)
# Captions of the scikit-image sample photos (``assets.load("skimage-photos")``), for optional mixing.
PHOTO_CAPTIONS: dict[str, tuple[str, ...]] = {
    "astronaut": ("A photo of an astronaut in a white spacesuit.", "An astronaut posing next to a flag."),
    "chelsea": ("A photo of a tabby cat.", "A ginger cat looking to the side."),
    "coffee": ("A cup of coffee on a saucer.", "A photo of a coffee cup with a spoon."),
    "rocket": ("A rocket on its launch pad.", "A photo of a space rocket before launch."),
    "motorcycle": ("A photo of a motorcycle.", "A red motorbike parked indoors."),
    "camera": ("A man with a camera on a tripod.", "A grayscale photo of a cameraman."),
    "hubble_deep_field": ("A photo of distant galaxies.", "A deep field image of the night sky."),
}


@dataclass(frozen=True)
class Attributes:
    tone: str
    pattern: str


def image_attributes(image: np.ndarray) -> Attributes:
    """Tone and texture of a Fashion-MNIST image (uint8 [28, 28], white object on black).

    Tone: mean intensity of the object's pixels (> 20): < 90 dark, < 160 grey, else light.
    Pattern: the mean absolute difference between horizontally/vertically adjacent object pixels
    above 24 (stripes, prints, knit) is "patterned", otherwise "plain".
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(axis=-1)
    obj = x > 20
    if not obj.any():
        return Attributes("dark", "plain")
    mean = float(x[obj].mean())
    tone = "dark" if mean < 90 else ("grey" if mean < 160 else "light")
    both_h = obj[:, 1:] & obj[:, :-1]
    both_v = obj[1:, :] & obj[:-1, :]
    diffs = np.concatenate([np.abs(np.diff(x, axis=1))[both_h], np.abs(np.diff(x, axis=0))[both_v]])
    pattern = "patterned" if diffs.size and float(diffs.mean()) > 24 else "plain"
    return Attributes(tone, pattern)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def noun_phrase(label: int, synonym: int = 0, adjectives: tuple[str, ...] = ()) -> str:
    """``"a dark patterned sweater"``, ``"a pair of light jeans"``, ``"an ankle boot"``."""
    noun = SYNONYMS[label][synonym % len(SYNONYMS[label])]
    adj = " ".join(adjectives)
    if noun.startswith("pair of "):
        return "a pair of " + (f"{adj} " if adj else "") + noun[len("pair of ") :]
    return _article(f"{adj} {noun}" if adj else noun)


def said_attributes(attrs: Attributes, which: int) -> tuple[str, ...]:
    """The adjectives a caption says: 0 none, 1 tone, 2 pattern, 3 both."""
    return ((), (attrs.tone,), (attrs.pattern,), (attrs.tone, attrs.pattern))[which]


def caption(label: int, attrs: Attributes, rng: np.random.Generator) -> str:
    """One random caption of a Fashion-MNIST image: template, synonym and which attributes are said."""
    adjectives = said_attributes(attrs, int(rng.integers(4)))
    return render(int(rng.integers(len(TEMPLATES))), label, int(rng.integers(len(SYNONYMS[label]))), adjectives)


def render(template: int, label: int, synonym: int, adjectives: tuple[str, ...]) -> str:
    np_ = noun_phrase(label, synonym, adjectives)
    return TEMPLATES[template].format(np=np_, NP=np_[0].upper() + np_[1:])


def class_prompts(template: str = "A photo of {np}.") -> list[str]:
    """One text per class for zero-shot classification (the class name, no attributes)."""
    return [template.format(np=noun_phrase(c)) for c in range(len(SYNONYMS))]


_PATTERNS = sorted(
    ((syn.replace("pair of ", ""), label) for label, group in enumerate(SYNONYMS) for syn in group),
    key=lambda x: -len(x[0]),
)


def class_of_caption(text: str) -> int | None:
    """The class a caption names: the earliest synonym in it (longest match at a position; "t-shirt"
    is not read as "shirt"); None if it names none."""
    best: tuple[int, int, int] | None = None  # (position, -length, label)
    low = text.lower()
    for syn, label in _PATTERNS:
        m = re.search(rf"(?<![\w-]){re.escape(syn)}s?(?![\w-])", low)
        if m and (best is None or (m.start(), -len(syn)) < best[:2]):
            best = (m.start(), -len(syn), label)
    return None if best is None else best[2]


def caption_triplets(n: int, seed: int = 0) -> list[Triplet]:
    """``n`` text-only triplets: anchor and positive are two different captions of one class (their
    own template, synonym and attributes); the hard negative names another class with the anchor's
    template and attributes (so only the class separates it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(len(SYNONYMS)))
        other = int((label + 1 + rng.integers(len(SYNONYMS) - 1)) % len(SYNONYMS))
        attrs = Attributes(TONES[rng.integers(3)], PATTERNS[rng.integers(2)])
        t, s = int(rng.integers(len(TEMPLATES))), int(rng.integers(3))
        adjectives = said_attributes(attrs, int(rng.integers(4)))
        anchor = render(t, label, s, adjectives)
        positive = anchor
        while positive == anchor:
            positive = caption(label, Attributes(TONES[rng.integers(3)], PATTERNS[rng.integers(2)]), rng)
        negative = render(t, other, int(rng.integers(3)), adjectives)
        rows.append(Triplet({"text": anchor}, {"text": positive}, {"text": negative}))
    return rows
