import errno
import json

import pytest

from genrep.core.errors import UserError
from genrep.core.files import (
    OutLock,
    describe_os_error,
    prepare_out,
    read_json,
    read_text,
    remove_if_empty,
)
from genrep.core.jsonl import append_jsonl, iter_jsonl, read_log, repair_tail, truncate_jsonl
from genrep.core.rundir import model_dir


def test_read_text_drops_a_bom_and_names_the_line_of_a_bad_byte(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeffhello\n".encode())
    assert read_text(p) == "hello\n"
    p.write_bytes(b"ok\nfine\n\xe9t\xe9\n")
    with pytest.raises(UserError, match=r"a\.txt:3: not UTF-8 text \(byte 0xe9 at offset 8\)"):
        read_text(p)
    with pytest.raises(UserError, match="is a directory"):
        read_text(tmp_path)
    with pytest.raises(UserError, match="config not found"):
        read_text(tmp_path / "missing", "config")


def test_read_json_names_the_line(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{\n  "a": 1,\n  "b": \n}')
    with pytest.raises(UserError, match=r"c\.json:4: not valid JSON"):
        read_json(p)


def test_prepare_out_refuses_files_and_paths_under_files(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        prepare_out(f)
    with pytest.raises(UserError, match="cannot create the directory"):
        prepare_out(f / "sub")
    assert prepare_out(tmp_path) == (tmp_path, None)


def test_prepare_out_reports_the_outermost_directory_it_made_and_cleanup_removes_only_those(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    path, created = prepare_out(out)
    assert path == out and out.is_dir() and created == tmp_path / "a"
    remove_if_empty(out, created)
    assert not (tmp_path / "a").exists() and tmp_path.is_dir()
    path, created = prepare_out(out)
    (tmp_path / "a" / "keep").write_text("a user's file")
    remove_if_empty(out, created)
    assert (tmp_path / "a" / "keep").is_file() and not (tmp_path / "a" / "b").exists()


def test_out_lock_is_reentrant_in_one_process_and_records_the_pid(tmp_path):
    import os

    first = OutLock.acquire(tmp_path)
    second = OutLock.acquire(tmp_path)
    assert first is second and (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    second.release()
    assert (tmp_path / ".lock").exists()
    first.release()
    assert not (tmp_path / ".lock").exists()


def test_describe_os_error_names_the_path_and_keeps_unknown_errors():
    assert (
        describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x/log.jsonl"))
        == "/x/log.jsonl: no space left on device"
    )
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system", "/ro")) == "/ro: read-only file system"
    assert describe_os_error(OSError(errno.ECONNRESET, "reset")) is None


def test_inputs_are_strict_and_a_final_record_without_newline_counts(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}')
    assert [v for _, v in iter_jsonl(p)] == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a": ')
    with pytest.raises(UserError, match=r"in\.jsonl:2: not valid JSON"):
        list(iter_jsonl(p))
    assert p.read_text() == '{"a": 1}\n{"a": '  # never repaired


def test_own_logs_lose_a_torn_tail_and_keep_a_complete_one(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"step": 1, "text": "line\u2028separator"})
    append_jsonl(log, {"step": 2})
    with log.open("a") as f:
        f.write('{"step": 3, "lo')
    assert repair_tail(log) == len('{"step": 3, "lo')
    assert [r["step"] for r in read_log(log)] == [1, 2]
    with log.open("a") as f:
        f.write(json.dumps({"step": 3}))  # complete, only the newline is missing
    assert repair_tail(log) == 0 and log.read_text().endswith('{"step": 3}\n')
    assert truncate_jsonl(log, lambda r: r["step"] <= 2) == 2
    assert [r["step"] for r in read_log(log)] == [1, 2]
    assert read_log(tmp_path / "absent.jsonl") == []


def test_model_dir_takes_a_model_directory_or_the_model_folder_of_a_run(tmp_path):
    run, model = tmp_path / "run", tmp_path / "run" / "model"
    model.mkdir(parents=True)
    assert model_dir(run, "m.json") == run  # nothing there: the caller says what is missing
    (model / "m.json").write_text("{}")
    assert model_dir(run, "m.json") == model and model_dir(str(model), "m.json") == model
    (run / "m.json").write_text("{}")
    assert model_dir(run, "m.json") == run  # a model directory is taken as it is
