"""The client against scripted OpenAI-compatible servers (httpx.MockTransport, no sockets, no wall time):
what is retried and what is not, the server's message kept, retry-after-ms, structured-output
dialects, reasoning-model settings, truncated answers."""

import asyncio
import json

import httpx
import pytest
from pydantic import BaseModel

from genrep.diting.llm import LLMError, OpenAIBackend, Sampling, complete_json
from genrep.diting.llm.openai_client import kind_defaults, retry_after_s, structured_request
from genrep.diting.llm.types import TruncatedError
from genrep.diting.llm.usage import UsageMeter, parse_prices


class Score(BaseModel):
    agree: bool
    score: int


ANSWER = '{"agree": true, "score": 3}'


def _ok(content: str = ANSWER, finish: str = "stop", **message) -> httpx.Response:
    body = {
        "model": "m",
        "choices": [{"message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }
    return httpx.Response(200, json=body)


class Fake:
    """A scripted server: ``answers`` are handed out in turn (the last one repeats); every body is kept."""

    def __init__(self, *answers):
        self.answers, self.bodies = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        answer = self.answers[min(len(self.bodies), len(self.answers)) - 1]
        return answer(self.bodies[-1]) if callable(answer) else answer


@pytest.fixture
def sleeps(monkeypatch):
    """The client's waits between attempts, recorded and skipped."""
    from genrep.diting.llm import openai_client

    recorded: list[float] = []

    async def sleep(delay, *args, **kwargs):
        recorded.append(delay)

    monkeypatch.setattr(openai_client.asyncio, "sleep", sleep)
    return recorded


def _backend(fake: Fake, **kw) -> OpenAIBackend:
    kw.setdefault("max_retries", 4)
    model = kw["name"].partition(":")[2] if "name" in kw else "m"
    return OpenAIBackend(model, "http://fake/v1", transport=httpx.MockTransport(fake), **kw)


def _complete(backend: OpenAIBackend, sampling: Sampling = Sampling()):
    async def go():
        try:
            return await backend.complete([{"role": "user", "content": "hi"}], sampling)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def _json(backend, schema=Score, **kw):
    async def go():
        try:
            return await complete_json(backend, [{"role": "user", "content": "rate"}], schema, **kw)
        finally:
            await backend.aclose()

    return asyncio.run(go())


VALIDATION_500 = {
    "detail": [
        {
            "type": "literal_error",
            "loc": ["body", "response_format", "type"],
            "msg": "Input should be 'text' or 'json_object'",
        }
    ]
}


def test_a_500_validation_body_is_not_retried_and_its_message_is_kept(sleeps):
    fake = Fake(httpx.Response(500, json=VALIDATION_500), _ok())
    with pytest.raises(LLMError) as info:
        _complete(_backend(fake))
    assert len(fake.bodies) == 1 and sleeps == []
    assert info.value.reason.startswith("HTTP 500: ") and "Input should be 'text' or 'json_object'" in info.value.reason
    assert (info.value.attempts, info.value.status) == (1, 500)


@pytest.mark.parametrize("message", ["json_schema is not supported", "unsupported response_format"])
def test_other_5xx_request_errors_are_not_retried(sleeps, message):
    fake = Fake(httpx.Response(500, json={"error": {"message": message, "type": "server_error"}}))
    with pytest.raises(LLMError, match=message):
        _complete(_backend(fake))
    assert len(fake.bodies) == 1


def test_a_generic_500_is_retried_and_the_attempts_are_counted(sleeps):
    boom = httpx.Response(500, json={"error": {"message": "CUDA out of memory", "type": "server_error"}})
    fake = Fake(boom, boom, boom, _ok())
    c = _complete(_backend(fake))
    assert c.text == ANSWER and c.attempts == 4 and len(sleeps) == 3


def test_giving_up_says_what_the_server_said(sleeps):
    fake = Fake(httpx.Response(500, json={"error": {"message": "CUDA out of memory"}}))
    with pytest.raises(LLMError) as info:
        _complete(_backend(fake, max_retries=2))
    assert info.value.reason == "HTTP 500 after 3 attempts: CUDA out of memory"
    assert info.value.attempts == 3 and len(fake.bodies) == 3


def test_429_with_retry_after_ms_is_honoured(sleeps):
    limited = httpx.Response(429, headers={"retry-after-ms": "250", "retry-after": "9"}, json={"error": "slow down"})
    fake = Fake(limited, _ok())
    c = _complete(_backend(fake))
    assert c.attempts == 2 and sleeps == [0.25]
    assert retry_after_s({"retry-after-ms": "1500"}) == 1.5 and retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "3"}) == 3.0 and retry_after_s({}) is None


def test_408_is_retried_and_400_is_not(sleeps):
    fake = Fake(httpx.Response(408, text="timeout"), _ok())
    assert _complete(_backend(fake)).attempts == 2
    fake = Fake(httpx.Response(400, json={"error": {"message": "bad"}}), _ok())
    with pytest.raises(LLMError, match="HTTP 400: bad"):
        _complete(_backend(fake))
    assert len(fake.bodies) == 1


def test_the_usage_meter_counts_http_attempts_as_well_as_calls(sleeps):
    boom = httpx.Response(503, json={"error": {"message": "busy"}})
    meter = UsageMeter()
    backend = meter.wrap(_backend(Fake(boom, _ok()), name="http:m"))
    _complete(backend)  # type: ignore[arg-type]
    failing = meter.wrap(_backend(Fake(boom), name="http:m", max_retries=1))
    with pytest.raises(LLMError):
        _complete(failing)  # type: ignore[arg-type]
    t = meter.summary()["per_model"]["http:m"]
    assert (t["calls"], t["failures"], t["http_attempts"]) == (1, 1, 4)


# --- structured-output dialects


def test_kinds_pick_their_dialect():
    assert kind_defaults("llamacpp", "x") == ("llama-cpp", False)
    assert kind_defaults("deepseek", "deepseek-chat") == ("json_object", False)
    assert kind_defaults("deepseek", "deepseek-reasoner") == ("json_object", True)
    assert kind_defaults("vllm", "Qwen/Qwen3-32B") == ("json_schema", False)
    assert kind_defaults("openai", "o3-mini")[1] and kind_defaults("openai", "gpt-5-mini")[1]
    assert not kind_defaults("openai", "gpt-4o-mini")[1]
    assert _backend(Fake(), name="llamacpp:qwen").settings.structured == "llama-cpp"


def test_the_llama_cpp_dialect_sends_the_schema_under_json_object():
    fake = Fake(_ok())
    answer, _ = _json(_backend(fake, structured="llama-cpp"))
    assert answer == Score(agree=True, score=3)
    fmt = fake.bodies[0]["response_format"]
    assert fmt["type"] == "json_object" and set(fmt) == {"type", "schema"}
    assert fmt["schema"]["properties"].keys() == {"agree", "score"}
    assert fake.bodies[0]["messages"] == [{"role": "user", "content": "rate"}]


def test_a_server_that_rejects_json_schema_is_asked_in_its_own_dialect(sleeps):
    def llama_cpp(body):
        if body.get("response_format", {}).get("type") not in (None, "text", "json_object"):
            return httpx.Response(500, json=VALIDATION_500)
        return _ok()

    fake = Fake(llama_cpp)
    with pytest.raises(LLMError, match="Input should be"):
        _json(_backend(fake, structured="json_schema"))
    assert len(fake.bodies) == 1  # not retried
    fake = Fake(llama_cpp)
    assert _json(_backend(fake, name="llamacpp:m"))[0].score == 3 and len(fake.bodies) == 1


def test_the_json_object_dialect_describes_the_schema_in_a_system_message():
    fake = Fake(_ok())
    _json(_backend(fake, structured="json_object"))
    body = fake.bodies[0]
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system" and "JSON" in system["content"] and '"score"' in system["content"]
    assert user == {"role": "user", "content": "rate"}
    # an existing system message is extended, not doubled
    msgs, fmt = structured_request(
        [{"role": "system", "content": "You judge."}], {"type": "json_object"}, "json_object"
    )
    assert fmt == {"type": "json_object"} and len(msgs) == 1 and msgs[0]["content"].startswith("You judge.\n\n")


def test_the_text_dialect_sends_no_response_format_and_reads_the_object_from_prose():
    reply = 'Sure! Here it is:\n```json\n{"agree": false, "score": 1}\n```\nHope that {helps}.'
    fake = Fake(_ok(reply))
    answer, _ = _json(_backend(fake, structured="text"))
    assert answer == Score(agree=False, score=1)
    assert "response_format" not in fake.bodies[0] and fake.bodies[0]["messages"][0]["role"] == "system"
    fake = Fake(_ok('I think {"agree": true, "score": 2} is fair'))
    assert _json(_backend(fake, structured="text"))[0].score == 2


def test_an_unknown_dialect_is_the_users_to_fix():
    from genrep.core.errors import UserError

    with pytest.raises(UserError, match="structured output 'grammar'"):
        _backend(Fake(), structured="grammar")


# --- reasoning models


def test_a_reasoning_server_gets_no_sampling_fields_and_its_reasoning_is_kept():
    def reasoner(body):
        if "temperature" in body or "top_p" in body:
            return httpx.Response(400, json={"error": {"message": "temperature is not supported with this model"}})
        if body.get("response_format") != {"type": "json_object"}:
            return httpx.Response(400, json={"error": {"message": "This response_format type is unavailable now"}})
        reply = _ok(reasoning_content="Let me think... 3.")
        data = json.loads(reply.content)
        data["usage"] = {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 30},
        }
        return httpx.Response(200, json=data)

    fake = Fake(reasoner)
    meter = UsageMeter(parse_prices({"deepseek-reasoner": [1.0, 2.0, 0.25]}))
    backend = _backend(fake, name="deepseek:deepseek-reasoner")
    assert backend.settings.reasoning and backend.settings.sampling_fields == ()
    answer, [c] = _json(meter.wrap(backend))
    assert answer.score == 3 and c.reasoning_content == "Let me think... 3."
    assert (c.cached_tokens, c.reasoning_tokens) == (64, 30)
    assert "max_tokens" in fake.bodies[0] and "seed" not in fake.bodies[0]
    t = meter.summary()["per_model"]["deepseek:deepseek-reasoner"]
    assert (t["cached_tokens"], t["reasoning_tokens"]) == (64, 30)
    assert t["cost_usd"] == pytest.approx((36 * 1.0 + 64 * 0.25 + 40 * 2.0) / 1e6)
    # the same server refuses a plain backend's temperature with a 400, at once
    with pytest.raises(LLMError, match="HTTP 400: temperature is not supported"):
        _json(_backend(Fake(reasoner), structured="json_object"))


def test_openai_reasoning_models_get_max_completion_tokens():
    fake = Fake(_ok())
    _complete(_backend(fake, name="openai:o3-mini"), Sampling(max_tokens=77))
    body = fake.bodies[0]
    assert body["max_completion_tokens"] == 77 and not {"max_tokens", "temperature", "top_p", "seed"} & set(body)
    fake = Fake(_ok())
    _complete(_backend(fake, name="vllm:m", reasoning=True, sampling_fields=["seed"], max_tokens_field="max_tokens"))
    assert fake.bodies[0]["seed"] == 0 and "temperature" not in fake.bodies[0] and fake.bodies[0]["max_tokens"] == 512


def test_reasoning_can_be_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("GENREP_LLM_REASONING", "true")
    monkeypatch.setenv("GENREP_LLM_STRUCTURED", "text")
    s = _backend(Fake(), name="vllm:m").settings
    assert s.reasoning and s.structured == "text" and s.sampling_fields == ()


# --- truncated answers


def test_a_truncated_answer_is_never_accepted_and_fails_when_no_larger_budget_is_allowed():
    fake = Fake(_ok('{"agree": true, "score": 3}', finish="length"))
    with pytest.raises(TruncatedError) as info:
        _json(_backend(fake), sampling=Sampling(max_tokens=16))
    assert len(fake.bodies) == 1 and isinstance(info.value, LLMError)
    assert "finish_reason 'length'" in info.value.reason and len(info.value.completions) == 1


def test_a_truncated_answer_is_retried_with_a_larger_budget_when_allowed():
    fake = Fake(_ok('{"agree": tr', finish="length"), _ok())
    answer, completions = _json(_backend(fake), sampling=Sampling(max_tokens=16), max_tokens_cap=64)
    assert answer.score == 3 and [b["max_tokens"] for b in fake.bodies] == [16, 32] and len(completions) == 2


def test_truncation_retries_are_bounded():
    fake = Fake(_ok('{"agree": tr', finish="length"))
    with pytest.raises(TruncatedError, match="after 3 tries"):
        _json(_backend(fake), sampling=Sampling(max_tokens=16), max_tokens_cap=1024, length_retries=2)
    assert [b["max_tokens"] for b in fake.bodies] == [16, 32, 64]


def test_the_cache_key_names_non_default_wire_settings(monkeypatch):
    """Answers obtained with another dialect / reasoning setting never come back from the cache: the backend's
    cache name carries its wire settings whenever they are not its kind's defaults (environment included)."""
    from genrep.diting.llm.openai_client import OpenAIBackend

    monkeypatch.delenv("GENREP_LLM_STRUCTURED", raising=False)
    monkeypatch.delenv("GENREP_LLM_REASONING", raising=False)
    plain = OpenAIBackend("m", base_url="http://127.0.0.1:9", name="llamacpp:m")
    assert getattr(plain, "cache_name", plain.name) == "llamacpp:m"  # the defaults: old cache entries stay valid
    text = OpenAIBackend("m", base_url="http://127.0.0.1:9", name="llamacpp:m", structured="text")
    assert text.cache_name.startswith("llamacpp:m#structured=text")
    monkeypatch.setenv("GENREP_LLM_STRUCTURED", "json_object")
    env = OpenAIBackend("m", base_url="http://127.0.0.1:9", name="llamacpp:m")
    assert env.cache_name.startswith("llamacpp:m#structured=json_object")
