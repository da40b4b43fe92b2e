import subprocess
import sys

import pytest

from genrep.cli import main


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--config", "missing.yaml"], "genrep: error: missing.yaml: config file not found"),
        (["demo", "--set", "nosuch=1"], "genrep: error: config: unknown key 'nosuch'"),
        (["demo", "--set", "seed=abc"], "genrep: error: --set seed: expected an integer, got 'abc'"),
        (["demo", "--set", "profile=slow"], "genrep: error: --set profile: expected one of 'fast', 'full'"),
        (["assets", "check", "nosuch"], "genrep: error: unknown asset 'nosuch'"),
        (["assets", "prepare", "nosuch"], "genrep: error: unknown asset 'nosuch'"),
        (["nosuchcommand"], "genrep: error: No such command 'nosuchcommand'"),
        (["demo", "--profile", "huge"], "genrep: error: Invalid value for '--profile'"),
        (
            ["diting", "serve", "--port", "0"],
            "genrep: error: Invalid value for '--port': 0 is not in the range 1<=x<=65535",
        ),
        (["diting", "serve", "--host", "0.0.0.0"], "genrep: error: refusing to serve on non-loopback host '0.0.0.0'"),
        (
            ["diting", "serve", "--host", "bad host"],
            "genrep: error: host 'bad host': not an IP address or a valid host",
        ),
        (
            ["diting", "leaderboard", "--resamples", "100001"],
            "genrep: error: Invalid value for '--resamples': 100001 is not in the range 0<=x<=100000",
        ),
        (["diting", "meta-eval", "--seed", "-1"], "genrep: error: Invalid value for '--seed'"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_config_file_errors_name_the_file(capsys, tmp_path):
    bad = tmp_path / "demo.yaml"
    bad.write_text("profile: fast\nlmz: []\n")
    code, _, err = run_cli(capsys, "demo", "--config", str(bad))
    assert (
        code == 2
        and err.strip() == f"genrep: error: {bad}: unknown key 'lmz' (known: lms, max_new_tokens, profile, seed)"
    )


def test_debug_shows_the_traceback(capsys):
    code, _, err = run_cli(capsys, "--debug", "demo", "--config", "missing.yaml")
    assert code == 2 and "Traceback" in err and err.rstrip().endswith("config file not found")


def test_assets_lists_every_asset(capsys):
    code, out, _ = run_cli(capsys, "assets")
    assert code == 0
    for name in ("effnet-lite0", "smollm2-135m", "gemma3-270m", "fashion-mnist", "hsk-zh-en", "skimage-photos"):
        assert name in out


def test_console_script_exit_code_and_single_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "genrep", "demo", "--set", "seed=x", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == "genrep: error: --set seed: expected an integer, got 'x'\n"


def test_assets_check_command_succeeds(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "genrep", "assets", "check", "effnet-lite0", "fashion-mnist"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("OK") == 2 and "FAIL" not in proc.stdout


def test_assets_check_exits_1_when_an_asset_fails(capsys, monkeypatch):
    from dataclasses import replace

    from genrep.core import assets

    def broken_loader():
        raise RuntimeError("weights corrupt")

    monkeypatch.setitem(
        assets.ASSETS, "broken", replace(assets.ASSETS["hsk-zh-en"], name="broken", loader=broken_loader)
    )
    code, out, _ = run_cli(capsys, "assets", "check", "broken", "hsk-zh-en")
    assert code == 1
    assert "FAIL" in out and "weights corrupt" in out and "OK" in out


@pytest.fixture
def fake_lm(monkeypatch):
    """An asset "fake-lm" that needs materialising (instantly), plus "gone", which is not installed."""
    from dataclasses import replace

    from genrep.core import assets

    state = {"built": False, "builds": 0, "error": None}

    def build():
        if state["error"] is not None:
            raise state["error"]
        state["built"], state["builds"] = True, state["builds"] + 1

    monkeypatch.setitem(
        assets.ASSETS,
        "fake-lm",
        replace(assets.ASSETS["hsk-zh-en"], name="fake-lm", materialized=lambda: state["built"], materialize=build),
    )
    monkeypatch.setitem(
        assets.ASSETS,
        "gone",
        replace(assets.ASSETS["hsk-zh-en"], name="gone", install="pip install gone", available=lambda: False),
    )
    return state


def test_assets_prepare_materialises_once_and_reports_one_line_each(capsys, fake_lm):
    code, out, err = run_cli(capsys, "assets", "prepare", "fake-lm", "gone", "hsk-zh-en")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0].startswith("fake-lm: materialised in ") and lines[0].endswith(" s")
    assert lines[1:3] == ["gone: missing: pip install gone", "hsk-zh-en: ready"]
    assert lines[3] == "note: not installed (optional, see the install command above): gone"
    assert lines[4].startswith("cache: ") and len(lines) == 5
    code, out, _ = run_cli(capsys, "assets", "prepare", "fake-lm", "hsk-zh-en")
    assert code == 0 and out.splitlines()[:2] == ["fake-lm: ready", "hsk-zh-en: ready"] and fake_lm["builds"] == 1
    code, out, _ = run_cli(capsys, "assets", "prepare", "--quiet", "fake-lm", "hsk-zh-en")
    assert code == 0 and out == ""


def test_assets_prepare_failure_is_one_line_with_exit_code_2(capsys, fake_lm):
    fake_lm["error"] = OSError("No space left on device\nmore detail")
    code, out, err = run_cli(capsys, "assets", "prepare", "hsk-zh-en", "fake-lm")
    assert code == 2 and out.splitlines() == ["hsk-zh-en: ready", "fake-lm: failed"]
    assert err == "genrep: error: materialising 'fake-lm' failed: OSError: No space left on device\n"


def test_assets_prepare_finds_the_bundled_lm_ready_without_loading_it(capsys, smollm2_dir, monkeypatch):
    from genrep.core.bundled import lm

    def no_loading(name):
        raise AssertionError(f"{name} is materialised already")

    monkeypatch.setattr(lm, "materialize", no_loading)
    code, out, _ = run_cli(capsys, "assets", "prepare", "smollm2-135m")
    assert code == 0 and out.splitlines()[0] == "smollm2-135m: ready"
