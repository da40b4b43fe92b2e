"""Fashion-MNIST captions: attributes from pixels, class read-back, text-only refinement triplets."""

from __future__ import annotations

import numpy as np

from genrep.lco.captions import (
    CLASS_NAMES,
    SYNONYMS,
    TEMPLATES,
    caption,
    caption_triplets,
    class_of_caption,
    class_prompts,
    image_attributes,
    noun_phrase,
    render,
)


def test_every_rendered_caption_reads_back_as_its_class():
    for label in range(len(SYNONYMS)):
        for syn in range(len(SYNONYMS[label])):
            for t in range(len(TEMPLATES)):
                for adj in ((), ("dark",), ("light", "patterned")):
                    text = render(t, label, syn, adj)
                    assert class_of_caption(text) == label, text


def test_class_of_caption_prefers_the_earliest_and_longest_name():
    assert class_of_caption("A white t-shirt next to a shirt") == 0  # "t-shirt" is not "shirt"
    assert class_of_caption("a shirt and a t-shirt") == 6
    assert class_of_caption("Two ankle boots.") == 9
    assert class_of_caption("Some JEANS") == 1
    assert class_of_caption("an astronaut in space") is None
    assert class_of_caption("a topcoat") is None  # whole words only


def test_articles_and_pairs():
    assert noun_phrase(9) == "an ankle boot"
    assert noun_phrase(1, 2, ("dark",)) == "a pair of dark jeans"
    assert noun_phrase(2, 1, ("light", "plain")) == "a light plain sweater"
    assert class_prompts()[0] == "A photo of a t-shirt." and len(class_prompts()) == len(CLASS_NAMES) == 10


def test_attributes_follow_the_pixels():
    dark = np.zeros((28, 28), np.uint8)
    dark[4:24, 4:24] = 60
    light = dark.copy()
    light[4:24, 4:24] = 220
    stripes = light.copy()
    stripes[4:24:2, 4:24] = 40
    assert image_attributes(dark).tone == "dark" and image_attributes(dark).pattern == "plain"
    assert image_attributes(light).tone == "light"
    assert image_attributes(stripes).pattern == "patterned"
    assert image_attributes(np.zeros((28, 28), np.uint8)).tone == "dark"  # empty image: no crash


def test_captions_are_deterministic_and_varied():
    attrs = image_attributes(np.full((28, 28), 200, np.uint8))
    a = [caption(3, attrs, np.random.default_rng([0, i])) for i in range(30)]
    b = [caption(3, attrs, np.random.default_rng([0, i])) for i in range(30)]
    assert a == b and len(set(a)) > 10 and all(class_of_caption(x) == 3 for x in a)


def test_triplets_are_text_only_and_the_negative_differs_in_class():
    rows = caption_triplets(200, seed=1)
    assert rows == caption_triplets(200, seed=1)
    for r in rows:
        assert set(r.anchor) == set(r.positive) == set(r.negative) == {"text"}
        a, p, n = (class_of_caption(x["text"]) for x in (r.anchor, r.positive, r.negative))
        assert a == p != n and r.anchor != r.positive
