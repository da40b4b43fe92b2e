"""AgentEval: transcripts, repairs and failures, resume, the single-agent baseline; the genrep protocol's rounds.

The reference protocol's rounds are tested in test_agenteval_reference.py.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from genrep.core.cache import cache_dir
from genrep.core.errors import UserError
from genrep.diting.agenteval import (
    AgentEvalConfig,
    ItemStats,
    Transcript,
    role_conversation,
    run_agenteval,
)
from genrep.diting.agenteval_prompts import GENREP_PROMPTS as PROMPTS
from genrep.diting.benchmark import load_benchmark
from genrep.diting.llm import CachedBackend, Completion, LLMCache, LLMError, LLMServer
from genrep.diting.rubric import criteria
from genrep.diting.schema import Item, Judgment, Translation, read_log, write_records

from .fakes import EchoBackend, ScriptedBackend


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENREP_NO_PROGRESS", "1")


def expert(s=2, g1=2, g2=2, reasons="faithful and natural", mis=False) -> str:
    return json.dumps({"reasons": reasons, "mistranslation": mis, "specific": s, "general_1": g1, "general_2": g2})


def verdict(agree="yes", s=2, g1=2, g2=2, reasons="the experts agree", mis=False) -> str:
    return json.dumps(
        {"agree": agree, "reasons": reasons, "mistranslation": mis, "specific": s, "general_1": g1, "general_2": g2}
    )


class PanelBackend(EchoBackend):
    """Answers as the role its system prompt describes: experts score 2/1/2 and the judge agrees.

    The calls numbered in ``fail_calls`` (1-based) raise LLMError instead. With ``answer_first``,
    only that many calls are answered until ``release`` is set; later ones wait for it."""

    def __init__(self, delay_s: float = 0.0, fail_calls=(), answer_first: int | None = None):
        super().__init__("panel", delay_s)
        self.fail_calls = set(fail_calls)
        self.answer_first = answer_first
        self.release = threading.Event()

    async def complete(self, messages, sampling):
        self.calls.append((list(messages), sampling))
        if self.answer_first is not None and len(self.calls) > self.answer_first:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if len(self.calls) in self.fail_calls:
            raise LLMError("injected failure")
        judge = any('"agree"' in m["content"] for m in messages[:2])  # the judge's answer format
        text = verdict("yes", 2, 1, 2) if judge else expert(2, 1, 2)
        return Completion(
            text=text,
            model=self.model,
            prompt_tokens=sum(len(m["content"]) for m in messages) // 4,
            completion_tokens=len(text) // 4,
            cached=False,
            latency_s=self.delay_s,
            attempts=1,
        )


def write_translations(tmp_path, per_dimension=1, dimensions=None) -> tuple:
    items = load_benchmark("starter", dimensions, per_dimension)
    path = tmp_path / "translations.jsonl"
    write_records(path, [Translation(item_id=i.id, system="mt", output=f"[mt] {i.reference_en}") for i in items])
    return path, items


def config(path, **kw) -> AgentEvalConfig:
    """genrep's earlier protocol in English with the rules enforced, unless ``kw`` says otherwise."""
    return AgentEvalConfig(
        translations=str(path), cache=False, **{"protocol": "genrep", "lang": "en", "enforce_rules": True, **kw}
    )


def scripted(e1: list[str], e2: list[str], judge: list[str]) -> dict:
    return {"expert1": ScriptedBackend(e1), "expert2": ScriptedBackend(e2), "judge": ScriptedBackend(judge)}


def last_user(call) -> str:
    return call[0][-1]["content"]


def test_agreement_in_round_1_takes_one_round_and_three_calls(tmp_path):
    path, (item,) = write_translations(tmp_path, 1, ["idiom"])
    replies = {
        "expert1": expert(reasons="E1: the idiom is rendered by its meaning"),
        "expert2": expert(g2=1, reasons="E2: the tone is a little flat"),
        "judge": verdict("yes", 2, 2, 1, reasons="J: both accept the rendering"),
    }
    backends = scripted([replies["expert1"]], [replies["expert2"]], [replies["judge"]])
    m = run_agenteval(config(path), tmp_path / "run", backends=backends)
    assert (m["scored"], m["failed"], m["rounds"]["mean"], m["agreement_round_1"]) == (1, 0, 1, 1.0)
    assert m["per_item"]["calls"] == 3 and [len(b.calls) for b in backends.values()] == [1, 1, 1]
    assert m["scores"]["overall"]["mean"] == 5 and m["scores"]["per_dimension"]["idiom"]["n"] == 1

    (e1_sent, _), (e2_sent, _), (j_sent, j_sampling) = (b.calls[0] for b in backends.values())
    assert e1_sent[0]["role"] == "system" and "Expert 1" in e1_sent[0]["content"]
    assert criteria("idiom")[0].name("en") in e1_sent[0]["content"]  # the dimension's rubric
    assert item.source_zh in e1_sent[1]["content"] and f"[mt] {item.reference_en}" in e1_sent[1]["content"]
    assert "E1: the idiom is rendered by its meaning" in e2_sent[-1]["content"]  # E2 sees E1's answer
    assert "E1: the idiom" in j_sent[-1]["content"] and "E2: the tone" in j_sent[-1]["content"]  # the judge sees both
    assert PROMPTS["en"]["final"] not in j_sent[-1]["content"]  # round 1 of 4 is not the last
    assert j_sampling.response_format["json_schema"]["name"] == "JudgeAnswer" and j_sampling.temperature == 0

    (judgment,) = read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    assert (judgment.rater, judgment.specific, judgment.general_1, judgment.general_2) == ("agenteval", 2, 2, 1)
    assert judgment.rationale == "J: both accept the rendering"
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert [(turn.round, turn.role) for turn in t.turns] == [(1, "expert1"), (1, "expert2"), (1, "judge")]
    assert t.agreed and (t.rounds, t.calls, t.repairs, t.failed, t.corrections) == (1, 3, 0, False, [])
    for role, backend in backends.items():  # every message sent and every raw reply is in the transcript
        assert role_conversation(t, role) == backend.calls[-1][0] + [{"role": "assistant", "content": replies[role]}]
    (stats,) = read_log(tmp_path / "run" / "stats.jsonl", ItemStats)
    assert stats.calls == 3 and stats.scores == {"specific": 2, "general_1": 2, "general_2": 1}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["signature"]["genrep"] and (tmp_path / "run" / "config.yaml").exists()


def test_without_agreement_the_debate_runs_max_rounds_and_the_last_judge_must_conclude(tmp_path):
    path, _ = write_translations(tmp_path, 1, ["tense"])
    backends = scripted(
        [expert(2, 2, 2, f"E1 r{r}") for r in (1, 2, 3)],
        [expert(1, 1, 1, f"E2 r{r}") for r in (1, 2, 3)],
        [verdict("no", reasons="J r1"), verdict("no", reasons="J r2"), verdict("no", 1, 0, 1, reasons="J r3 final")],
    )
    m = run_agenteval(config(path, max_rounds=3), tmp_path / "run", backends=backends)
    assert (m["scored"], m["rounds"]["mean"], m["per_item"]["calls"]) == (1, 3, 9)
    assert m["agreement_round_1"] == 0 and m["concluded_without_agreement"] == 1.0
    e1, e2, judge = (backends[r].calls for r in ("expert1", "expert2", "judge"))
    final = PROMPTS["en"]["final"]
    assert [final in last_user(c) for c in judge] == [False, False, True]
    for rnd in (2, 3):  # E1 sees E2's previous answer and the judge's reasons, and its own earlier answers
        assert f"E2 r{rnd - 1}" in last_user(e1[rnd - 1]) and f"J r{rnd - 1}" in last_user(e1[rnd - 1])
        assert {"role": "assistant", "content": expert(2, 2, 2, f"E1 r{rnd - 1}")} in e1[rnd - 1][0]
        assert f"E1 r{rnd}" in last_user(e2[rnd - 1])  # E2 sees E1's answer of this round
        assert f"E1 r{rnd}" in last_user(judge[rnd - 1]) and f"E2 r{rnd}" in last_user(judge[rnd - 1])
    (judgment,) = read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    assert (judgment.specific, judgment.general_1, judgment.general_2, judgment.rationale) == (1, 0, 1, "J r3 final")
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert t.agreed is False and t.rounds == 3 and len(t.turns) == 9 and t.judge["agree"] == "no"


def test_global_rules_are_applied_to_the_judges_scores_and_logged(tmp_path):
    path, items = write_translations(tmp_path, 2, ["idiom"])
    backends = scripted(
        [expert(), expert()], [expert(), expert()], [verdict("yes", 0, 2, 1), verdict("yes", 2, 2, 2, mis=True)]
    )
    m = run_agenteval(config(path, concurrency=1), tmp_path / "run", backends=backends)
    judged = {j.item_id: j for j in read_log(tmp_path / "run" / "scores.jsonl", Judgment)}
    assert all(judged[i.id].total == 0 for i in items)
    t = {t.item_id: t for t in read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)}
    assert t[items[0].id].judge["general_1"] == 2  # the judge's own answer is kept
    assert t[items[0].id].corrections == [
        "general_1 2 -> 0 (rule: if the specific score is 0, both general scores are 0)",
        "general_2 1 -> 0 (rule: if the specific score is 0, both general scores are 0)",
    ]
    assert len(t[items[1].id].corrections) == 3 and "mistranslation" in t[items[1].id].corrections[0]
    assert m["corrections"] == {"items": 2, "total": 5}
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"{items[0].id} / mt: global rule applied: general_1 2 -> 0" in log


@pytest.mark.parametrize(
    "bad, error",
    [
        (
            '{"agree": "yes", "reasons": "r", "mistranslation": false, "specific": 3, "general_1": 2, "general_2": 2}',
            "specific: Input should be less than or equal to 2",
        ),
        ('{"agree": "yes", "reasons": "r", "specific": 2, "general_1": 2}', "mistranslation: Field required"),
        ("The translation is fine, I would give it full marks.", "no JSON object in the reply"),
    ],
)
def test_a_judge_that_stays_invalid_is_repaired_a_bounded_number_of_times_then_the_item_fails(tmp_path, bad, error):
    path, _ = write_translations(tmp_path, 1, ["ambiguity"])
    backends = scripted([expert()], [expert()], [bad, bad, verdict()])
    m = run_agenteval(config(path, max_repairs=1), tmp_path / "run", backends=backends)
    assert (m["scored"], m["failed"]) == (0, 1) and len(backends["judge"].calls) == 2  # one answer + one repair
    (reason,) = m["failure_reasons"]
    assert reason.startswith("judge round 1: invalid JSON after 1 repairs: ") and error in reason
    assert "Your reply could not be used" in last_user(backends["judge"].calls[1]) and error in last_user(
        backends["judge"].calls[1]
    )
    assert not read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    judge_turn = t.turns[-1]
    assert t.failed and t.reason == reason and judge_turn.replies == [bad, bad] and judge_turn.answer is None
    assert len(judge_turn.repair_prompts) == 1 and judge_turn.error in reason and t.repairs == 1

    backends = scripted([expert()], [expert()], [bad, verdict()])  # the next run retries the failed item
    m = run_agenteval(config(path, max_repairs=1), tmp_path / "run", backends=backends)
    assert (m["scored"], m["failed"], m["per_item"]["repairs"]) == (1, 0, 1)


def test_a_failing_backend_fails_the_item_not_the_run(tmp_path):
    path, items = write_translations(tmp_path, 1, ["idiom", "tense"])
    backend = PanelBackend(fail_calls={4})  # item 2's expert 1
    m = run_agenteval(
        config(path, concurrency=1), tmp_path / "run", backends=dict.fromkeys(("expert1", "expert2", "judge"), backend)
    )
    assert (m["scored"], m["failed"]) == (1, 1) and m["failure_reasons"] == {"expert1 round 1: injected failure": 1}
    assert m["usage"]["total"]["failures"] == 1 and m["usage"]["total"]["calls"] == 3


def test_a_rerun_makes_no_call_for_finished_items_and_the_cache_spares_a_failed_items_finished_calls(tmp_path):
    path, items = write_translations(tmp_path, 1, ["idiom", "tense", "zero_pronoun"])
    panel = PanelBackend(fail_calls={5})  # item 2's expert 2
    cached = CachedBackend(panel, LLMCache(tmp_path / "llm.sqlite"))
    backends = dict.fromkeys(("expert1", "expert2", "judge"), cached)
    m = run_agenteval(config(path, concurrency=1), tmp_path / "run", backends=backends)
    assert (m["scored"], m["failed"], len(panel.calls)) == (2, 1, 8)
    for log in ("transcripts.jsonl", "stats.jsonl"):  # a line torn by a crash is cut before the run appends
        with (tmp_path / "run" / log).open("a") as f:
            f.write('{"item_id": "starter-to')
    m = run_agenteval(config(path, concurrency=1), tmp_path / "run", backends=backends)
    assert (m["scored"], m["failed"], m["this_run"]) == (3, 0, {**m["this_run"], "evaluated": 1, "already_done": 2})
    assert len(panel.calls) == 10  # item 2's expert 2 and judge; its expert 1 came from the cache
    assert m["usage"]["total"]["cache_hits"] == 1
    m = run_agenteval(config(path, concurrency=1), tmp_path / "run", backends=backends)
    assert len(panel.calls) == 10 and m["this_run"]["evaluated"] == 0 and m["scored"] == 3
    assert len(read_log(tmp_path / "run" / "scores.jsonl", Judgment)) == 3  # one line per item
    assert len(read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)) == 4  # 3 items + 1 failed attempt


def test_the_single_agent_judge_takes_one_call_per_item(tmp_path):
    path, items = write_translations(tmp_path, 1, ["terminology", "cultural_safety"])
    panel = PanelBackend()
    m = run_agenteval(config(path, mode="single"), tmp_path / "run", backends={"judge": panel})
    assert (m["scored"], m["rater"], m["per_item"]["calls"], m["agreement_round_1"]) == (2, "single-agent", 1, None)
    assert m["scores"]["overall"]["mean"] == 5 and m["backends"] == {"judge": "local:smollm2-135m"}
    messages, sampling = panel.calls[0]
    schema = sampling.response_format["json_schema"]
    assert schema["name"] == "SingleAnswer" and "agree" not in schema["schema"]["properties"]
    assert "Expert" not in messages[0]["content"] and "chief judge" not in messages[0]["content"]
    judged = read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    assert {j.rater for j in judged} == {"single-agent"} and {j.item_id for j in judged} == {i.id for i in items}
    t = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert all(x.rounds == 1 and x.agreed is None and x.mode == "single" and len(x.turns) == 1 for x in t)


def test_chinese_prompts_and_a_one_round_debate(tmp_path):
    path, (item,) = write_translations(tmp_path, 1, ["zero_pronoun"])
    backends = scripted([expert()], [expert(1, 1, 1)], [verdict("no", 1, 1, 2)])
    m = run_agenteval(config(path, lang="zh", max_rounds=1), tmp_path / "run", backends=backends)
    ((sent, _),) = backends["judge"].calls
    assert criteria("zero_pronoun")[0].name("zh") in sent[0]["content"] and "首席评审" in sent[0]["content"]
    assert "待评译文" in sent[1]["content"] and PROMPTS["zh"]["final"] in sent[1]["content"]
    assert m["concluded_without_agreement"] == 1.0
    assert read_log(tmp_path / "run" / "scores.jsonl", Judgment)[0].total == 4


def test_bad_inputs_are_one_line_errors_and_unjudgeable_translations_are_set_aside(tmp_path):
    with pytest.raises(UserError, match="give the translations"):
        run_agenteval(AgentEvalConfig(), tmp_path / "run")
    with pytest.raises(UserError, match="nope.jsonl: translations file not found"):
        run_agenteval(config(tmp_path / "nope.jsonl"), tmp_path / "run")
    path, _ = write_translations(tmp_path, 1, ["idiom"])
    with pytest.raises(UserError, match="max_rounds must be >= 1"):
        run_agenteval(config(path, max_rounds=0), tmp_path / "run")
    with pytest.raises(UserError, match="unknown LLM backend kind 'vlm' in 'vlm:qwen'"):
        run_agenteval(config(path, judge="vlm:qwen"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    write_records(path, [Translation(item_id="zh-9999", system="mt", output="x")])
    with pytest.raises(UserError, match="item 'zh-9999' .* is not in benchmark 'starter'"):
        run_agenteval(config(path), tmp_path / "run")

    items = tmp_path / "items.jsonl"
    write_records(
        items,
        [
            Item(
                id="r1",
                dimension="tense",
                source_zh="<novel><chapter><sentence 1>",
                phenomenon="x",
                reference_en="He had left.",
                redacted=True,
            )
        ],
    )
    write_records(
        path,
        [
            Translation(item_id="r1", system="a", output="He left."),
            Translation(item_id="r1", system="b", output="", meta={"failed": True, "reason": "HTTP 500"}),
        ],
    )
    panel = PanelBackend()
    m = run_agenteval(
        config(path, bench=str(items)), tmp_path / "run", backends=dict.fromkeys(("expert1", "expert2", "judge"), panel)
    )
    assert (m["items"], m["failed"], m["skipped_failed_translations"], len(panel.calls)) == (1, 1, 1, 0)
    assert "redacted" in next(iter(m["failure_reasons"]))


def test_a_killed_run_resumes_without_repeating_finished_calls(tmp_path):
    path, items = write_translations(tmp_path, 2)  # 12 items
    out = tmp_path / "run"
    # 3 calls an item, 2 items in flight: the first 18 calls finish 5 or 6 items; the calls after them
    # wait until the kill, so the run is always killed part-way, however fast or slow the machine is.
    panel = PanelBackend(delay_s=0.05, answer_first=18)
    with LLMServer(panel) as server:
        cmd = [
            sys.executable,
            "-m",
            "genrep",
            "diting",
            "agenteval",
            "--translations",
            str(path),
            "--backend",
            f"http:panel@{server.url}",
            "--concurrency",
            "2",
            "--set",
            "timeout_s=1800",
            "--out",
            str(out),
        ]
        proc = subprocess.Popen(
            cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        scores = out / "scores.jsonl"
        try:
            while not scores.exists() or len(scores.read_text().splitlines()) < 4:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            proc.kill()
            panel.release.set()
        first = {j.item_id for j in read_log(scores, Judgment)}
        assert 4 <= len(first) < len(items)
        before = len(panel.calls)
        m = run_agenteval(
            AgentEvalConfig(translations=str(path), backend=f"http:panel@{server.url}", concurrency=2), out
        )
    assert (m["scored"], m["failed"], m["this_run"]["already_done"]) == (12, 0, len(first))
    finished_sources = [i.source_zh for i in items if i.id in first]
    for messages, _ in panel.calls[before:]:  # no call at all for the items finished before the kill
        assert not any(src in messages[1]["content"] for src in finished_sources)
    repeats = sum(n - 1 for n in Counter(json.dumps(msgs) for msgs, _ in panel.calls).values())
    assert repeats <= 2 and len(panel.calls) <= 3 * len(items) + 2  # only the calls in flight at the kill repeat
    assert len(read_log(out / "scores.jsonl", Judgment)) == 12
    assert {t.item_id for t in read_log(out / "transcripts.jsonl", Transcript)} == {i.id for i in items}


def test_the_bundled_smollm2_runs_agenteval_end_to_end(tmp_path, smollm2_dir):
    # own_cache moved GENREP_CACHE to tmp_path; smollm2_dir lives in the session's cache (built once).
    (cache_dir("models") / "smollm2-135m").symlink_to(smollm2_dir, target_is_directory=True)
    path, (item,) = write_translations(tmp_path, 1, ["idiom"])
    cfg = AgentEvalConfig(
        translations=str(path), backend="local:smollm2-135m", max_rounds=1, max_tokens=24, max_repairs=0, concurrency=1
    )
    m = run_agenteval(cfg, tmp_path / "run")
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert m["scored"] + m["failed"] == 1 and t.calls >= 1 and t.prompt_tokens > 200
    assert t.turns[0].replies and t.turns[0].completion_tokens <= 24
    if t.failed:  # a 135M model rarely writes valid JSON in 24 tokens: the failure must say why
        assert t.reason.startswith(("expert1 round 1: ", "expert2 round 1: ", "judge round 1: "))
    else:
        assert len(read_log(tmp_path / "run" / "scores.jsonl", Judgment)) == 1
