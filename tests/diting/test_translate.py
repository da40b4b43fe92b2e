"""The translation runner: resumable, failures recorded per item, no finished request repeated."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from genrep.core.errors import UserError
from genrep.diting.benchmark import load_benchmark
from genrep.diting.schema import Translation, read_log
from genrep.diting.translate import (
    TranslateConfig,
    chat_messages,
    clean_output,
    fewshot_messages,
    parse_systems,
    read_translation_log,
    translate,
)

from .fault_server import FaultServer


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENREP_NO_PROGRESS", "1")


def _prompt(item):
    return chat_messages(item)[-1]["content"]


def test_prompts_and_output_cleaning():
    item = load_benchmark("starter", ["zero_pronoun"], 1)[0]
    user = _prompt(item)
    assert item.instruction in user and f"上下文:{item.context}" in user and f"文本:{item.source_zh}" in user
    few = fewshot_messages(item)
    assert len(few) == 1 and few[0]["content"].endswith(f"Context: {item.context}\nChinese: {item.source_zh}\nEnglish:")
    assert clean_output("Answer: He left.\n(note)", "fewshot") == "He left."
    assert clean_output('  "He left."  ', "chat") == "He left."
    with pytest.raises(UserError, match="expected NAME=BACKEND"):
        parse_systems(["local:smollm2-135m"])
    with pytest.raises(UserError, match="given twice"):
        parse_systems(["a=local:x", "a=local:y"])
    with pytest.raises(UserError, match="system name 'a' given twice"):
        parse_systems(["a =local:x", " a=local:y"])
    assert parse_systems([" smol = local:smollm2-135m "]) == {"smol": "local:smollm2-135m"}


def test_a_bad_backend_spec_fails_before_the_run_directory_is_written(tmp_path):
    with pytest.raises(UserError, match="unknown LLM backend kind 'locla'"):
        translate(TranslateConfig(systems=["smol=locla:smollm2-135m"]), tmp_path / "run")
    with pytest.raises(UserError, match="is not KIND:MODEL"):
        parse_systems(["smol=smollm2-135m"])
    assert not (tmp_path / "run").exists()


def test_failures_are_recorded_per_item_and_retried_on_the_next_run(tmp_path):
    items = load_benchmark("starter", ["idiom", "tense"], 3)
    bad = _prompt(items[1])
    cfg = TranslateConfig(
        systems=[], dimensions=["idiom", "tense"], limit=3, concurrency=4, max_retries=1, prices={"m": [1.0, 2.0]}
    )
    with FaultServer({bad: ["400"]}, replies={_prompt(i): f"Answer: translation {i.id}" for i in items}) as server:
        cfg.systems = [f"mt=http:m@{server.url}"]
        m = translate(cfg, tmp_path / "run")
        assert m["translations"] == 6 and m["failed"] == 1 and server.counts[bad] == 1  # 400 is not retried
        usage = m["usage"]["total"]
        assert usage["calls"] == 5 and usage["failures"] == 1 and usage["cost_usd"] > 0
        rows = {t.item_id: t for t in read_translation_log(tmp_path / "run" / "translations.jsonl")}
        assert rows[items[1].id].meta["failed"] and "400" in rows[items[1].id].meta["reason"]
        assert rows[items[0].id].output == f"translation {items[0].id}"
        m2 = translate(cfg, tmp_path / "run")  # the server answers now: only the failed item is asked again
        assert m2["systems"]["mt"]["requests"] == 1 and m2["failed"] == 0 and server.total == 7
        m3 = translate(cfg, tmp_path / "run")
        assert m3["systems"]["mt"]["requests"] == 0 and server.total == 7
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["translations"] == 6 and metrics["signature"]["command"]


def test_killed_run_loses_nothing_and_repeats_no_finished_request(tmp_path):
    items = load_benchmark("starter", limit_per_dimension=4)  # 24 items
    out = tmp_path / "run"
    arrivals = itertools.count(1)
    killed = threading.Event()

    def script(prompt, n):
        # The first 6 requests are answered; later ones wait for the kill, so the run is always killed
        # part-way (with 2 requests in flight), however fast or slow the machine is.
        if not killed.is_set() and next(arrivals) > 6:
            killed.wait()
        return "slow:0.15"

    with FaultServer(script) as server:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "genrep",
            "diting",
            "translate",
            "--system",
            f"mt=http:m@{server.url}",
            "--limit",
            "4",
            "--concurrency",
            "2",
            "--set",
            "timeout_s=1800",
            "--out",
            str(out),
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        log = out / "translations.jsonl"
        try:
            while not log.exists() or len(log.read_text().splitlines()) < 6:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            proc.kill()
            killed.set()
        first = {t.item_id for t in read_log(log, Translation)}
        assert 6 <= len(first) < len(items)
        m = translate(TranslateConfig(systems=[f"mt=http:m@{server.url}"], limit=4, concurrency=2), out)
        assert m["translations"] == len(items) and m["failed"] == 0
        for item in items:
            n = server.counts[_prompt(item)]
            assert n == 1 if item.id in first else 1 <= n <= 2  # only requests in flight at the kill repeat
        assert server.total <= len(items) + 2
    assert {t.item_id for t in read_translation_log(out / "translations.jsonl")} == {i.id for i in items}
