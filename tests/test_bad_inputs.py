"""A table of bad inputs, tried the way a new user would, across every command.

Each case must end with exit code 2, exactly one line on stderr that names the file or option at
fault, no traceback, and every input file byte-for-byte unchanged. An audit hook also records
any attempt to open an input file for writing, so "unchanged" cannot hide a truncate-and-rewrite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genrep.cli import main

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT
_watch: dict[str, list] = {"dirs": [], "writes": []}


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _watch["dirs"]:
        return
    path, mode, flags = args
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & _WRITE_FLAGS
    )
    if writing:
        full = os.path.abspath(os.fsdecode(path))
        if any(full.startswith(d + os.sep) for d in _watch["dirs"]):
            _watch["writes"].append(full)


sys.addaudithook(_audit)


def _hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A directory of the user's (mostly broken) input files."""
    d = tmp_path / "in"
    d.mkdir()
    good = [
        {"item_id": "idiom-001", "system": "a", "output": "He was beside himself.", "meta": {}},
        {"item_id": "idiom-002", "system": "a", "output": "A drop in the ocean.", "meta": {}},
    ]
    text = "".join(json.dumps(r) + "\n" for r in good)
    (d / "good.jsonl").write_text(text.rstrip("\n"))  # a valid last record without its newline
    (d / "torn.jsonl").write_text(text + '{"item_id": "idiom-003", "sys')
    triplet = json.dumps({"anchor": "你好", "positive": "hello", "negative": "goodbye"})
    (d / "torn_triplets.jsonl").write_text(f"{triplet}\n{triplet}\n{triplet[:20]}")
    (d / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\x9c\n")
    (d / "binary.csv").write_bytes(b"name,generative,representation\n\xff\xfe,1,2\n")
    (d / "judgments.csv").write_text(
        "\ufeffitem_id,system,rater,specific,general_1,general_2,rationale,mood\nidiom-001,a,r1,2,1,0,,happy\n"
    )
    (d / "latin1.yaml").write_bytes("seed: 1  # café\n".encode("latin-1"))
    (d / "notnpz.npz").write_text("not a zip archive\n")
    (d / "afile").write_text("I am a file, not a directory\n")
    (d / "notamodel").mkdir()
    (d / "notamodel" / "README").write_text("nothing here\n")
    return d


def _cases(d: Path, out: Path) -> list[tuple[list[str], str]]:
    o = str(out)
    return [
        # file contents: not UTF-8, not the kind of file expected
        (["demo", "--config", f"{d}/latin1.yaml", "--out", o], "latin1.yaml:1: not UTF-8 text"),
        (["lco", "grsl", "--points", f"{d}/binary.csv", "--out", o], "binary.csv"),
        (["rae", "eval", "--samples", f"{d}/notnpz.npz", "--out", o], "notnpz.npz: not a readable .npz file"),
        (["lco", "merge", "--model", f"{d}/notamodel", "--out", o], "notamodel: not a trained LCO model"),
        (["lco", "train", "--data", f"{d}/torn_triplets.jsonl", "--out", o], "torn_triplets.jsonl:3: not valid JSON"),
        (["lco", "train", "--data", f"{d}/binary.jsonl", "--out", o], "binary.jsonl:1: not UTF-8 text"),
        (["diting", "score", "--translations", f"{d}/torn.jsonl", "--out", o], "torn.jsonl:3: not valid JSON"),
        (["diting", "score", "--translations", f"{d}/binary.jsonl", "--out", o], "binary.jsonl:1: not UTF-8 text"),
        (["diting", "agenteval", "--translations", f"{d}/torn.jsonl", "--out", o], "torn.jsonl:3: not valid JSON"),
        (
            [
                "diting",
                "meta-eval",
                "--judgments",
                f"{d}/judgments.csv",
                "--translations",
                f"{d}/torn.jsonl",
                "--items",
                "starter",
                "--out",
                o,
            ],
            "torn.jsonl:3: not valid JSON",
        ),
        (["diting", "leaderboard", "--judgments", f"{d}/judgments.csv", "--out", o], "unknown column 'mood'"),
        (["diting", "load-official", f"{d}/binary.jsonl", "--out", o], "binary.jsonl:1: not UTF-8 text"),
        (["diting", "bench", "info", f"{d}/binary.jsonl"], "binary.jsonl:1: not UTF-8 text"),
        (
            ["diting", "translate", "--bench", f"{d}/binary.jsonl", "--system", "a=local:smollm2-135m", "--out", o],
            "binary.jsonl:1: not UTF-8 text",
        ),
        # numbers: limits, finite floats, learning rates, counts
        (["rae", "cache-latents", "--limit", "0", "--out", o], "--limit must be positive"),
        (["rae", "reconstruct", "--limit", "-4", "--out", o], "--limit: must be >= 1, got -4"),
        (["rae", "sample", "--guidance", "cfg", "--scale", "nan", "--out", o], "--scale: must be a finite number"),
        (["rae", "train-decoder", "--set", "lr=0", "--out", o], "--set lr: must be > 0, got 0"),
        (["rae", "train-dit", "--max-steps", "0", "--out", o], "--max-steps: must be >= 1, got 0"),
        (["lco", "train", "--set", "temperature=nan", "--out", o], "--set temperature: must be a finite number"),
        (["lco", "eval", "--limit", "-2", "--out", o], "--limit: must be >= 1, got -2"),
        (["lco", "eval", "--limit", "0", "--out", o], "--limit: must be >= 1, got 0"),
        (["lco", "analyze", "--limit", "0", "--out", o], "--limit: must be >= 1, got 0"),
        (["lco", "pretrain-vlm", "--steps", "0", "--out", o], "--steps: must be >= 1, got 0"),
        (["lco", "grsl-experiment", "--set", "refine.lr=0", "--out", o], "--set refine.lr: must be > 0, got 0"),
        (
            [
                "lco",
                "soup",
                "--model",
                f"{d}/notamodel",
                "--model",
                f"{d}/notamodel",
                "--weight",
                "nan",
                "--weight",
                "1",
                "--out",
                o,
            ],
            "--weight must be finite",
        ),
        (
            ["diting", "translate", "--limit", "0", "--system", "a=local:smollm2-135m", "--out", o],
            "--limit: must be >= 1, got 0",
        ),
        (
            ["diting", "translate", "--set", "temperature=nan", "--system", "a=local:smollm2-135m", "--out", o],
            "--set temperature: must be a finite number",
        ),
        (
            ["diting", "agenteval", "--limit", "-1", "--translations", f"{d}/good.jsonl", "--out", o],
            "--limit: must be >= 1, got -1",
        ),
        (["demo", "--set", "max_new_tokens=0", "--out", o], "--set max_new_tokens: must be >= 1, got 0"),
        (
            ["diting", "meta-eval", "--official", f"{d}/good.jsonl", "--resamples", "100000000", "--out", o],
            "--resamples",
        ),
        (
            ["diting", "leaderboard", "--judgments", f"{d}/judgments.csv", "--resamples", "-1", "--out", o],
            "--resamples",
        ),
        # serve: ports and hosts
        (["diting", "serve", "--port", "99999"], "--port"),
        (["diting", "serve", "--port", "-1"], "--port"),
        (["diting", "serve", "--host", "0.0.0.0"], "--allow-remote"),
        # --out: an existing file, a path under a file, arguments that are not UTF-8
        (
            ["diting", "score", "--translations", f"{d}/good.jsonl", "--out", f"{d}/afile"],
            "afile: exists and is not a directory",
        ),
        (["lco", "eval", "--out", "/dev/null/run"], "/dev/null/run: cannot create the directory"),
        (["diting", "score", "--translations", f"{d}/bad\udcff.jsonl", "--out", o], "is not valid UTF-8"),
    ]


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return info.value.code, capsys.readouterr().err


def _check(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("genrep: error: "), err
    assert "Traceback" not in err
    assert expected in err, err


def test_bad_inputs_table(capsys, inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    before = _hashes(inputs)
    _watch["dirs"], _watch["writes"] = [str(inputs)], []
    failures = []
    try:
        for argv, expected in _cases(inputs, out):
            code, err = _run(capsys, argv)
            try:
                _check(code, err, expected)
            except AssertionError:
                failures.append(f"{' '.join(argv[:2])}: exit {code}: {err.strip()!r} (expected {expected!r})")
            if out.exists() and any(out.iterdir()):
                failures.append(f"{' '.join(argv[:2])}: wrote {sorted(p.name for p in out.iterdir())} before failing")
                shutil.rmtree(out)
    finally:
        _watch["dirs"] = []
    assert not failures, "\n".join(failures)
    assert _watch["writes"] == [], f"opened inputs for writing: {_watch['writes']}"
    assert _hashes(inputs) == before


def test_second_process_on_the_same_out_fails_at_once_naming_the_holder(capsys, tmp_path: Path):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from genrep.core.files import OutLock; OutLock.acquire(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out.mkdir()
        assert holder.stdout.readline().strip() == "held"
        code, err = _run(
            capsys, ["diting", "translate", "--system", "a=local:smollm2-135m", "--limit", "1", "--out", str(out)]
        )
        _check(code, err, f"in use by another genrep run (PID {holder.pid})")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.stdin.close()
        holder.wait()  # it exits as soon as its stdin closes
    # once the holder is gone the directory is free again (the lock dies with its process)
    from genrep.core.files import OutLock

    lock = OutLock.acquire(out)
    lock.release()
    assert not (out / ".lock").exists()


def test_full_disk_is_one_line_naming_the_log(capsys, tmp_path: Path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    from tests.diting.fakes import EchoBackend

    monkeypatch.setattr("genrep.diting.llm.make_backend", lambda spec, **kw: EchoBackend())
    out = tmp_path / "run"
    out.mkdir()
    (out / "translations.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    code, err = _run(
        capsys, ["diting", "translate", "--system", "a=local:smollm2-135m", "--limit", "1", "--out", str(out)]
    )
    _check(code, err, "translations.jsonl: no space left on device")
