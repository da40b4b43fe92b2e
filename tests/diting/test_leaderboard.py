"""Leaderboard: hand-computed means, ranks, intervals and the written files."""

import csv
import io
import json

import pytest

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting.leaderboard import OVERALL, build_leaderboard, leaderboard_csv, write_leaderboard
from genrep.diting.official import OFFICIAL_SAMPLE
from genrep.diting.schema import Item, Judgment, write_records


def _items():
    return [
        Item(id=i, dimension=d, source_zh="他画蛇添足。", context="上文。", phenomenon="x", reference_en="ref")
        for i, d in (("t1", "tense"), ("t2", "tense"), ("z1", "zero_pronoun"))
    ]


def _j(item, system, rater, s, g1, g2):
    return Judgment(item_id=item, system=system, rater=rater, specific=s, general_1=g1, general_2=g2)


def _judgments():
    return [
        _j("t1", "A", "r1", 2, 2, 2),
        _j("t1", "A", "r2", 2, 1, 1),  # A: t1 = (6 + 4) / 2 = 5
        _j("t2", "A", "r1", 1, 1, 1),  # A: t2 = 3
        _j("z1", "A", "r1", 2, 2, 1),  # A: z1 = 5
        _j("t1", "B", "r1", 0, 0, 0),  # B: t1 = 0
        _j("t2", "B", "r1", 2, 2, 2),  # B: t2 = 6
        _j("z1", "B", "r1", 2, 2, 1),
        _j("z1", "B", "r2", 2, 2, 2),  # B: z1 = 5.5
        _j("t1", "C", "r1", 1, 1, 0),  # C: t1 = 2 (one segment only)
    ]


def test_leaderboard_values_are_the_hand_computed_means():
    board = build_leaderboard(_judgments(), _items(), resamples=200, seed=3)
    assert board.dimensions == ["tense", "zero_pronoun"] and board.judgments == 9 and board.items == 3
    c = board.cells
    assert c[("A", "tense")].mean == pytest.approx(4.0) and c[("A", "zero_pronoun")].mean == pytest.approx(5.0)
    assert c[("A", OVERALL)].mean == pytest.approx((5 + 3 + 5) / 3)
    assert c[("B", "tense")].mean == pytest.approx(3.0) and c[("B", OVERALL)].mean == pytest.approx((0 + 6 + 5.5) / 3)
    assert c[("C", OVERALL)].mean == pytest.approx(2.0) and c[("C", "zero_pronoun")].mean is None
    assert board.systems == ["A", "B", "C"] and board.rank == {"A": 1, "B": 2, "C": 3}
    # intervals: a cell from a single item has none; otherwise they bracket the mean, within the segment range
    assert c[("A", "zero_pronoun")].lo is None and c[("C", OVERALL)].lo is None
    lo, hi = c[("B", "tense")].lo, c[("B", "tense")].hi
    assert lo == 0.0 and hi == 6.0  # two items, 0 and 6: drawing one twice is likely (p = 1/2 each time)
    assert c[("A", OVERALL)].lo <= c[("A", OVERALL)].mean <= c[("A", OVERALL)].hi
    assert build_leaderboard(_judgments(), _items(), resamples=200, seed=3) == board  # the seed fixes it


def test_ties_share_a_rank_and_no_items_means_overall_only():
    js = [_j("t1", "A", "r1", 1, 1, 1), _j("t1", "B", "r1", 2, 1, 0), _j("t1", "C", "r1", 2, 2, 2)]
    board = build_leaderboard(js, resamples=0)
    assert board.dimensions == [] and board.rank == {"C": 1, "A": 2, "B": 2} and board.systems == ["C", "A", "B"]
    with pytest.raises(UserError, match="judgments for unknown item 't1'"):
        build_leaderboard(js, _items()[1:])
    with pytest.raises(UserError, match="no judgments"):
        build_leaderboard([])


def test_leaderboard_files_are_written(tmp_path):
    board = build_leaderboard(_judgments(), _items(), resamples=100)
    paths = write_leaderboard(board, tmp_path)
    assert {p.name for p in paths.values()} == {
        "leaderboard.md",
        "leaderboard.html",
        "leaderboard.csv",
        "leaderboard.png",
    }
    md = (tmp_path / "leaderboard.md").read_text().splitlines()
    assert md[0] == "| rank | system | segments | overall | tense | zero_pronoun |"
    assert md[2].startswith("| 1 | A | 3 | 4.33 [") and md[4] == "| 3 | C | 1 | 2.00 | 2.00 | - |"
    rows = list(csv.DictReader(io.StringIO(leaderboard_csv(board))))
    assert [r["system"] for r in rows] == ["A", "B", "C"] and float(rows[1]["tense"]) == 3.0
    assert rows[2]["zero_pronoun"] == "" and rows[2]["overall_segments"] == "1"
    html = (tmp_path / "leaderboard.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and "http" not in html.replace("<!doctype html>", "")
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_cli_from_files_and_from_the_official_sample(tmp_path, capsys):
    write_records(tmp_path / "judgments.jsonl", _judgments())
    write_records(tmp_path / "items.jsonl", _items())
    main(
        [
            "diting",
            "leaderboard",
            "--judgments",
            str(tmp_path / "judgments.jsonl"),
            "--items",
            str(tmp_path / "items.jsonl"),
            "--resamples",
            "50",
            "--out",
            str(tmp_path / "lb"),
        ]
    )
    m = json.loads((tmp_path / "lb" / "metrics.json").read_text())
    assert [r["system"] for r in m["leaderboard"]] == ["A", "B", "C"] and "signature" in m
    assert (tmp_path / "lb" / "leaderboard.png").is_file() and "items.jsonl" in (
        tmp_path / "lb" / "config.yaml"
    ).read_text()
    main(
        [
            "diting",
            "leaderboard",
            "--official",
            str(OFFICIAL_SAMPLE),
            "--resamples",
            "50",
            "--out",
            str(tmp_path / "official"),
        ]
    )
    m = json.loads((tmp_path / "official" / "metrics.json").read_text())
    assert m["systems"] == 23 and m["judgments"] == 230 and m["items"] == 6
    assert m["dimensions"] == ["idiom", "terminology", "tense", "zero_pronoun"]
    assert "23 systems" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["diting", "leaderboard", "--out", str(tmp_path / "x")])
    assert "give --judgments" in capsys.readouterr().err


def test_the_leaderboard_counts_llm_judge_failures_as_zero_or_drops_them(tmp_path):
    judged = _judgments()
    failed = judged[0].model_copy(update={"specific": 0, "general_1": 0, "general_2": 0, "failed": True})
    write_records(tmp_path / "j.jsonl", [failed, *judged[1:]])
    write_records(tmp_path / "items.jsonl", _items())
    boards = {}
    for policy in ("include", "exclude"):
        main(
            [
                *("diting", "leaderboard", "--judgments", str(tmp_path / "j.jsonl")),
                *("--items", str(tmp_path / "items.jsonl"), "--resamples", "0", "--failed", policy),
                *("--out", str(tmp_path / policy)),
            ]
        )
        boards[policy] = json.loads((tmp_path / policy / "metrics.json").read_text())
    assert boards["include"]["judgments"] == len(judged) and boards["exclude"]["judgments"] == len(judged) - 1
    assert boards["exclude"]["failed"] == {"policy": "exclude", "dropped": 1}
    assert boards["include"]["failed"] == {"policy": "include", "dropped": 0}


def test_resamples_and_seed_are_bounded_in_the_library_and_the_cli(tmp_path, capsys):
    from genrep.diting.metaeval import MAX_RESAMPLES

    build_leaderboard(_judgments(), _items(), resamples=MAX_RESAMPLES // 1000, seed=2**70)  # a big seed is fine
    for resamples in (MAX_RESAMPLES + 1, -1, 2.5, True, "10"):
        with pytest.raises(UserError, match=f"^resamples must be an integer from 0 to {MAX_RESAMPLES}, got"):
            build_leaderboard(_judgments(), _items(), resamples=resamples)
    with pytest.raises(UserError, match="^seed must be a non-negative integer, got -1$"):
        build_leaderboard(_judgments(), _items(), seed=-1)
    write_records(tmp_path / "judgments.jsonl", _judgments())
    for option, value, message in (
        ("--resamples", MAX_RESAMPLES + 1, f"0<=x<={MAX_RESAMPLES}"),
        ("--seed", -1, "-1 is not in the range x>=0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "diting",
                    "leaderboard",
                    "--judgments",
                    str(tmp_path / "judgments.jsonl"),
                    option,
                    str(value),
                    "--out",
                    str(tmp_path / "lb"),
                ]
            )
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"Invalid value for '{option}'" in err and message in err, err
        assert err.count("\n") == 1 and not (tmp_path / "lb").exists()
