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
        (["demo", "--set", "seed=abc"], "genrep: error: config: seed: expected an integer, got 'abc'"),
        (["demo", "--set", "profile=slow"], "genrep: error: config: profile: expected one of 'fast', 'full'"),
        (["assets", "check", "nosuch"], "genrep: error: unknown asset 'nosuch'"),
        (["nosuchcommand"], "genrep: error: No such command 'nosuchcommand'"),
        (["demo", "--profile", "huge"], "genrep: error: Invalid value for '--profile'"),
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
    assert code == 2 and err.strip() == f"genrep: error: {bad}: unknown key 'lmz' (known: lms, max_new_tokens, profile, seed)"


def test_debug_shows_the_traceback(capsys):
    code, _, err = run_cli(capsys, "--debug", "demo", "--config", "missing.yaml")
    assert code == 2 and "Traceback" in err and err.rstrip().endswith("config file not found")


def test_assets_lists_every_asset(capsys):
    code, out, _ = run_cli(capsys, "assets")
    assert code == 0
    for name in ("effnet-lite0", "smollm2-135m", "gemma3-270m", "fashion-mnist", "hsk-zh-en", "skimage-photos"):
        assert name in out


def test_console_script_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genrep", "demo", "--set", "seed=x", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "genrep: error: config: seed: expected an integer, got 'x'\n"


def test_assets_check_command_succeeds(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genrep", "assets", "check", "effnet-lite0", "fashion-mnist"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("OK") == 2 and "FAIL" not in proc.stdout


def test_assets_check_exits_1_when_an_asset_fails(capsys, monkeypatch):
    from dataclasses import replace

    from genrep.core import assets

    def broken_loader():
        raise RuntimeError("weights corrupt")

    monkeypatch.setitem(assets.ASSETS, "broken", replace(assets.ASSETS["hsk-zh-en"], name="broken", loader=broken_loader))
    code, out, _ = run_cli(capsys, "assets", "check", "broken", "hsk-zh-en")
    assert code == 1
    assert "FAIL" in out and "weights corrupt" in out and "OK" in out
