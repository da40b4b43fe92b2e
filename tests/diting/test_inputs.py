"""User inputs are read-only and strict: a file given to a command is never written, a bad one is one line.

Only DITING's own append logs inside ``--out`` have a torn last line repaired (see test_data.py and
the resume tests of translate and agenteval).
"""

import builtins
import errno
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting.agenteval import AgentEvalConfig, select_pairs
from genrep.diting.benchmark import load_benchmark
from genrep.diting.schema import Item, Judgment, Translation, append_record, read_log, write_records
from genrep.diting.translate import read_translation_log, read_translations


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``genrep ARGV``."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    """The message of a one-line CLI error (exit 2, no traceback)."""
    assert code == 2, err
    assert err.startswith("genrep: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("genrep: error: ").strip()


def fingerprint(path: Path) -> tuple[str, int, int]:
    """What must not change when a file is only read: its content hash, size and modification time."""
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(path)``: make a file and its directory read-only (chmod 444 / 555) and make every attempt
    to open the file for writing fail with EROFS, as on a read-only file system. The chmod alone does not
    stop root, the open guard does."""
    guarded: set[str] = set()
    real_open, real_os_open = builtins.open, os.open

    def is_guarded(file) -> bool:
        return isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(file)) in guarded

    def refuse(file):
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(file))

    def guarded_open(file, mode="r", *args, **kwargs):
        if is_guarded(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(file, flags, *args, **kwargs):
        if is_guarded(file) and flags & _WRITE_FLAGS:
            refuse(file)
        return real_os_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    made: list[Path] = []

    def protect(path: Path) -> Path:
        guarded.add(os.path.realpath(path))
        path.chmod(0o444)
        path.parent.chmod(0o555)
        made.append(path)
        return path

    yield protect
    for path in made:
        path.parent.chmod(0o755)
        path.chmod(0o644)


def _items(n=3) -> list[Item]:
    return load_benchmark("starter", ["idiom"], n)


def _translations(items, system="mt") -> list[Translation]:
    return [Translation(item_id=i.id, system=system, output=i.reference_en) for i in items]


def _jsonl_without_final_newline(path: Path, records) -> Path:
    text = "".join(json.dumps(r.model_dump(), ensure_ascii=False) + "\n" for r in records)
    path.write_text(text.removesuffix("\n"), encoding="utf-8")
    assert not path.read_bytes().endswith(b"\n")
    return path


def test_a_final_record_without_newline_is_scored_and_the_file_is_unchanged(tmp_path, capsys):
    items = _items(3)
    path = _jsonl_without_final_newline(tmp_path / "t.jsonl", _translations(items))
    before = fingerprint(path)
    assert [t.item_id for t in read_translations(path)] == [i.id for i in items]
    code, out, err = run_cli(
        capsys, "diting", "score", "--translations", path, "--metric", "chrf", "--out", tmp_path / "score"
    )
    assert code == 0, err
    m = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert m["systems"]["mt"]["items"] == 3 and m["systems"]["mt"]["chrf"] == pytest.approx(100.0)
    assert fingerprint(path) == before


def test_agenteval_and_meta_eval_read_translations_without_writing(tmp_path, capsys):
    items = _items(3)
    path = _jsonl_without_final_newline(tmp_path / "t.jsonl", _translations(items, "a") + _translations(items, "b"))
    before = fingerprint(path)
    pairs, skipped = select_pairs(AgentEvalConfig(translations=str(path)))
    assert len(pairs) == 6 and skipped == 0 and pairs[-1][1].system == "b"
    judgments = tmp_path / "j.jsonl"
    write_records(
        judgments,
        [
            Judgment(item_id=i.id, system=s, rater="r", specific=n % 3, general_1=2, general_2=1)
            for n, (i, s) in enumerate((i, s) for i in items for s in "ab")
        ],
    )
    code, _, err = run_cli(
        capsys,
        "diting",
        "meta-eval",
        "--judgments",
        judgments,
        "--translations",
        path,
        "--items",
        "starter",
        "--metric",
        "chrf",
        "--resamples",
        "0",
        "--out",
        tmp_path / "me",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "me" / "metrics.json").read_text())["metrics"]["chrf"]["segments"] == 6
    assert fingerprint(path) == before


def test_inputs_in_a_read_only_directory_work_and_are_not_written(tmp_path, capsys, read_only):
    items = _items(2)
    (tmp_path / "in").mkdir()
    path = _jsonl_without_final_newline(tmp_path / "in" / "t.jsonl", _translations(items))
    before = fingerprint(path)
    read_only(path)
    with pytest.raises(OSError, match="Read-only"):  # the guard works, whoever runs the test
        open(path, "ab")
    assert len(read_translations(path)) == 2
    code, _, err = run_cli(
        capsys, "diting", "score", "--translations", path, "--metric", "chrf", "--out", tmp_path / "score"
    )
    assert code == 0, err
    pairs, _ = select_pairs(AgentEvalConfig(translations=str(path)))
    assert len(pairs) == 2
    assert fingerprint(path) == before


def test_a_torn_last_line_of_an_input_is_an_error_naming_file_and_line(tmp_path, capsys):
    items = _items(2)
    path = tmp_path / "t.jsonl"
    write_records(path, _translations(items))
    with path.open("a", encoding="utf-8") as f:
        f.write('{"item_id": "x", "sys')  # what a crash in the middle of a write leaves
    before = fingerprint(path)
    with pytest.raises(UserError, match=r"t.jsonl:3: not valid JSON"):
        read_translations(path)
    with pytest.raises(UserError, match=r"t.jsonl:3: not valid JSON"):
        select_pairs(AgentEvalConfig(translations=str(path)))
    code, _, err = run_cli(capsys, "diting", "score", "--translations", path, "--out", tmp_path / "score")
    message = one_line_error(code, err)
    assert (
        message.startswith(f"{path}:3: not valid JSON (") and "re-running it with the same --out repairs it" in message
    )
    assert fingerprint(path) == before


def test_a_binary_input_is_a_one_line_error_and_unchanged(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"item_id": "a"}\n\x89PNG\r\n\x1a\n\x00\xff\xfe')
    before = fingerprint(path)
    code, _, err = run_cli(capsys, "diting", "score", "--translations", path, "--out", tmp_path / "score")
    message = one_line_error(code, err)
    assert message.startswith(f"{path}:2: not UTF-8 text") and "save the file as UTF-8" in message
    code, _, err = run_cli(capsys, "diting", "agenteval", "--translations", path, "--out", tmp_path / "ae")
    assert one_line_error(code, err).startswith(f"{path}:2: not UTF-8 text")
    assert fingerprint(path) == before and path.stat().st_size > 0


def test_a_missing_or_directory_input_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "diting", "score", "--translations", tmp_path / "nope.jsonl", "--out", tmp_path / "s"
    )
    assert one_line_error(code, err) == f"{tmp_path / 'nope.jsonl'}: translations file not found"
    code, _, err = run_cli(capsys, "diting", "score", "--translations", tmp_path, "--out", tmp_path / "s")
    assert "is a directory" in one_line_error(code, err)


def test_the_last_record_per_system_and_item_counts_in_jsonl_and_csv(tmp_path):
    failed = Translation(item_id="a", system="s", output="", meta={"failed": True, "reason": "timeout"})
    done = Translation(item_id="a", system="s", output="ok", meta={"latency_s": 0.5})
    other = Translation(item_id="b", system="s", output="b")
    for suffix in ("jsonl", "csv"):
        write_records(tmp_path / f"t.{suffix}", [failed, other, done])
        assert read_translations(tmp_path / f"t.{suffix}") == [done, other]


def test_own_logs_are_repaired_a_complete_last_record_is_kept(tmp_path):
    log = tmp_path / "translations.jsonl"
    append_record(log, Translation(item_id="a", system="s", output="x"))
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(Translation(item_id="b", system="s", output="y").model_dump()))  # no newline
    assert [t.item_id for t in read_translation_log(log)] == ["a", "b"]
    assert log.read_bytes().endswith(b"\n")  # the next append starts on its own line
    append_record(log, Translation(item_id="c", system="s", output="z"))
    with log.open("a", encoding="utf-8") as f:
        f.write('{"item_id": "d", "sys')
    assert [t.item_id for t in read_log(log, Translation)] == ["a", "b", "c"]
    assert log.read_text(encoding="utf-8").count("\n") == 3


@pytest.mark.parametrize(
    "command",
    [
        ["diting", "load-official", "{path}", "--out", "{out}"],
        ["diting", "bench", "info", "{path}"],
        ["diting", "translate", "--bench", "{path}", "--system", "m=http:m@http://127.0.0.1:9/v1", "--out", "{out}"],
        ["diting", "score", "--translations", "{ok}", "--bench", "{path}", "--out", "{out}"],
        ["diting", "meta-eval", "--metricalign", "{path}", "--out", "{out}"],
        [
            "diting",
            "meta-eval",
            "--judgments",
            "{path}",
            "--translations",
            "{ok}",
            "--items",
            "starter",
            "--out",
            "{out}",
        ],
        ["diting", "leaderboard", "--judgments", "{path}", "--out", "{out}"],
        ["diting", "leaderboard", "--official", "{path}", "--out", "{out}"],
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_every_reader_names_a_non_utf8_file_in_one_line(tmp_path, capsys, command, suffix):
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes('{"id": "café"}\n'.encode("latin-1"))
    ok = tmp_path / "ok.jsonl"
    write_records(ok, _translations(_items(1)))
    argv = [a.format(path=path, out=tmp_path / "out", ok=ok) for a in command]
    code, _, err = run_cli(capsys, *argv)
    message = one_line_error(code, err)
    assert message.startswith(f"{path}:1: not UTF-8 text (byte 0xe9"), message
    assert path.read_bytes() == '{"id": "café"}\n'.encode("latin-1")
