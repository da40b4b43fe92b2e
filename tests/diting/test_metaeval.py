"""Meta-evaluation: statistics against scipy and brute-force pair counts, the bootstrap, the files,
the MetricAlign reader and the official sample end to end."""

import json
import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting import metaeval as me
from genrep.diting.official import OFFICIAL_SAMPLE
from genrep.diting.schema import Judgment

SCIPY = {
    "pearson": lambda x, y: stats.pearsonr(x, y).statistic,
    "spearman": lambda x, y: stats.spearmanr(x, y).statistic,
    "kendall": lambda x, y: stats.kendalltau(x, y, variant="b").statistic,
}


def _ties(rng, n, high=5):
    return rng.integers(0, high, n).astype(float)


def _brute_acc(h, m, groups, eps, skip=None):
    """acc_eq by counting pairs: per group, then the mean over groups with a pair."""
    per = {}
    for i, j in combinations(range(len(h)), 2):
        if groups[i] != groups[j] or (skip is not None and skip[i] == skip[j]):
            continue
        dh, dm = h[i] - h[j], m[i] - m[j]
        metric = 0 if abs(dm) <= eps else np.sign(dm)
        per.setdefault(groups[i], []).append(np.sign(dh) == metric)
    return float(np.mean([np.mean(v) for v in per.values()]))


def _candidates(m, groups):
    return sorted({0.0} | {abs(m[i] - m[j]) for i, j in combinations(range(len(m)), 2) if groups[i] == groups[j]})


# ---------------------------------------------------------------------------------------------
# statistics


@pytest.mark.parametrize("kind", me.CORRELATIONS)
def test_correlations_equal_scipy_and_weighted_forms_equal_scipy_on_repeated_data(kind):
    rng = np.random.default_rng(0)
    x, y = _ties(rng, 40), _ties(rng, 40, 7)
    assert me.correlation(x, y, kind) == pytest.approx(SCIPY[kind](x, y))
    assert math.isnan(me.correlation(x, np.full(40, 3.0), kind)) and math.isnan(me.correlation(x[:1], y[:1], kind))
    W = rng.integers(0, 3, (6, 40)).astype(float)
    want = [SCIPY[kind](np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int))) for w in W]
    assert me.weighted_correlation(x, y, W, kind) == pytest.approx(want, abs=1e-12)
    # per-row data (system level): row b of x and y belongs to resample b
    X, Y = _ties(rng, (6, 12)), rng.normal(size=(6, 12))
    V = rng.integers(0, 3, (6, 12)).astype(float)
    V[:, :2] = 1
    want = [SCIPY[kind](np.repeat(a, w.astype(int)), np.repeat(b, w.astype(int))) for a, b, w in zip(X, Y, V)]
    assert me.weighted_correlation(X, Y, V, kind) == pytest.approx(want, abs=1e-12)
    one = np.zeros((1, 40))
    one[0, 3] = 5  # one segment repeated: constant, no correlation
    assert np.isnan(me.weighted_correlation(x, y, one, kind)).all()


def test_pairwise_accuracy_equals_brute_force_pair_count_with_ties():
    rng = np.random.default_rng(1)
    h, m = _ties(rng, 30), _ties(rng, 30, 8)
    items = rng.integers(0, 4, 30)
    for eps in (0.0, 1.0, 2.5):
        assert me.pairwise_accuracy(h, m, eps=eps) == pytest.approx(_brute_acc(h, m, np.zeros(30), eps))
        assert me.pairwise_accuracy(h, m, items, eps=eps) == pytest.approx(_brute_acc(h, m, items, eps))
    assert me.pairwise_accuracy(h, h) == 1.0 and me.pairwise_accuracy(h, -h) == pytest.approx(
        _brute_acc(h, -h, np.zeros(30), 0.0)
    )


@pytest.mark.parametrize("grouped", [False, True])
def test_tie_calibration_picks_the_best_epsilon(grouped):
    rng = np.random.default_rng(2)
    h = _ties(rng, 25, 3)  # many human ties: ties in the metric pay
    m = h + rng.normal(scale=0.8, size=25)
    groups = rng.integers(0, 3, 25) if grouped else np.zeros(25, dtype=int)
    accs = {eps: _brute_acc(h, m, groups, eps) for eps in _candidates(m, groups)}
    best = max(accs.values())
    acc, eps = me.calibrated_pairwise_accuracy(h, m, groups if grouped else None)
    assert acc == pytest.approx(best) and eps == min(e for e, a in accs.items() if a == pytest.approx(best))
    assert acc >= me.pairwise_accuracy(h, m, groups if grouped else None)
    assert eps > 0  # a tie threshold helps here


def test_weighted_pairwise_accuracy_equals_pair_count_on_repeated_data():
    rng = np.random.default_rng(3)
    h, m = _ties(rng, 14), _ties(rng, 14, 6)
    systems = rng.integers(0, 3, 14)
    W = rng.integers(0, 3, (4, 14)).astype(float)
    for groups in (None, systems):
        eps, acc = me.weighted_pairwise_accuracy(h, m, W, groups)
        for w, row in zip(W, acc):
            idx = np.repeat(np.arange(14), w.astype(int))  # copies of a segment are not paired
            g = np.zeros(len(idx)) if groups is None else groups[idx]
            assert row[0] == pytest.approx(_brute_acc(h[idx], m[idx], g, 0.0, skip=idx))
            brute = max(_brute_acc(h[idx], m[idx], g, e, skip=idx) for e in _candidates(m[idx], g))
            assert row.max() == pytest.approx(brute)


def test_grouping_by_item_is_the_mean_of_per_item_scipy_calls_and_skips_constant_items():
    rng = np.random.default_rng(4)
    items, systems = [f"i{k}" for k in range(5)], [f"s{k}" for k in range(9)]
    human = {(i, s): float(rng.integers(0, 7)) for i in items for s in systems}
    for s in systems:
        human[("i4", s)] = 3.0  # constant human scores on i4: no correlation there
    metric = {k: v + rng.normal() for k, v in human.items()}
    res = me.evaluate_metric(human, metric, resamples=0)
    for kind in me.CORRELATIONS:
        per = [SCIPY[kind]([human[(i, s)] for s in systems], [metric[(i, s)] for s in systems]) for i in items[:4]]
        assert res["segment_level"]["item"][kind]["value"] == pytest.approx(np.mean(per))
        a = me.align(human, metric)
        assert me.grouped_correlation(a.human, a.metric, np.array([k[0] for k in a.keys]), kind) == (
            pytest.approx(np.mean(per)),
            4,
        )
        per_sys = [SCIPY[kind]([human[(i, s)] for i in items], [metric[(i, s)] for i in items]) for s in systems]
        assert res["segment_level"]["system"][kind]["value"] == pytest.approx(np.mean(per_sys))
    assert res["segment_level"]["item"]["groups"] == 4 and res["segment_level"]["system"]["groups"] == 9
    acc_items = np.mean(
        [
            _brute_acc([human[(i, s)] for s in systems], [metric[(i, s)] for s in systems], np.zeros(9), 0.0)
            for i in items
        ]
    )  # acc_eq keeps i4: ties are meaningful
    assert res["segment_level"]["item"]["pairwise_accuracy"]["value"] == pytest.approx(acc_items)


def test_system_level_by_hand():
    # systems A, B, C on items x, y; C has no human score on y (so it is left out there)
    human = {("x", "A"): 6, ("y", "A"): 4, ("x", "B"): 2, ("y", "B"): 3, ("x", "C"): 1}
    metric = {
        ("x", "A"): 50.0,
        ("y", "A"): 30.0,
        ("x", "B"): 45.0,
        ("y", "B"): 20.0,
        ("x", "C"): 10.0,
        ("y", "C"): 99.0,
    }
    res = me.evaluate_metric(human, metric, resamples=0)
    assert res["segments"] == 5 and res["metric_only_segments"] == 1 and res["human_only_segments"] == 0
    a = me.align(human, metric)
    hs, ms = me.system_means(a)
    assert dict(zip(a.systems, hs)) == {"A": 5.0, "B": 2.5, "C": 1.0}
    assert dict(zip(a.systems, ms)) == {"A": 40.0, "B": 32.5, "C": 10.0}
    sys = res["system_level"]
    h, m = np.array([5.0, 2.5, 1.0]), np.array([40.0, 32.5, 10.0])
    r = ((h - h.mean()) * (m - m.mean())).sum() / math.sqrt(((h - h.mean()) ** 2).sum() * ((m - m.mean()) ** 2).sum())
    assert sys["pearson"]["value"] == pytest.approx(r)
    assert sys["spearman"]["value"] == 1.0 and sys["kendall"]["value"] == 1.0
    assert sys["pairwise_accuracy"]["value"] == 1.0 and sys["systems"] == 3


def _random_task(seed, n_items=8, n_systems=10):
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=n_systems)
    human, metric = {}, {}
    for i in range(n_items):
        for s in range(n_systems):
            h = float(np.clip(np.round(3 + 1.5 * quality[s] + rng.normal()), 0, 6))
            human[(f"i{i}", f"s{s}")] = h
            metric[(f"i{i}", f"s{s}")] = 40 + 5 * h + 8 * rng.normal()
    return human, metric


def test_bootstrap_ci_contains_the_estimate_and_is_reproducible_with_the_seed():
    human, metric = _random_task(5)
    a = me.evaluate_metric(human, metric, resamples=300, seed=7)
    b = me.evaluate_metric(human, metric, resamples=300, seed=7)
    c = me.evaluate_metric(human, metric, resamples=300, seed=8)
    assert a == b and a["pearson"]["ci95"] != c["pearson"]["ci95"]
    stats_ = [a[k] for k in ("pearson", "spearman", "kendall", "pairwise_accuracy", "pairwise_accuracy_calibrated")]
    stats_ += [a["segment_level"]["item"][k] for k in me.CORRELATIONS]
    stats_ += [a["system_level"][k] for k in (*me.CORRELATIONS, "pairwise_accuracy")]
    for s in stats_:
        lo, hi = s["ci95"]
        assert lo <= s["value"] <= hi and lo < hi
    assert me.evaluate_metric(human, metric, resamples=0)["pearson"]["ci95"] is None


def test_human_score_is_the_mean_over_raters_of_the_summed_criteria():
    js = [
        Judgment(item_id="i", system="s", rater="r1", specific=2, general_1=2, general_2=1),
        Judgment(item_id="i", system="s", rater="r2", specific=1, general_1=0, general_2=0),
        Judgment(item_id="j", system="s", rater="r1", specific=0, general_1=0, general_2=0),
    ]
    ratings = me.ratings_from_judgments(js)
    assert ratings.means() == {("i", "s"): 3.0, ("j", "s"): 0.0} and ratings.annotations == 3
    assert ratings.criteria[("i", "s")] == [(2, 2, 1), (1, 0, 0)]


def test_inter_rater_agreement_by_hand():
    totals = {
        ("i1", "a"): [6.0, 6.0],
        ("i1", "b"): [3.0, 2.0],
        ("i2", "a"): [0.0, 0.0],
        ("i2", "b"): [4.0, 5.0, 1.0],
        ("i2", "c"): [5.0],
    }
    crit = {
        ("i1", "a"): [(2, 2, 2), (2, 2, 2)],
        ("i1", "b"): [(1, 1, 1), (1, 1, 0)],
        ("i2", "a"): [(0, 0, 0), (0, 0, 0)],
        ("i2", "b"): [(2, 1, 1), (2, 2, 1), (1, 0, 0)],
    }
    out = me.inter_rater_agreement(me.HumanRatings(totals, crit), resamples=50)
    a, b = [6, 3, 0, 4], [6, 2, 0, 5]
    assert out["segments"] == 4 and out["pearson"]["value"] == pytest.approx(stats.pearsonr(a, b).statistic)
    assert out["exact_agreement"]["value"] == 0.5 and out["mean_abs_diff"]["value"] == 0.5
    assert out["criteria_exact_agreement"]["specific"]["value"] == 1.0
    assert out["criteria_exact_agreement"]["general_1"]["value"] == 0.75
    assert out["criteria_exact_agreement"]["general_2"]["value"] == 0.75


# ---------------------------------------------------------------------------------------------
# files


def test_mtme_files_have_the_documented_layout(tmp_path):
    order = me.mtme_segment_order(["i2", "i1"], ["sysB", "sysA", "sysB"])
    assert order == [("i2", "sysA"), ("i1", "sysA"), ("i2", "sysB"), ("i1", "sysB")]
    seg = {("i2", "sysA"): 0.5, ("i1", "sysA"): 1.25, ("i2", "sysB"): -2.0}
    seg_path, sys_path = me.write_mtme_scores(tmp_path, "chrf", seg, me.system_scores(seg), order)
    assert seg_path.name == "chrf.seg.score" and sys_path.name == "chrf.sys.score"
    assert seg_path.read_text() == "sysA\t0.5\nsysA\t1.25\nsysB\t-2.0\nsysB\tNone\n"
    assert sys_path.read_text() == "sysA\t0.875\nsysB\t-2.0\n"
    assert me.write_mtme_docs(tmp_path, ["i2", "i1"], {"i2": "tense"}).read_text() == "tense i2\nnone i1\n"
    with pytest.raises(UserError, match="tabs and newlines"):
        me.write_mtme_scores(tmp_path, "x", {}, {}, [("i", "bad\tname")])


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_metricalign_reader_accepts_the_three_human_forms(tmp_path):
    path = _write_jsonl(
        tmp_path / "ma.jsonl",
        [
            {"item_id": "i1", "system": "a", "dimension": "idiom", "human": 4.5, "chrf": 41.2, "comet": 0.8},
            {"item_id": "i1", "system": "b", "dimension": "idiom", "human": [3, 5], "chrf": 30.0, "comet": None},
            {
                "item_id": "i2",
                "system": "a",
                "human": [
                    {"specific": 2, "general_1": 1, "general_2": 1},
                    {"specific": 1, "general_1": 1, "general_2": 0},
                ],
                "chrf": 50,
            },
        ],
    )
    data = me.read_metricalign(path)
    assert data.ratings.means() == {("i1", "a"): 4.5, ("i1", "b"): 4.0, ("i2", "a"): 3.0}
    assert data.ratings.criteria == {("i2", "a"): [(2, 1, 1), (1, 1, 0)]}
    assert data.metrics == {
        "chrf": {("i1", "a"): 41.2, ("i1", "b"): 30.0, ("i2", "a"): 50.0},
        "comet": {("i1", "a"): 0.8},
    }
    assert data.dimensions == {"i1": "idiom"}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"item_id": "i", "system": "a", "human": 7, "chrf": 1}', ":1: field 'human': expected a score from 0 to 6"),
        ('{"item_id": "i", "system": "a", "human": [2, "x"], "chrf": 1}', ":1: field 'human[1]': expected a number"),
        (
            '{"item_id": "i", "system": "a", "human": [{"specific": 3, "general_1": 0, "general_2": 0}], "chrf": 1}',
            ":1: field 'human[0].specific': expected 0, 1 or 2",
        ),
        ('{"item_id": "i", "system": "a", "human": 3, "chrf": "41"}', ":1: field 'chrf': expected a metric score"),
        ('{"item_id": "i", "human": 3, "chrf": 1}', ":1: field 'system': missing"),
        ('{"item_id": "i", "system": "a", "chrf": 1}', ":1: field 'human': missing"),
        ('{"item_id": "i", "system": "a", "human": 3, "dimension": "poetry", "chrf": 1}', ":1: field 'dimension'"),
        ('{"item_id": "i", "system": "a", "human": []}', ":1: field 'human': empty list"),
        ("{not json", ":1: not valid JSON"),
    ],
)
def test_metricalign_reader_errors_name_file_line_and_field(tmp_path, line, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", [line])
    with pytest.raises(UserError) as err:
        me.read_metricalign(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_metricalign_reader_names_the_second_line_of_a_duplicate(tmp_path):
    row = {"item_id": "i", "system": "a", "human": 3, "bleu": 1}
    path = _write_jsonl(tmp_path / "dup.jsonl", [row, "", row])
    with pytest.raises(UserError, match=r"dup.jsonl:3: field 'system': duplicate segment"):
        me.read_metricalign(path)


# ---------------------------------------------------------------------------------------------
# end to end


def test_official_sample_meta_eval_uses_every_annotation_and_writes_the_contract(tmp_path, capsys):
    out = tmp_path / "me"
    main(
        [
            "diting",
            "meta-eval",
            "--official",
            str(OFFICIAL_SAMPLE),
            "--metric",
            "chrf",
            "bleu",
            "--resamples",
            "100",
            "--out",
            str(out),
        ]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["human"] == {**m["human"], "segments": 129, "annotations": 230, "items": 6, "systems": 23}
    assert m["metric_names"] == ["chrf", "bleu"] and "signature" in m and "tok:13a" in m["signatures"]["bleu"]
    assert (out / "config.yaml").exists()
    for name in ("chrf", "bleu"):
        r = m["metrics"][name]
        assert r["segments"] == 129 and r["annotations"] == 230 and r["items"] == 6
        for key in ("pearson", "spearman", "kendall", "pairwise_accuracy"):
            assert set(r[key]) >= {"value", "ci95"} and len(r[key]["ci95"]) == 2
        assert set(r["segment_level"]) == {"none", "item", "system"} and r["segment_level"]["item"]["groups"] == 6
        assert r["system_level"]["systems"] == 23 and "epsilon" in r["pairwise_accuracy_calibrated"]
        assert set(r["per_dimension"]) == {"idiom", "terminology", "tense", "zero_pronoun"}
        assert r["per_dimension"]["idiom"]["segment_level"]["none"]["pearson"]["ci95"] is None  # one item
    assert m["inter_rater"]["segments"] == 101 and m["inter_rater"]["criteria_segments"] == 101
    human = (out / "mtme" / "human.seg.score").read_text().splitlines()
    assert len(human) == 23 * 6 and sum(line.endswith("\tNone") for line in human) == 138 - 129
    assert len((out / "mtme" / "chrf.sys.score").read_text().splitlines()) == 23
    assert (out / "mtme" / "segments.docs").read_text().splitlines()[0] == "idiom official-idiom-001"
    assert (out / "figures" / "metric_vs_human.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "129 segments (230 annotations)" in printed
    # system-level SPA: in metrics.json, on each metric's summary line and in report.md's table, one value
    report = (out / "report.md").read_text()
    assert "Thompson et al. 2024" in report and "|p_metric - p_human|" in report and "| SPA (sys) |" in report
    assert m["files"]["report"].startswith("report.md")
    for name in ("chrf", "bleu"):
        spa = m["metrics"][name]["system_level"]["soft_pairwise_accuracy"]
        assert 0 <= spa["value"] <= 1 and 0 < spa["pairs"] <= 23 * 22 // 2 and spa["ci95"] is None
        shown = f"{spa['value']:.3f}"
        (line,) = [x for x in printed.splitlines() if x.startswith(f"{name}: ")]
        assert line.endswith(f"SPA {shown}")
        (row,) = [x for x in report.splitlines() if x.startswith(f"| {name} |")]
        assert row.rstrip(" |").endswith(shown)


def test_meta_eval_from_metricalign_file_and_usage_errors(tmp_path, capsys):
    human, metric = _random_task(9, n_items=4, n_systems=6)
    rows = [
        {"item_id": i, "system": s, "dimension": "tense", "human": [h, h], "ter": -v, "chrf": v}
        for (i, s), h in human.items()
        for v in [metric[(i, s)]]
    ]
    path = _write_jsonl(tmp_path / "ma.jsonl", rows)
    main(
        [
            "diting",
            "meta-eval",
            "--metricalign",
            str(path),
            "--metric",
            "ter",
            "chrf",
            "--resamples",
            "20",
            "--out",
            str(tmp_path / "ma"),
        ]
    )
    m = json.loads((tmp_path / "ma" / "metrics.json").read_text())
    assert m["metrics"]["ter"]["orientation"].startswith("negated")
    assert m["metrics"]["ter"]["pearson"]["value"] == pytest.approx(m["metrics"]["chrf"]["pearson"]["value"])
    assert m["inter_rater"]["exact_agreement"]["value"] == 1.0
    seg = (tmp_path / "ma" / "mtme" / "ter.seg.score").read_text().splitlines()[0]
    assert float(seg.split("\t")[1]) == pytest.approx(metric[("i0", "s0")])  # TER negated in the files
    with pytest.raises(SystemExit):
        main(["diting", "meta-eval", "--metricalign", str(path), "--metric", "bleu", "--out", str(tmp_path / "x")])
    assert "metric 'bleu' not in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["diting", "meta-eval", "--judgments", str(path), "--out", str(tmp_path / "x")])
    assert "go together" in capsys.readouterr().err


def test_resamples_and_seed_are_bounded(tmp_path, capsys):
    human, metric = _random_task(3, n_items=3, n_systems=3)
    ratings = me.HumanRatings({k: [v] for k, v in human.items()})
    for call in (
        lambda **kw: me.meta_evaluate(ratings, {"m": metric}, **kw),
        lambda **kw: me.evaluate_metric(human, metric, **kw),
        lambda **kw: me.inter_rater_agreement(ratings, **kw),
        lambda **kw: me.resample_counts(3, **kw),
    ):
        with pytest.raises(UserError, match=f"resamples must be an integer from 0 to {me.MAX_RESAMPLES}, got 100001"):
            call(resamples=me.MAX_RESAMPLES + 1, seed=0)
        with pytest.raises(UserError, match="seed must be a non-negative integer"):
            call(resamples=10, seed=-3)
    rows = [{"item_id": i, "system": s, "human": h, "chrf": metric[(i, s)]} for (i, s), h in human.items()]
    path = _write_jsonl(tmp_path / "ma.jsonl", rows)
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["diting", "meta-eval", "--metricalign", str(path), "--resamples", "1000000", "--out", str(tmp_path / "o")]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Invalid value for '--resamples'" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "tab\there"])
def test_metric_names_that_cannot_name_a_file_are_refused(tmp_path, name):
    path = _write_jsonl(tmp_path / "ma.jsonl", [{"item_id": "i", "system": "a", "human": 3, name: 1.0}])
    with pytest.raises(UserError, match=r"ma.jsonl:1: field .*: cannot name the mt-metrics-eval files"):
        me.read_metricalign(path)


def test_an_llm_judges_scores_are_meta_evaluated_as_a_metric_with_failures_kept_or_dropped(tmp_path):
    from genrep.diting.official import load_official
    from genrep.diting.schema import Judgment, write_records

    data = load_official(OFFICIAL_SAMPLE)
    segments = sorted({(j.item_id, j.system) for j in data.judgments})
    # a judge that copies the first human rater's criteria, except that it failed on the first 10 segments
    first = {}
    for j in data.judgments:
        first.setdefault((j.item_id, j.system), j)
    judged = [
        Judgment(item_id=i, system=s, rater="agenteval", specific=0, general_1=0, general_2=0, failed=True)
        if n < 10
        else first[(i, s)].model_copy(update={"rater": "agenteval"})
        for n, (i, s) in enumerate(segments)
    ]
    write_records(tmp_path / "scores.jsonl", judged)
    runs = {}
    for policy in ("include", "exclude"):
        out = tmp_path / policy
        main(
            [
                *("diting", "meta-eval", "--official", str(OFFICIAL_SAMPLE), "--metric", "chrf"),
                *("--judge-scores", str(tmp_path / "scores.jsonl"), "--failed", policy),
                *("--resamples", "0", "--out", str(out)),
            ]
        )
        runs[policy] = json.loads((out / "metrics.json").read_text())
    assert runs["include"]["metric_names"] == ["chrf", "agenteval"]
    assert runs["include"]["metrics"]["agenteval"]["segments"] == 129
    assert runs["exclude"]["metrics"]["agenteval"]["segments"] == 119
    assert runs["exclude"]["metrics"]["chrf"] == runs["include"]["metrics"]["chrf"]
    include, exclude = (runs[p]["metrics"]["agenteval"]["pearson"]["value"] for p in ("include", "exclude"))
    assert exclude > include  # the failures recorded as 0 pull the correlation down
