"""DITING records, the official-sample loader and the starter benchmark."""

import json

import pytest

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting.benchmark import benchmark_info, load_benchmark, validate_items
from genrep.diting.official import OFFICIAL_SAMPLE as OFFICIAL
from genrep.diting.official import infer_dimension, load_official
from genrep.diting.schema import (
    DIMENSIONS,
    Item,
    Judgment,
    Translation,
    append_record,
    read_log,
    read_records,
    write_records,
)


def _item(**kw):
    base = dict(
        id="a", dimension="idiom", source_zh="他画蛇添足。", phenomenon="画蛇添足", reference_en="He overdid it."
    )
    base.update(kw)
    return Item(**base)


def test_official_sample_loads_with_its_counts(tmp_path):
    data = load_official(OFFICIAL)
    s = data.summary()
    assert (s["tasks"], s["translations"], s["systems"], s["judgments"]) == (129, 129, 23, 230)
    assert s["items"] == 6 and s["redacted_items"] == 6
    assert s["dimensions"] == {"idiom": 1, "terminology": 2, "tense": 2, "zero_pronoun": 1}
    idiom = next(i for i in data.items if i.dimension == "idiom")
    assert idiom.phenomenon == "心细如发" and idiom.source_zh.startswith("<") and idiom.redacted
    zp = next(i for i in data.items if i.dimension == "zero_pronoun")
    assert zp.context.endswith("<第31句>") and zp.source_zh.endswith("<第32句>")
    raw = json.loads(OFFICIAL.read_text())
    first = raw[0]["annotations"][0]["result"]
    j = data.judgments[0]
    assert [j.specific, j.general_1, j.general_2] == [int(r["value"]["choices"][0][0]) for r in first]
    assert {j.rater for j in data.judgments} == {"r1", "r2"}
    main(["diting", "load-official", str(OFFICIAL), "--out", str(tmp_path / "off")])
    assert len(read_records(tmp_path / "off" / "judgments.jsonl", Judgment)) == 230
    assert len(read_records(tmp_path / "off" / "items.jsonl", Item)) == 6
    assert (tmp_path / "off" / "config.yaml").exists() and (tmp_path / "off" / "metrics.json").exists()


def test_official_loader_errors_name_the_task_and_field(tmp_path, capsys):
    bad = [
        {
            "id": 7,
            "data": {
                "model": "m",
                "instruction": '请翻译,其中"一石二鸟"是成语。 文本:<a><b>',
                "model_output": "x",
                "ground_truth": "y",
            },
            "annotations": [{"result": [{"from_name": "fluency", "value": {"choices": ["3分"]}}]}],
        }
    ]
    (tmp_path / "bad.json").write_text(json.dumps(bad, ensure_ascii=False))
    with pytest.raises(UserError, match=r"task 7: annotation 1: fluency: unexpected score choice '3分'"):
        load_official(tmp_path / "bad.json")
    bad[0]["data"].pop("ground_truth")
    (tmp_path / "bad.json").write_text(json.dumps(bad, ensure_ascii=False))
    with pytest.raises(SystemExit) as e:
        main(["diting", "load-official", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "field 'data.ground_truth' missing" in capsys.readouterr().err
    assert infer_dimension("在文本中出现主语缺省的现象") == "zero_pronoun" and infer_dimension("随便") is None


def test_starter_benchmark_is_valid_and_complete():
    items = load_benchmark("starter")
    rows = {r["dimension"]: r for r in benchmark_info(items)}
    assert all(rows[d]["items"] >= 20 for d in DIMENSIONS) and rows["total"]["items"] == len(items)
    assert len({i.id for i in items}) == len(items) and len({i.source_zh for i in items}) == len(items)
    for i in items:
        assert i.reference_en and i.instruction.endswith("源语言:中文 目标语言:英文。")
        if i.dimension in ("idiom", "ambiguity", "terminology"):
            assert i.phenomenon in i.source_zh
        if i.dimension in ("ambiguity", "tense", "zero_pronoun"):
            assert i.context
    sub = load_benchmark("starter", ["tense", "idiom"], limit_per_dimension=3)
    assert [i.dimension for i in sub].count("tense") == 3 and len(sub) == 6


def test_validation_errors_name_the_line_and_field(tmp_path):
    good = _item().model_dump()
    p = tmp_path / "items.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "dimension": "idioms"}) + "\n")
    with pytest.raises(UserError, match=r"items.jsonl:2: field 'dimension'"):
        read_records(p, Item)
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(UserError, match=r"items.jsonl:2: not valid JSON"):
        read_records(p, Item)
    p.write_text(json.dumps({k: v for k, v in good.items() if k != "source_zh"}) + "\n")
    with pytest.raises(UserError, match=r"items.jsonl:1: field 'source_zh': Field required"):
        read_records(p, Item)
    with pytest.raises(UserError, match=r"item 2 \(a\): field 'id': duplicate of item 1"):
        validate_items([_item(), _item()])
    with pytest.raises(UserError, match=r"field 'phenomenon': '一石二鸟' does not occur"):
        validate_items([_item(phenomenon="一石二鸟")])
    with pytest.raises(UserError, match=r"field 'context': empty \(required for tense\)"):
        validate_items([_item(dimension="tense", phenomenon="past")])
    validate_items([_item(phenomenon="一石二鸟", redacted=True)])  # placeholders skip the source checks
    with pytest.raises(UserError, match=r"judgments.jsonl:1: field 'specific'"):
        (tmp_path / "judgments.jsonl").write_text(
            json.dumps({"item_id": "a", "system": "s", "rater": "r", "specific": 3, "general_1": 0, "general_2": 0})
            + "\n"
        )
        read_records(tmp_path / "judgments.jsonl", Judgment)


def test_records_round_trip_through_jsonl_and_csv(tmp_path):
    recs = [
        Translation(item_id="a", system="s", output='Hello, "world"\nline 2', meta={"k": [1, "二"]}),
        Translation(item_id="b", system="s", output="", meta={}),
    ]
    for suffix in ("jsonl", "csv"):
        write_records(tmp_path / f"t.{suffix}", recs)
        assert read_records(tmp_path / f"t.{suffix}", Translation) == recs
    items = [_item(), _item(id="b", context="上文", redacted=True)]
    write_records(tmp_path / "i.csv", items)
    assert read_records(tmp_path / "i.csv", Item) == items


def test_append_log_survives_a_torn_last_line(tmp_path):
    log = tmp_path / "t.jsonl"
    append_record(log, Translation(item_id="a", system="s", output="x"))
    with log.open("a") as f:
        f.write('{"item_id": "b", "sys')  # a crash in the middle of a write
    assert [t.item_id for t in read_log(log, Translation)] == ["a"]
    append_record(log, Translation(item_id="c", system="s", output="y"))
    assert [t.item_id for t in read_log(log, Translation)] == ["a", "c"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(annotations="2分"), "task 7: field 'annotations': expected a list of objects"),
        (lambda t: t.update(annotations=[1]), "task 7: field 'annotations': expected a list of objects"),
        (
            lambda t: t["annotations"][0].update(result={"x": 1}),
            "task 7: annotation 1: field 'result': expected a list",
        ),
        (lambda t: t["annotations"][0]["result"].append("fluency"), "task 7: annotation 1: field 'result'"),
        (lambda t: t["annotations"][0]["result"][-1].update(value=["2分"]), "fluency: unexpected score choice ''"),
        (
            lambda t: t["annotations"][0]["result"][-1]["value"].update(choices=[2]),
            "fluency: unexpected score choice 2",
        ),
        (lambda t: t["annotations"][0]["result"][-1]["value"].update(choices="2分x"), "unexpected score choice '2分x'"),
        (lambda t: t["annotations"][0]["result"][-1].update(from_name=["fluency"]), "missing criteria fluency"),
        (lambda t: t.update(data=[]), "task 7: no 'data' object"),
    ],
)
def test_malformed_label_studio_tasks_are_one_line_errors(tmp_path, change, message):
    task = {
        "id": 7,
        "data": {
            "model": "m",
            "instruction": '请翻译,其中"一石二鸟"是成语。 文本:<a><b>',
            "model_output": "x",
            "ground_truth": "y",
        },
        "annotations": [
            {
                "result": [
                    {"from_name": name, "value": {"choices": ["2分"]}}
                    for name in ("term_appropriateness", "localization_strategy", "fluency")
                ]
            }
        ],
    }
    (tmp_path / "ok.json").write_text(json.dumps([task], ensure_ascii=False), encoding="utf-8")
    assert load_official(tmp_path / "ok.json").judgments[0].total == 6
    change(task)
    (tmp_path / "bad.json").write_text(json.dumps([task], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_official(tmp_path / "bad.json")
    assert str(err.value).startswith(str(tmp_path / "bad.json")) and message in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", ":1: not valid JSON (Expecting value)"),
        ('[{"id": 1,\n "data": }]', ":2: not valid JSON (Expecting value)"),
        ('{"tasks": []}', ": expected a JSON list of Label Studio tasks"),
        ("[" * 100_000 + "]" * 100_000, ": JSON nested too deeply"),
    ],
)
def test_an_export_that_is_not_a_list_of_tasks_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "export.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["diting", "load-official", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"genrep: error: {path}{message}\n"
