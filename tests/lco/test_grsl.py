from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from genrep.core.errors import UserError
from genrep.lco.grsl import GRSLPoint, fit_grsl, plot_grsl, read_points

POINTS = [
    GRSLPoint("tiny", 10.0, 21.0),
    GRSLPoint("small", 20.0, 41.0),
    GRSLPoint("medium", 35.0, 71.0),
    GRSLPoint("large", 50.0, 101.0),
]


def test_fit_exact_line():
    fit = fit_grsl(POINTS)  # representation = 2 * generative + 1
    assert fit["slope"] == pytest.approx(2.0)
    assert fit["intercept"] == pytest.approx(1.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["pearson"] == pytest.approx(1.0)
    assert fit["spearman"] == pytest.approx(1.0)
    assert fit["n"] == 4


def test_fit_matches_scipy_and_polyfit_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, size=12)
    y = 0.3 * x + rng.normal(scale=8.0, size=12)
    fit = fit_grsl([GRSLPoint(f"m{i}", float(a), float(b)) for i, (a, b) in enumerate(zip(x, y))])
    slope, intercept = np.polyfit(x, y, 1)
    assert fit["slope"] == pytest.approx(slope, abs=1e-10)
    assert fit["intercept"] == pytest.approx(intercept, abs=1e-8)
    assert fit["r2"] == pytest.approx(pearsonr(x, y).statistic ** 2, abs=1e-12)
    assert fit["pearson"] == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    assert fit["pearson_p"] == pytest.approx(pearsonr(x, y).pvalue, rel=1e-9)
    assert fit["spearman"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert fit["spearman_p"] == pytest.approx(spearmanr(x, y).pvalue, rel=1e-9)


def test_fit_needs_three_points():
    with pytest.raises(UserError, match="at least 3 points"):
        fit_grsl(POINTS[:2])


def test_read_points_csv_and_jsonl_round_trip(tmp_path):
    csv_path = tmp_path / "points.csv"
    lines = ["name,extra,generative,representation"]
    lines += [f"{p.name},x,{p.generative},{p.representation}" for p in POINTS]
    csv_path.write_text("\n".join(lines) + "\n\n")
    assert read_points(csv_path) == POINTS

    jsonl_path = tmp_path / "points.jsonl"
    records = [
        {"name": p.name, "generative": p.generative, "representation": p.representation, "note": 1} for p in POINTS
    ]
    jsonl_path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert read_points(jsonl_path) == POINTS


def test_read_points_errors(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("name,generative,representation\na,1,2\nb,oops,3\nc,3,4\n")
    with pytest.raises(UserError, match=r"points\.csv:3: field 'generative'"):
        read_points(path)
    path.write_text("name,generative\na,1\n")
    with pytest.raises(UserError, match="representation"):
        read_points(path)
    path.write_text("name,generative,representation\na,1,2\nb,2,3\n")
    with pytest.raises(UserError, match="at least 3 points"):
        read_points(path)

    jpath = tmp_path / "points.jsonl"
    jpath.write_text(
        '{"name": "a", "generative": 1, "representation": 2}\n\n'
        '{"name": "b", "generative": 2, "representation": "high"}\n'
    )
    with pytest.raises(UserError, match=r"points\.jsonl:3: field 'representation'"):
        read_points(jpath)
    jpath.write_text('{"name": "a", "representation": 2}\n')
    with pytest.raises(UserError, match=r"points\.jsonl:1: field 'generative': missing"):
        read_points(jpath)

    with pytest.raises(UserError, match="unknown points file type"):
        read_points(tmp_path / "points.txt")


def test_plot_grsl_png():
    png = plot_grsl(POINTS, fit_grsl(POINTS), title="GRSL")
    assert png.startswith(b"\x89PNG")
