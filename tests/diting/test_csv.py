"""Records round-trip through JSON Lines and CSV: whatever genrep writes, genrep reads back, equal.

CSV cells are converted by the field's type (ints incl. the 0/1/2 scores, bools, floats, JSON for
dicts, lists and nested models, empty for None); a bad header or cell is one line naming it.
"""

import json

import pytest

import genrep.diting.agenteval  # noqa: F401  (defines record classes: ItemStats, Transcript)
from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting.agenteval import ItemStats, Transcript, Turn
from genrep.diting.schema import Item, Judgment, Translation, _Record, read_records, records_to_text, write_records

# separators CSV and JSON Lines must keep inside a value: commas, quotes, CR/LF, and the characters
# str.splitlines() also splits on (U+2028, U+2029, U+0085, U+001C), which json.dumps leaves unescaped
TRICKY = "a, \"quoted\", 'single'\nsecond line\r\nthird\ttab  ；中文 ✓ \u2028 \u2029 \x85 \x1c \x0c end"


def _turn(role: str, n: int) -> Turn:
    return Turn(
        round=n,
        role=role,
        backend="fake:m",
        messages=[{"role": "user", "content": TRICKY}],
        replies=['{"specific": 2', '{"specific": 2}'],
        repair_prompts=["fix it"],
        answer={"specific": 2, "reasons": TRICKY},
        error=None if n else "timeout",
        calls=2,
        cached=1,
        prompt_tokens=10,
        completion_tokens=5,
        seconds=0.25,
    )


def _stats(**kw) -> dict:
    base = dict(
        item_id="idiom-001",
        system="mt, v2",
        rater="agenteval",
        dimension="idiom",
        failed=False,
        reason="",
        rounds=2,
        agreed=True,
        calls=6,
        cached_calls=1,
        repairs=1,
        prompt_tokens=1234,
        completion_tokens=56,
        seconds=3.125,
        per_role={"judge": {"calls": 2, "prompt_tokens": 9}},
        judge={"agree": "yes", "specific": 2, "reasons": TRICKY},
        scores={"specific": 2, "general_1": 1, "general_2": 0},
        corrections=["specific capped at 1", TRICKY],
    )
    base.update(kw)
    return base


# every record class DITING writes, each with values that exercise the cell conversions
RECORDS = {
    Item: [
        Item(
            id="i1",
            dimension="idiom",
            source_zh="他画蛇添足，多此一举。",
            context="",
            phenomenon="画蛇添足",
            reference_en=TRICKY,
            instruction="请翻译",
            redacted=False,
        ),
        Item(
            id="i2",
            dimension="tense",
            source_zh="<novel><chapter><sentence 3>",
            context="上文\n第二行",
            phenomenon="past",
            reference_en="ref",
            redacted=True,
        ),
    ],
    Translation: [
        Translation(
            item_id="i1",
            system="s",
            output=TRICKY,
            meta={"latency_s": 0.125, "cached": False, "raw": TRICKY, "tokens": [1, "二", None]},
        ),
        Translation(item_id="i2", system="s", output="", meta={}),
        Translation(item_id="i3", system="s", output="0", meta={"failed": True, "reason": "HTTP 400"}),
    ],
    Judgment: [
        Judgment(item_id="i1", system="s", rater="r1", specific=2, general_1=1, general_2=0, rationale=TRICKY),
        Judgment(item_id="i2", system="s", rater="agenteval", specific=0, general_1=0, general_2=2),
    ],
    ItemStats: [
        ItemStats(**_stats()),
        ItemStats(
            **_stats(
                failed=True,
                reason="judge round 1: invalid JSON",
                agreed=None,
                judge=None,
                scores=None,
                corrections=[],
                per_role={},
                seconds=0.0,
            )
        ),
    ],
    Transcript: [
        Transcript(
            **_stats(),
            mode="multi",
            lang="zh",
            backends={"judge": "fake:m"},
            turns=[_turn("expert1", 1), _turn("judge", 0)],
        ),
        Transcript(**_stats(agreed=False, rounds=0), mode="single", lang="en", backends={}, turns=[]),
    ],
}


def _record_classes() -> set[type]:
    seen, todo = set(), [_Record]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("genrep.diting") and sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return seen


def test_every_record_class_is_covered():
    assert _record_classes() == set(RECORDS)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
@pytest.mark.parametrize("cls", list(RECORDS), ids=lambda c: c.__name__)
def test_records_round_trip(tmp_path, cls, suffix):
    path = write_records(tmp_path / f"r.{suffix}", RECORDS[cls])
    back = read_records(path, cls)
    assert back == RECORDS[cls]
    assert [type(getattr(r, f)) for r in back for f in cls.model_fields] == [
        type(getattr(r, f)) for r in RECORDS[cls] for f in cls.model_fields
    ]  # 2 stays an int, not "2"


def test_a_cell_larger_than_csvs_default_limit_round_trips(tmp_path):
    big = Translation(item_id="a", system="s", output="x" * 300_000, meta={"raw": "y" * 200_000})
    assert read_records(write_records(tmp_path / "big.csv", [big]), Translation) == [big]


def test_a_utf8_bom_is_tolerated(tmp_path):
    text = records_to_text(RECORDS[Judgment], "csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert read_records(tmp_path / "bom.csv", Judgment) == RECORDS[Judgment]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + records_to_text(RECORDS[Judgment]).encode("utf-8"))
    assert read_records(tmp_path / "bom.jsonl", Judgment) == RECORDS[Judgment]


def test_a_hand_written_csv_with_2_for_specific_reads_as_the_integer(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text("item_id,system,rater,specific,general_1,general_2\r\ni1,s,r1,2,1, 0 \r\n", encoding="utf-8")
    (j,) = read_records(path, Judgment)
    assert (j.specific, j.general_1, j.general_2, j.rationale, j.total) == (2, 1, 0, "", 3)
    assert type(j.specific) is int


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "item_id,system,rater,specific,general_1,general_2,score\ni1,s,r,2,1,0,5\n",
            "j.csv: unknown column 'score' (known: item_id, system, rater, specific, general_1, general_2, rationale, failed)",
        ),
        (
            "item_id,system,specific,general_1\ni1,s,2,1\n",
            "j.csv: missing columns 'rater', 'general_2' (required for Judgment records)",
        ),
        (
            "item_id,system,rater,specific,general_1,general_2,specific\ni1,s,r,2,1,0,1\n",
            "j.csv: column 'specific' appears twice in the header",
        ),
        (
            "item_id,system,rater,specific,general_1,general_2\ni1,s,r,3,1,0\n",
            "j.csv:2: field 'specific': Input should be",
        ),
        (
            "item_id,system,rater,specific,general_1,general_2\ni1,s,r,two,1,0\n",
            "j.csv:2: column 'specific': expected an integer, got 'two'",
        ),
        (
            "item_id,system,rater,specific,general_1,general_2\ni1,s,r,2.0,1,0\n",
            "j.csv:2: column 'specific': expected an integer, got '2.0'",
        ),
        (
            "item_id,system,rater,specific,general_1,general_2\ni1,s,r,,1,0\n",
            "j.csv:2: column 'specific': empty, but the field is required",
        ),
        ("item_id,system,rater,specific,general_1,general_2\ni1,s,r,2,1\n", "j.csv:2: 5 cells, but the header has 6"),
        ("item_id,system,rater,specific,general_1,general_2\ni1,s,r,2,1,0,extra\n", "j.csv:2: 7 cells"),
        (
            'item_id,system,rater,specific,general_1,general_2,rationale\ni1,s,r,2,1,0,"line 1\nline 2"\n'
            "i2,s,r,2,1,9,x\n",
            "j.csv:4: field 'general_2'",
        ),  # the record after a two-line cell starts on line 4
    ],
)
def test_csv_errors_name_the_file_the_line_and_the_column(tmp_path, text, message):
    path = tmp_path / "j.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_records(path, Judgment)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "cls, text, message",
    [
        (Translation, "item_id,system,output,meta\na,s,x,{oops}\n", "t.csv:2: column 'meta': not valid JSON"),
        (
            Item,
            "id,dimension,source_zh,phenomenon,redacted\na,idiom,x,x,maybe\n",
            "t.csv:2: column 'redacted': expected true or false, got 'maybe'",
        ),
        (
            ItemStats,
            "item_id,system,rater,dimension,seconds\na,s,r,idiom,fast\n",
            "t.csv:2: column 'seconds': expected a number, got 'fast'",
        ),
        (Translation, "item_id,system,output\n,s,x\n", "t.csv:2: field 'item_id': String should have at least 1"),
    ],
)
def test_cells_are_checked_by_their_fields_type(tmp_path, cls, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_records(path, cls)


def test_empty_cells_take_the_default_or_none(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("item_id,system,rater,dimension,failed,agreed,judge\na,s,r,idiom,,,\n", encoding="utf-8")
    (s,) = read_records(path, ItemStats)
    assert (s.failed, s.agreed, s.judge, s.corrections, s.seconds) == (False, None, None, [], 0.0)
    (tmp_path / "i.csv").write_text(
        "id,dimension,source_zh,phenomenon,redacted,context\na,idiom,x,x,TRUE,\n", encoding="utf-8"
    )
    (item,) = read_records(tmp_path / "i.csv", Item)
    assert item.redacted is True and item.context == ""


@pytest.mark.parametrize(
    "suffix, text",
    [
        ("csv", ""),
        ("csv", "\r\n\n"),
        ("csv", "\ufeff"),
        ("csv", "item_id,system,rater,specific,general_1,general_2\r\n"),
        ("jsonl", ""),
        ("jsonl", "\n \n"),
        ("jsonl", "\ufeff"),
    ],
)
def test_an_empty_or_header_only_file_has_no_records(tmp_path, suffix, text):
    path = tmp_path / f"e.{suffix}"
    path.write_text(text, encoding="utf-8")
    assert read_records(path, Judgment) == []
    assert records_to_text([], suffix) == ""


def test_leaderboard_and_meta_eval_read_a_judgments_csv_written_by_write_records(tmp_path):
    from genrep.diting.benchmark import load_benchmark

    items = load_benchmark("starter", ["idiom", "tense"], 2)
    systems = ("A", "B", "C")
    judgments = [
        Judgment(
            item_id=i.id,
            system=s,
            rater=r,
            specific=(n + k) % 3,
            general_1=2 - n % 3,
            general_2=k % 3,
            rationale='fine, "mostly"\nok',
        )
        for n, i in enumerate(items)
        for k, s in enumerate(systems)
        for r in ("r1", "r2")
    ]
    translations = [
        Translation(item_id=i.id, system=s, output=i.reference_en[: 10 * (k + 1)], meta={"k": k})
        for i in items
        for k, s in enumerate(systems)
    ]
    write_records(tmp_path / "j.csv", judgments)
    write_records(tmp_path / "t.csv", translations)
    write_records(tmp_path / "items.csv", items)
    main(
        [
            "diting",
            "leaderboard",
            "--judgments",
            str(tmp_path / "j.csv"),
            "--items",
            str(tmp_path / "items.csv"),
            "--resamples",
            "0",
            "--out",
            str(tmp_path / "lb"),
        ]
    )
    lb = json.loads((tmp_path / "lb" / "metrics.json").read_text())
    assert lb["judgments"] == len(judgments) and lb["systems"] == 3 and lb["dimensions"] == ["idiom", "tense"]
    main(
        [
            "diting",
            "meta-eval",
            "--judgments",
            str(tmp_path / "j.csv"),
            "--translations",
            str(tmp_path / "t.csv"),
            "--items",
            str(tmp_path / "items.csv"),
            "--metric",
            "chrf",
            "--resamples",
            "0",
            "--out",
            str(tmp_path / "me"),
        ]
    )
    me = json.loads((tmp_path / "me" / "metrics.json").read_text())
    assert me["human"]["annotations"] == len(judgments) and me["metrics"]["chrf"]["segments"] == 12
