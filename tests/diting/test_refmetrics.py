"""Reference metrics equal direct sacrebleu calls."""

import json

import pytest
import sacrebleu

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting.benchmark import load_benchmark
from genrep.diting.refmetrics import comet_scores, score_translations
from genrep.diting.schema import Translation, write_records


def _translations(items):
    outs = {
        "copy": [i.reference_en for i in items],
        "worse": [" ".join(i.reference_en.split()[: max(1, len(i.reference_en.split()) // 2)]) for i in items],
    }
    return [Translation(item_id=i.id, system=s, output=o[k]) for s, o in outs.items() for k, i in enumerate(items)]


def test_scores_equal_direct_sacrebleu_calls():
    items = load_benchmark("starter", limit_per_dimension=4)
    trans = _translations(items)
    res, segs = score_translations(trans, items, ["bleu", "chrf", "ter"])
    hyps = [t.output for t in trans if t.system == "worse"]
    refs = [i.reference_en for i in items]
    worse = res["systems"]["worse"]
    assert worse["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score)
    assert worse["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert worse["ter"] == pytest.approx(sacrebleu.corpus_ter(hyps, [refs]).score)
    assert res["systems"]["copy"]["bleu"] == pytest.approx(100.0) and res["systems"]["copy"]["ter"] == 0.0
    idiom = [k for k, i in enumerate(items) if i.dimension == "idiom"]
    assert worse["per_dimension"]["idiom"]["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf([hyps[k] for k in idiom], [[refs[k] for k in idiom]]).score
    )
    seg = next(s for s in segs if s["system"] == "worse" and s["item_id"] == items[0].id)
    assert seg["bleu"] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], [refs[0]]).score)
    assert seg["chrf"] == pytest.approx(sacrebleu.sentence_chrf(hyps[0], [refs[0]]).score)
    assert "tok:13a" in res["signatures"]["bleu"] and res["signatures"]["chrf"].startswith("nrefs:1")


def test_failures_score_as_empty_and_comet_reports_unavailable(tmp_path, capsys):
    items = load_benchmark("starter", ["idiom"], limit_per_dimension=3)
    trans = [
        Translation(item_id=i.id, system="s", output=i.reference_en, meta={"failed": k == 0})
        for k, i in enumerate(items)
    ]
    res, _ = score_translations(trans, items, ["chrf", "comet"])
    assert res["systems"]["s"]["failed"] == 1 and res["systems"]["s"]["chrf"] < 100
    assert res["systems"]["s"]["comet"] is None and res["signatures"]["comet"].startswith("unavailable")
    assert comet_scores(["a"], ["b"], ["c"], model=str(tmp_path / "nope.ckpt"))["status"].startswith("unavailable")
    with pytest.raises(UserError, match="unknown metric 'meteor'"):
        score_translations(trans, items, ["meteor"])
    write_records(tmp_path / "t.jsonl", trans)
    main(
        [
            "diting",
            "score",
            "--translations",
            str(tmp_path / "t.jsonl"),
            "--metric",
            "chrf",
            "bleu",
            "--out",
            str(tmp_path / "score"),
        ]
    )
    m = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert m["metrics"] == ["chrf", "bleu"] and "s" in m["systems"]
    assert len((tmp_path / "score" / "segments.jsonl").read_text().splitlines()) == 3
    assert "metrics:" in (tmp_path / "score" / "config.yaml").read_text()
