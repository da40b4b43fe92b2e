"""Training data: triplet JSONL validation and the HSK split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genrep.core.errors import UserError
from genrep.lco.data import Triplet, hsk_pairs_split, hsk_triplets, load_media, read_triplets, write_triplets


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_read_triplets_text_and_images(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cat.png")
    f = _write(
        tmp_path / "d.jsonl",
        [
            {"anchor": "a cat", "positive": {"image": "cat.png"}, "negative": {"text": "a dog"}},
            {"anchor": {"text": "x", "image": "cat.png"}, "positive": "y", "negative": "z"},
        ],
    )
    rows = read_triplets(f)
    assert rows[0].anchor == {"text": "a cat"} and rows[0].positive["image"] == str(tmp_path / "cat.png")
    assert set(rows[1].anchor) == {"text", "image"}
    loaded = load_media(rows[0].positive)
    assert loaded["image"].size == (8, 8)
    write_triplets(tmp_path / "out.jsonl", rows)
    assert read_triplets(tmp_path / "out.jsonl")[1].negative == {"text": "z"}


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"anchor": "a"}', r"d.jsonl:2: missing field 'positive'"),
        ('{"anchor": "a", "positive": {"txt": "b"}}', r"d.jsonl:2: positive: unknown field"),
        ('{"anchor": "a", "positive": {"image": "missing.png"}}', r"d.jsonl:2: positive.image: file not found"),
        ('{"anchor": "a", "positive": ""}', r"d.jsonl:2: positive: empty text"),
        ('{"anchor": "a", "positive": "b", "extra": 1}', r"d.jsonl:2: unknown field"),
        ("not json", r"d.jsonl:2: not valid JSON"),
        ('{"anchor": "a", "positive": {"text": 3}}', r"d.jsonl:2: positive.text: expected a string"),
        ('{"anchor": "a", "positive": {"text": "", "image_path": ""}}', r"d.jsonl:2: positive: needs at least one"),
        (
            '{"anchor": "a", "positive": {"text": "", "image_path": "gone.jpg"}}',
            r"d.jsonl:2: positive.image_path: file",
        ),
        ('{"anchor": "a", "positive": {"image": "x.png", "image_path": "x.png"}}', r"d.jsonl:2: positive: both"),
    ],
)
def test_read_triplets_errors_name_line_and_field(tmp_path, row, message):
    f = _write(tmp_path / "d.jsonl", ['{"anchor": "ok", "positive": "ok"}', row])
    with pytest.raises(UserError, match=message):
        read_triplets(f)


REFERENCE_ROWS = [  # the layout of the reference's Training/README.md: every side has text and image_path
    {
        "anchor": {"image_path": "", "text": "What is a tabby?"},
        "positive": {"image_path": "", "text": "A tabby is a cat with a striped coat."},
        "negative": {"image_path": "", "text": "A tabby is a kind of cloth."},
    },
    {
        "anchor": {"image_path": "images/cat.png", "text": ""},  # image only
        "positive": {"image_path": "", "text": "a photo of a cat"},
        "negative": {"image_path": "images/cat.png", "text": "a drawing of a dog"},  # interleaved
    },
]


def test_reference_format_is_read_as_is(tmp_path, monkeypatch):
    """``image_path`` relative to the working directory (where the reference resolves it), "" = absent."""
    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    Image.new("RGB", (1000, 500), (10, 200, 30)).save(work / "images" / "cat.png")
    (tmp_path / "data").mkdir()
    data = _write(tmp_path / "data" / "ref.jsonl", REFERENCE_ROWS)
    monkeypatch.chdir(work)
    rows = read_triplets(data)
    assert rows[0].anchor == {"text": "What is a tabby?"} and rows[0].negative == {
        "text": "A tabby is a kind of cloth."
    }
    assert rows[1].anchor == {"image": "images/cat.png"}
    assert rows[1].negative == {"text": "a drawing of a dog", "image": "images/cat.png"}
    # the reference's 700 px thumbnail: aspect kept, only ever shrinking
    assert load_media(rows[1].anchor, thumbnail=700)["image"].size == (700, 350)
    assert load_media(rows[1].anchor, thumbnail=2000)["image"].size == (1000, 500)
    assert load_media(rows[1].anchor)["image"].size == (1000, 500)
    # an image_path only found next to the JSONL file is accepted too
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "data" / "images" / "cat.png")
    assert read_triplets(data)[1].anchor == {"image": str(tmp_path / "data" / "images" / "cat.png")}


def test_negatives_all_or_none(tmp_path):
    f = _write(
        tmp_path / "d.jsonl", [{"anchor": "a", "positive": "b", "negative": "c"}, {"anchor": "a", "positive": "b"}]
    )
    with pytest.raises(UserError, match="every row has a 'negative' or none"):
        read_triplets(f)


def test_hsk_split_shares_no_sentence():
    pytest.importorskip("hsk_sentences_audio")
    split = hsk_pairs_split(test_size=500, seed=0)
    assert len(split.test) == 500 and len(split.train) > 3000
    for lang in ("zh", "en"):
        train = {p[lang].strip() for p in split.train}
        test = [p[lang].strip() for p in split.test]
        assert not train & set(test)
        assert len(set(test)) == len(test)  # one relevant document per query
    assert all(p["en"].lower() != "placeholder" for p in split.train + split.test)
    assert hsk_pairs_split(500, 0).test == split.test  # deterministic
    rows = hsk_triplets(split.train[:50], seed=0)
    assert len(rows) == 100 and isinstance(rows[0], Triplet)
    for r in rows:
        assert r.negative["text"] not in (r.positive["text"], r.anchor["text"])
