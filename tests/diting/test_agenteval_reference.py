"""AgentEval's reference protocol (code/Agent-ans.py, single_baseline.py): what each role sees, round by round."""

import json

import pytest

from genrep.diting.agenteval import AgentEvalConfig, ItemStats, Transcript, role_conversation, run_agenteval
from genrep.diting.agenteval_prompts import REFERENCE_PROMPTS, reference_prompt
from genrep.diting.benchmark import load_benchmark
from genrep.diting.llm import Completion
from genrep.diting.rubric import GLOBAL_RULES, criteria
from genrep.diting.rubric_examples import EXAMPLES
from genrep.diting.schema import Judgment, Translation, read_log, write_records

from .fakes import EchoBackend


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENREP_NO_PROGRESS", "1")


def expert(s=2, g1=2, g2=2, reasons="faithful") -> str:
    return json.dumps({"specific": s, "general_1": g1, "general_2": g2, "reasons": reasons}, ensure_ascii=False)


def verdict(agree="yes", s=2, g1=2, g2=2, reasons="they agree") -> str:
    return json.dumps({"agree": agree, "reasons": reasons, "specific": s, "general_1": g1, "general_2": g2})


class Scripted(EchoBackend):
    """Answers with ``replies`` in turn (a str, or a Completion as is); records every request."""

    def __init__(self, replies):
        super().__init__("scripted")
        self.replies = list(replies)

    async def complete(self, messages, sampling):
        self.calls.append((list(messages), sampling))
        reply = self.replies.pop(0)
        if isinstance(reply, Completion):
            return reply
        return Completion(
            text=reply, model=self.model, prompt_tokens=10, completion_tokens=5, cached=False, latency_s=0, attempts=1
        )


def panel(e1, e2, judge) -> dict:
    return {"expert1": Scripted(e1), "expert2": Scripted(e2), "judge": Scripted(judge)}


def write_translations(tmp_path, dimensions, per_dimension=1):
    items = load_benchmark("starter", dimensions, per_dimension)
    path = tmp_path / "translations.jsonl"
    write_records(path, [Translation(item_id=i.id, system="mt", output=f"[mt] {i.reference_en}") for i in items])
    return path, items


def sys(text):
    return {"role": "system", "content": text}


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def test_reference_debate_shows_each_role_exactly_what_the_official_code_shows(tmp_path):
    path, (item,) = write_translations(tmp_path, ["idiom"])
    translation = Translation(item_id=item.id, system="mt", output=f"[mt] {item.reference_en}")
    e1 = [expert(2, 2, 2, f"E1 r{r}") for r in (1, 2, 3)]
    e2 = [expert(1, 1, 1, f"E2 r{r}") for r in (1, 2, 3)]
    judge = [verdict("no", reasons=f"J r{r}") for r in (1, 2, 3)] + [verdict("no", 1, 2, 1, reasons="J final")]
    backends = panel(e1, e2, judge)
    m = run_agenteval(
        AgentEvalConfig(translations=str(path), cache=False, max_rounds=3), tmp_path / "run", backends=backends
    )

    p = REFERENCE_PROMPTS["zh"]  # the defaults: the reference protocol, in Chinese
    first_e = reference_prompt("expert", item, translation, "zh")
    first_j = reference_prompt("judge", item, translation, "zh")
    pro, con = p["pro"], p["con"]
    expected = {
        "expert1": [
            [sys(p["expert_system"]), user(first_e)],
            [sys(p["expert_system"]), user(first_e), bot(e1[0]), user(con + e2[0])],
            [sys(p["expert_system"]), user(first_e), bot(e1[0]), user(con + e2[0]), bot(e1[1]), user(con + e2[1])],
        ],
        "expert2": [
            [sys(p["expert_system"]), user(first_e), user(pro + e1[0])],
            [sys(p["expert_system"]), user(first_e), user(pro + e1[0]), bot(e2[0]), user(pro + e1[1])],
            [
                *[sys(p["expert_system"]), user(first_e), user(pro + e1[0]), bot(e2[0]), user(pro + e1[1])],
                *[bot(e2[1]), user(pro + e1[2])],
            ],
        ],
        "judge": [
            [sys(p["judge_system"]), user(first_j), user(pro + e1[0]), user(con + e2[0])],
            [
                *[sys(p["judge_system"]), user(first_j), user(pro + e1[0]), user(con + e2[0])],
                *[bot("J r1"), user(pro + e1[1]), user(con + e2[1])],  # the judge keeps only its reasons
            ],
        ],
    }
    expected["judge"].append(expected["judge"][1] + [bot("J r2"), user(pro + e1[2]), user(con + e2[2])])
    expected["judge"].append(expected["judge"][2] + [bot("J r3"), user(p["last_round"])])  # the last-round re-ask
    for role, requests in expected.items():
        assert [msgs for msgs, _ in backends[role].calls] == requests, role
    for role in ("expert1", "expert2"):  # nobody but the judge sees the judge's output
        assert not any("J r" in m["content"] for msgs, _ in backends[role].calls for m in msgs)
    assert first_e == reference_prompt("expert", item, translation, "zh")  # both experts get one prompt

    assert (m["scored"], m["rounds"]["mean"], m["per_item"]["calls"], m["decided_by_last_round_reask"]) == (1, 3, 10, 1)
    (judgment,) = read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    assert (judgment.specific, judgment.general_1, judgment.general_2, judgment.rationale) == (1, 2, 1, "J final")
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert t.protocol == "reference" and t.reasked and t.agreed is False and t.lang == "zh"
    assert [(x.round, x.role, x.reask) for x in t.turns][-2:] == [(3, "judge", False), (3, "judge", True)]
    for role, requests in expected.items():  # the transcript rebuilds every role's conversation
        kept = role_conversation(t, role)
        assert kept[: len(requests[-1])] == requests[-1]
    assert role_conversation(t, "judge")[-1] == bot("J final")


def test_a_yes_in_the_last_round_ends_the_debate_without_a_reask(tmp_path):
    path, _ = write_translations(tmp_path, ["tense"])
    backends = panel([expert(), expert()], [expert(1), expert()], [verdict("no"), verdict("yes", 2, 1, 2)])
    m = run_agenteval(
        AgentEvalConfig(translations=str(path), cache=False, max_rounds=2), tmp_path / "run", backends=backends
    )
    assert len(backends["judge"].calls) == 2 and m["decided_by_last_round_reask"] == 0 and m["scored"] == 1
    assert read_log(tmp_path / "run" / "scores.jsonl", Judgment)[0].total == 5


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_reference_prompt_carries_every_instruction_rule_and_worked_example(lang):
    item = load_benchmark("starter", ["zero_pronoun"], 1)[0]
    translation = Translation(item_id=item.id, system="mt", output="He left.")
    p = REFERENCE_PROMPTS[lang]
    for kind in ("expert", "judge"):
        text = reference_prompt(kind, item, translation, lang)
        for key in (
            f"{kind}_intro",
            "task",
            "constraints",
            f"{kind}_constraint",
            "format",
            "rules",
            "rubric",
            "direct",
        ):
            assert p[key] in text, (kind, key)
        for rule in GLOBAL_RULES[lang]:
            assert rule in text
        for crit, example in zip(criteria("zero_pronoun"), EXAMPLES["zero_pronoun"]):
            assert crit.name(lang) in text and example.source_zh in text
            assert all(translation in text for translation in example.translations)
        assert item.source_zh in text and "He left." in text and item.reference_en not in text
        assert text.index(p["rules"]) < text.index(p["rubric"]) < text.index(p["direct"])
    expert_format = reference_prompt("expert", item, translation, lang)
    assert expert_format.index('"specific"') < expert_format.index('"reasons"')  # scores first, then reasons
    judge_format = reference_prompt("judge", item, translation, lang)
    assert judge_format.index('"agree"') < judge_format.index('"reasons"') < judge_format.index('"specific"')


def test_the_global_rules_are_not_enforced_in_code_unless_asked(tmp_path):
    path, (item,) = write_translations(tmp_path, ["idiom"])
    answers = ([expert(0, 2, 2)], [expert(0, 2, 2)], [verdict("yes", 0, 2, 1)])
    m = run_agenteval(
        AgentEvalConfig(translations=str(path), cache=False), tmp_path / "as-given", backends=panel(*answers)
    )
    (j,) = read_log(tmp_path / "as-given" / "scores.jsonl", Judgment)
    assert (j.specific, j.general_1, j.general_2) == (0, 2, 1) and m["corrections"]["total"] == 0
    assert m["enforce_rules"] is False

    cfg = AgentEvalConfig(translations=str(path), cache=False, enforce_rules=True)
    m = run_agenteval(cfg, tmp_path / "enforced", backends=panel(*answers))
    (j,) = read_log(tmp_path / "enforced" / "scores.jsonl", Judgment)
    (t,) = read_log(tmp_path / "enforced" / "transcripts.jsonl", Transcript)
    assert j.total == 0 and m["corrections"] == {"items": 1, "total": 2} and t.judge["general_1"] == 2
    assert t.corrections[0] == "general_1 2 -> 0 (rule: if the specific score is 0, both general scores are 0)"
    assert "global rule applied: general_1 2 -> 0" in (tmp_path / "enforced" / "log.txt").read_text()


def test_the_single_agent_baseline_uses_expert_1s_prompt_and_records_a_failure_as_zero(tmp_path):
    path, items = write_translations(tmp_path, ["terminology", "cultural_safety"])
    judge = Scripted([expert(2, 1, 2, "ok"), "no JSON here", "still none", "nor here"])
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single", concurrency=1)
    m = run_agenteval(cfg, tmp_path / "run", backends={"judge": judge})
    p = REFERENCE_PROMPTS["zh"]
    messages, sampling = judge.calls[0]
    translation = Translation(item_id=items[0].id, system="mt", output=f"[mt] {items[0].reference_en}")
    assert messages == [sys(p["single_system"]), user(reference_prompt("expert", items[0], translation, "zh"))]
    assert sampling.response_format["json_schema"]["name"] == "ReferenceExpertAnswer"
    assert len(judge.calls) == 4  # item 1: one call; item 2: the answer and two repairs, then it fails

    judged = {j.item_id: j for j in read_log(tmp_path / "run" / "scores.jsonl", Judgment)}
    ok, bad = judged[items[0].id], judged[items[1].id]
    assert (ok.total, ok.failed, ok.rater) == (5, False, "single-agent")
    assert (bad.specific, bad.general_1, bad.general_2, bad.failed) == (0, 0, 0, True)
    assert bad.rationale.startswith("failed: judge round 1: invalid JSON after 2 repairs")
    assert (m["scored"], m["failed"], m["failed_recorded_as_zero"], m["failed_as_zero"]) == (1, 1, 1, True)
    assert m["scores"]["overall"]["mean"] == 2.5 and m["scores"]["overall_without_failed"]["mean"] == 5

    # a re-run retries the failure, and the 0/0/0 record gives way to the new answer (one record per item)
    m = run_agenteval(cfg, tmp_path / "run", backends={"judge": Scripted([expert(1, 1, 1)])})
    judged = read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    assert sorted((j.item_id, j.total, j.failed) for j in judged) == sorted(
        [(items[0].id, 5, False), (items[1].id, 3, False)]
    )
    assert (m["scored"], m["failed"], m["failed_recorded_as_zero"]) == (2, 0, 0)

    # excluding failures instead: nothing recorded for a failed item
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single", failed_as_zero=False, limit=1)
    m = run_agenteval(cfg, tmp_path / "excluded", backends={"judge": Scripted(["x", "y", "z"])})
    assert not read_log(tmp_path / "excluded" / "scores.jsonl", Judgment) and m["failed_as_zero"] is False


def _completion(text, finish="stop", reasoning="", attempts=1):
    return Completion(
        text=text,
        model="r1",
        prompt_tokens=10,
        completion_tokens=5,
        cached=False,
        latency_s=0,
        attempts=attempts,
        finish_reason=finish,
        reasoning_content=reasoning,
    )


def test_a_reply_cut_by_the_token_limit_is_never_accepted(tmp_path):
    path, _ = write_translations(tmp_path, ["idiom"])
    cut = _completion(expert()[:-1], finish="length")  # looks almost right, but the server says it was cut
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single", failed_as_zero=False)
    m = run_agenteval(cfg, tmp_path / "run", backends={"judge": Scripted([cut])})
    (reason,) = m["failure_reasons"]
    assert "cut at max_tokens=1024" in reason and m["scored"] == 0
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert t.turns[0].finish_reasons == ["length"] and t.turns[0].replies == [cut.text]

    judge = Scripted([cut, _completion(expert(1, 1, 1))])  # with room to grow, the retry gets twice the budget
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single", max_tokens_cap=4096)
    m = run_agenteval(cfg, tmp_path / "retried", backends={"judge": judge})
    assert m["scored"] == 1 and [s.max_tokens for _, s in judge.calls] == [1024, 2048]


def test_reasoning_content_and_http_attempts_are_kept_in_the_transcript(tmp_path):
    path, _ = write_translations(tmp_path, ["idiom"])
    judge = Scripted([_completion(expert(), reasoning="先看习语……", attempts=3)])
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single")
    m = run_agenteval(cfg, tmp_path / "run", backends={"judge": judge})
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert t.turns[0].reasoning == ["先看习语……"] and (t.calls, t.attempts) == (1, 3)
    assert t.turns[0].kept == expert()  # the content only goes back into the conversation, never the thinking
    (s,) = read_log(tmp_path / "run" / "stats.jsonl", ItemStats)
    assert s.attempts == 3 and m["per_item"]["attempts"] == 3 and m["per_item"]["calls"] == 1


def test_the_papers_deepseek_r1_setting_is_served_as_a_reasoning_model(tmp_path):
    """A DeepSeek-R1-like server: rejects sampling fields, answers only json_object, returns reasoning_content."""
    import httpx

    from genrep.diting.llm import OpenAIBackend

    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "temperature" in body or "top_p" in body or "seed" in body:
            return httpx.Response(400, json={"error": {"message": "temperature is not supported"}})
        if body.get("response_format") not in (None, {"type": "json_object"}):
            return httpx.Response(400, json={"error": {"message": "This response_format type is unavailable now"}})
        message = {"role": "assistant", "content": expert(2, 1, 1, "习语译得准确"), "reasoning_content": "先看成语……"}
        return httpx.Response(
            200,
            json={
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 900,
                    "completion_tokens": 120,
                    "completion_tokens_details": {"reasoning_tokens": 80},
                },
            },
        )

    backend = OpenAIBackend(
        "deepseek-reasoner",
        "http://r1.test/v1",
        name="deepseek:deepseek-reasoner",
        transport=httpx.MockTransport(handler),
    )
    path, _ = write_translations(tmp_path, ["idiom"])
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single")
    m = run_agenteval(cfg, tmp_path / "run", backends={"judge": backend})
    assert m["scored"] == 1 and m["usage"]["total"]["reasoning_tokens"] == 80
    assert bodies[0]["response_format"] == {"type": "json_object"} and "temperature" not in bodies[0]
    (t,) = read_log(tmp_path / "run" / "transcripts.jsonl", Transcript)
    assert t.turns[0].reasoning == ["先看成语……"] and "先看成语" not in t.turns[0].kept
    bodies.clear()  # the reference's own call: no response_format at all, the JSON read from the text
    cfg = AgentEvalConfig(translations=str(path), cache=False, mode="single", json_mode="none")
    run_agenteval(cfg, tmp_path / "no-format", backends={"judge": backend})
    assert "response_format" not in bodies[0] and bodies[0]["messages"][0]["role"] == "system"
    assert bodies[0]["messages"][0]["content"] == REFERENCE_PROMPTS["zh"]["single_system"]


def test_both_protocols_speak_the_same_languages():
    from genrep.diting.agenteval_prompts import GENREP_PROMPTS

    assert set(REFERENCE_PROMPTS) == set(GENREP_PROMPTS) == {"zh", "en"}
    assert set(REFERENCE_PROMPTS["zh"]) == set(REFERENCE_PROMPTS["en"])


def test_the_debate_matches_the_official_codes_own_requests(tmp_path):
    """Golden: tests/fixtures/diting_reference/debate.json, written by make_diting_reference_fixtures.py from the
    reference's debate_execute with scripted replies; genrep's requests, reduced to the same symbols, are equal."""
    from pathlib import Path

    golden = json.loads((Path(__file__).parents[1] / "fixtures" / "diting_reference" / "debate.json").read_text())
    rounds = golden["rounds"]
    path, _ = write_translations(tmp_path, ["idiom"])
    replies = {expert(2, 1, 2, f"{w}-{r}"): f"{w}-{r}" for w in ("E1", "E2") for r in range(1, rounds + 1)}
    by_name = {name: text for text, name in replies.items()}
    backends = panel(
        [by_name[f"E1-{r}"] for r in range(1, rounds + 1)],
        [by_name[f"E2-{r}"] for r in range(1, rounds + 1)],
        [verdict("no", 1, 1, 1, f"J-{r}") for r in range(1, rounds + 1)] + [verdict("no", 1, 1, 1, "J-final")],
    )
    order: list[str] = []  # the order of the calls across roles
    for role, backend in backends.items():
        original = backend.complete

        async def complete(messages, sampling, _role=role, _original=original):
            order.append(_role)
            return await _original(messages, sampling)

        backend.complete = complete
    cfg = AgentEvalConfig(translations=str(path), cache=False, max_rounds=rounds, concurrency=1)
    run_agenteval(cfg, tmp_path / "run", backends=backends)
    p = REFERENCE_PROMPTS["zh"]

    def symbol(message):
        content = message["content"]
        if message["role"] == "system":
            return "system"
        if message["role"] == "assistant":
            return f"reply:{replies[content]}" if content in replies else f"reasons:{content}"
        for label in ("pro", "con"):
            if content.startswith(p[label]) and content[len(p[label]) :] in replies:
                return f"{label}:{replies[content[len(p[label]) :]]}"
        return "last_round" if content == p["last_round"] else "first"

    calls = {role: iter(b.calls) for role, b in backends.items()}
    ours = [{"role": role, "messages": [symbol(m) for m in next(calls[role])[0]]} for role in order]
    assert ours == golden["requests"]
    (judgment,) = read_log(tmp_path / "run" / "scores.jsonl", Judgment)
    assert judgment.rationale == golden["final_reasons"]
