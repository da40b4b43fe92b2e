import base64

import numpy as np

from genrep.core.images import image_grid, png_bytes
from genrep.core.report import Report
from genrep.core.rundir import RunDir, atomic_write_json


def test_report_writes_markdown_and_self_contained_html(tmp_path):
    png = png_bytes(np.zeros((4, 4), np.uint8))
    r = Report("T")
    r.section("S").text("hello <b>").table([{"a": 1, "b": 0.123456}]).code("x | y").image(png, "cap", "p.png")
    md, html = r.write(tmp_path)
    text = md.read_text()
    assert "| a | b |" in text and "| 1 | 0.1235 |" in text and "![cap](figures/p.png)" in text
    page = html.read_text()
    assert "hello &lt;b&gt;" in page and base64.b64encode(png).decode() in page
    assert (tmp_path / "figures" / "p.png").read_bytes() == png


def test_image_grid_layout():
    imgs = np.stack([np.full((2, 3), i * 40, np.uint8) for i in range(5)])
    grid = image_grid(imgs, nrow=3, pad=1, pad_value=255)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1)
    assert grid[1, 1] == 0 and grid[1, 5] == 40 and grid[4, 5] == 160
    assert grid[4, 9] == 255  # the empty sixth cell stays padding


def test_rundir_writes_config_and_signed_metrics(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class C:
        x: int = 1

    run = RunDir(tmp_path / "run")
    run.write_config(C())
    run.write_metrics({"psnr": np.float32(20.5)}, command="genrep test")
    assert (run / "config.yaml").read_text() == "x: 1\n"
    m = run.read_metrics()
    assert m["psnr"] == 20.5 and m["signature"]["command"] == "genrep test"
    atomic_write_json(tmp_path / "a.json", {"k": 1})
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "plain.json").write_text("{}")  # the same permissions as a file written with open()
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777
