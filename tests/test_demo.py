import json
import subprocess
import sys

import pytest
import yaml


def test_run_demo_times_every_section_and_keeps_going_past_a_missing_asset(tmp_path, monkeypatch, capsys):
    """The report machinery in seconds: the systems' sections are replaced by two stand-ins."""
    from genrep import demo
    from genrep.core.errors import AssetError

    def fine(report, cfg, run):
        report.section("stand-in").text("ran")
        return {"stand_in": {"profile": cfg.profile}}

    def missing(report, cfg, run):
        raise AssetError("asset 'x' is not installed: pip install x")

    monkeypatch.setattr(demo, "system_sections", lambda: [("first", fine), ("second", missing)])
    md_path, _ = demo.run_demo(demo.DemoConfig(profile="smoke", lms=[]), tmp_path / "d")
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["stand_in"] == {"profile": "smoke"} and metrics["skipped"] == [
        "second: asset 'x' is not installed: pip install x"
    ]
    assert {"bundled assets", "first", "second"} <= set(metrics["section_seconds"])
    assert sum(metrics["section_seconds"].values()) <= metrics["seconds"] + 0.5
    md = md_path.read_text()
    assert md.index("## stand-in") < md.index("## second: skipped") < md.index("## Run time per section")
    err = capsys.readouterr().err
    assert "[demo] first:" in err and "[demo]   total" in err


@pytest.mark.slow  # the whole demo (smoke profile): about 4 minutes on 2 cores; make test-all runs it
def test_demo_writes_a_report_with_pictures(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genrep",
            "demo",
            "--out",
            str(out),
            "--profile",
            "smoke",
            "--set",
            "lms=[smollm2-135m]",
            "--set",
            "max_new_tokens=8",
        ],
        capture_output=True,
        text=True,  # no time limit: pytest-timeout is the hang guard
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["assets_ok"] == metrics["assets_total"] == 6
    assert metrics["effnet_top1"]["chelsea"].split(" (")[0] in {
        "tabby cat",
        "Egyptian Mau",
        "Persian cat",
        "Siamese cat",
        "a cat having a striped coat",
    }
    assert metrics["signature"]["genrep"] and "demo" in metrics["signature"]["command"]
    assert metrics["lm_replies"]["smollm2-135m"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["lms"] == ["smollm2-135m"] and cfg["profile"] == "smoke"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    md = (out / "report.md").read_text()
    assert "## Bundled assets" in md and "figures/fashion_mnist.png" in md
    assert (out / "figures" / "fashion_mnist.png").stat().st_size > 1000
    assert set(metrics["rae"]) >= {"psnr", "ssim", "rfd_effnet"} and "figures/rae_reconstructions.png" in md
    assert {"fd_effnet", "class_accuracy", "dit_steps"} <= set(metrics["rae"]) and "figures/rae_generated.png" in md
    assert len(metrics["lco_grsl"]["backbones"]) == 3 and "figures/lco_transfer.png" in md
    assert set(metrics["diting"]["chrf"]) == {"smollm2", "gemma3"} and "figures/diting_chrf.png" in md
    assert metrics["diting"]["human_annotations"] == 230 and set(metrics["diting"]["meta_eval"]) == {"chrf", "bleu"}
    assert set(metrics["lco"]["before"]) == {"recall@1", "ndcg@10", "anisotropy"} and "figures/lco_retrieval.png" in md
    assert set(metrics["lco"]["anisotropy_per_layer"]) == {"base", "LoRA-tuned"}
    assert metrics["diting"]["agenteval"]["items"] == 1 and metrics["diting"]["agenteval"]["failed"] == 0
    assert "AgentEval with the bundled SmolLM2" in md and "round 1 judge:" in md
    # the run-time table: every section timed, in metrics.json, the report and the console
    sections = metrics["section_seconds"]
    assert {"bundled assets", "RAE (stage 1 + stage 2)", "LCO-EMB: tiny VLM", "DITING"} <= set(sections)
    assert all(v >= 0 for v in sections.values()) and sum(sections.values()) <= metrics["seconds"] + 1
    assert "## Run time per section" in md and "[demo] time per section:" in proc.stderr
    assert 0.0 <= metrics["rae"]["reconstruction_class_accuracy"] <= 1.0
    assert metrics["rae"]["dit_precision"]["requested"] == "auto"
