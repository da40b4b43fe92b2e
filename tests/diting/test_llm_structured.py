import asyncio

import pytest
from pydantic import BaseModel, Field

from genrep.diting.llm import LLMError, Sampling, complete_json, extract_json, strict_json_schema
from genrep.diting.llm.structured import response_format

from .fakes import EchoBackend, ScriptedBackend


class Reason(BaseModel):
    text: str


class Verdict(BaseModel):
    agree: bool
    specific: int = Field(ge=0, le=2)
    reasons: list[Reason] = []


ASK = [{"role": "user", "content": "Judge. Answer in JSON."}]
GOOD = '{"agree": true, "specific": 2, "reasons": [{"text": "faithful {idiom}"}]}'


@pytest.mark.parametrize(
    "reply",
    [
        GOOD,
        f"Sure! Here is my verdict:\n```json\n{GOOD}\n```\nHope this helps.",
        f"```\n{GOOD}\n```",
        f"The verdict is {GOOD} -- final.",
        f"Thinking about {{braces}} first.\n```json\n{GOOD}\n```",
    ],
)
def test_extract_json_finds_the_object_in_fences_and_prose(reply):
    assert extract_json(reply) == GOOD


def test_extract_json_says_what_is_wrong():
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("I cannot judge this.")
    with pytest.raises(ValueError, match="not closed"):
        extract_json('{"agree": true, "reasons": [')


def test_the_schema_is_sent_in_the_form_strict_mode_accepts():
    fmt = response_format(Verdict)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Verdict" and fmt["json_schema"]["strict"]
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["agree", "specific", "reasons"]
    assert schema["$defs"]["Reason"]["additionalProperties"] is False
    assert strict_json_schema(Verdict) == schema and "additionalProperties" not in Verdict.model_json_schema()
    assert (
        response_format(Verdict, "json_object") == {"type": "json_object"} and response_format(Verdict, "none") is None
    )


def test_a_valid_first_reply_needs_no_repair():
    backend = ScriptedBackend([f"```json\n{GOOD}\n```"])
    verdict, completions = asyncio.run(complete_json(backend, ASK, Verdict, Sampling(max_tokens=64)))
    assert (
        verdict == Verdict(agree=True, specific=2, reasons=[Reason(text="faithful {idiom}")]) and len(completions) == 1
    )
    sent = backend.calls[0][1]
    assert sent.max_tokens == 64 and sent.response_format == response_format(Verdict)


def test_an_invalid_reply_is_repaired():
    backend = ScriptedBackend(["no idea", '{"agree": true, "specific": 5}', GOOD])
    verdict, completions = asyncio.run(complete_json(backend, ASK, Verdict))
    assert verdict.specific == 2 and len(completions) == 3
    last_conversation = backend.calls[2][0]
    assert (
        last_conversation[:1] == ASK and [m["role"] for m in last_conversation] == ["user"] + ["assistant", "user"] * 2
    )
    assert last_conversation[3]["content"] == '{"agree": true, "specific": 5}'
    repair = last_conversation[4]["content"]
    assert "specific: Input should be less than or equal to 2" in repair and "\n" not in repair
    assert "no JSON object" in last_conversation[2]["content"]


def test_it_gives_up_after_max_repairs():
    backend = ScriptedBackend(['{"agree": "maybe"}'] * 5)
    with pytest.raises(LLMError, match=r"invalid JSON after 1 repairs: agree: Input should be a valid boolean"):
        asyncio.run(complete_json(backend, ASK, Verdict, max_repairs=1))
    assert len(backend.calls) == 2


def test_backend_failures_pass_through():
    with pytest.raises(LLMError, match="injected failure"):
        asyncio.run(complete_json(EchoBackend(), [{"role": "user", "content": "fail"}], Verdict))


def test_a_raw_newline_inside_a_json_string_is_read_but_nothing_else_is_forgiven():
    from pydantic import BaseModel, StrictInt

    from genrep.diting.llm.structured import parse_answer

    class A(BaseModel):
        reasons: str
        score: StrictInt

    assert parse_answer('{"reasons": "line one\nline two", "score": 2}', A) == A(reasons="line one\nline two", score=2)
    with pytest.raises(ValueError, match="Invalid JSON"):
        parse_answer('{"reasons": "a\nb", "score": 2,}', A)  # a trailing comma stays an error
    with pytest.raises(ValueError, match="score"):
        parse_answer('{"reasons": "a\nb", "score": "2"}', A)  # and so does a score given as a string
