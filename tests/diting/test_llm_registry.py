import pytest

from genrep.core.errors import UserError
from genrep.diting.llm import Backend, CachedBackend, LLMCache, LocalBackend, OpenAIBackend, make_backend, parse_spec

ENV = ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GENREP_LLM_API_KEY", "GENREP_LLM_BASE_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GENREP_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini", None)),
        ("ollama:qwen2.5:7b", ("ollama", "qwen2.5:7b", None)),
        ("vllm:Qwen/Qwen3-32B@http://gpu:8000/v1", ("vllm", "Qwen/Qwen3-32B", "http://gpu:8000/v1")),
        ("local:smollm2-135m", ("local", "smollm2-135m", None)),
    ],
)
def test_parse_spec(spec, parsed):
    assert parse_spec(spec) == parsed


def test_http_kinds_get_their_default_urls_and_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-d")
    expected = {
        "openai:gpt-4o-mini": ("https://api.openai.com/v1", "sk-o"),
        "deepseek:deepseek-chat": ("https://api.deepseek.com/v1", "sk-d"),
        "vllm:m": ("http://localhost:8000/v1", None),
        "llamacpp:m": ("http://localhost:8080/v1", None),
        "ollama:qwen2.5:7b": ("http://localhost:11434/v1", None),
        "http:m@https://example.org/v1/": ("https://example.org/v1", None),
    }
    for spec, (url, key) in expected.items():
        backend = make_backend(spec, cache=False, concurrency=3, timeout_s=5, max_retries=1)
        assert isinstance(backend, OpenAIBackend) and (backend.base_url, backend.api_key) == (url, key), spec
        assert backend.name == spec.split("@")[0]
        assert (backend.concurrency, backend.timeout_s, backend.max_retries) == (3, 5, 1)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("GENREP_LLM_BASE_URL", "http://127.0.0.1:9999/v1")
    monkeypatch.setenv("GENREP_LLM_API_KEY", "sk-g")
    backend = make_backend("openai:gpt-4o-mini", cache=False)  # GENREP_LLM_API_KEY stands in for OPENAI_API_KEY
    assert (backend.base_url, backend.api_key) == ("http://127.0.0.1:9999/v1", "sk-g")
    assert make_backend("http:m", cache=False).base_url == "http://127.0.0.1:9999/v1"
    assert make_backend("vllm:m@http://gpu:8000/v1", cache=False).base_url == "http://gpu:8000/v1"  # the spec wins


@pytest.mark.parametrize(
    "spec, message",
    [
        ("openai:gpt-4o-mini", "set OPENAI_API_KEY"),
        ("deepseek:deepseek-chat", "set DEEPSEEK_API_KEY"),
        ("http:m", "GENREP_LLM_BASE_URL"),
        (
            "anthropic:claude",
            "unknown LLM backend kind 'anthropic'.*local, openai, deepseek, vllm, llamacpp, ollama, http",
        ),
        ("gpt-4o-mini", "not KIND:MODEL"),
        ("openai:", "not KIND:MODEL"),
        ("local:smollm2-135m@http://x", "takes no @BASE_URL"),
        ("vllm:m@localhost:8000", "must start with http"),
    ],
)
def test_mistakes_are_user_errors_naming_the_culprit(spec, message):
    with pytest.raises(UserError, match=message):
        make_backend(spec, cache=False)


def test_caching_is_on_by_default(tmp_path):
    backend = make_backend("vllm:m")
    assert isinstance(backend, CachedBackend) and isinstance(backend, Backend) and backend.name == "vllm:m"
    assert backend.cache.path == tmp_path / "cache" / "llm" / "cache.sqlite"
    mine = LLMCache(tmp_path / "mine.sqlite")
    assert make_backend("vllm:m", cache=mine).cache is mine
    local = make_backend("local:smollm2-135m", cache=False)
    assert isinstance(local, LocalBackend) and local.name == "local:smollm2-135m" and local._lm is None  # lazy


def test_structured_and_reasoning_reach_the_http_backend(monkeypatch):
    monkeypatch.delenv("GENREP_LLM_STRUCTURED", raising=False)
    monkeypatch.delenv("GENREP_LLM_REASONING", raising=False)
    backend = make_backend("vllm:m", cache=False, structured="json_object", reasoning=True)
    assert isinstance(backend, OpenAIBackend)
    assert (backend.settings.structured, backend.settings.reasoning) == ("json_object", True)
    cached = make_backend("vllm:m", structured="llama-cpp", reasoning=False)  # behind the cache by default
    assert isinstance(cached, CachedBackend) and isinstance(cached.backend, OpenAIBackend)
    assert (cached.backend.settings.structured, cached.backend.settings.reasoning) == ("llama-cpp", False)
    plain = make_backend("vllm:m", cache=False)  # None: the kind's defaults
    assert (plain.settings.structured, plain.settings.reasoning) == ("json_schema", False)
    with pytest.raises(UserError, match="structured output 'xml'"):
        make_backend("vllm:m", cache=False, structured="xml")


def test_a_llamacpp_spec_speaks_the_llama_cpp_dialect_by_default(monkeypatch):
    monkeypatch.delenv("GENREP_LLM_STRUCTURED", raising=False)
    backend = make_backend("llamacpp:qwen2.5-7b", cache=False)
    assert isinstance(backend, OpenAIBackend) and backend.settings.structured == "llama-cpp"
    assert make_backend("llamacpp:qwen2.5-7b", cache=False, structured="json_schema").settings.structured == (
        "json_schema"
    )


@pytest.mark.parametrize("setting", [{"structured": "json_schema"}, {"reasoning": False}, {"reasoning": True}])
def test_a_local_model_rejects_structured_and_reasoning_settings(setting):
    with pytest.raises(UserError, match="a local model takes no structured/reasoning setting") as err:
        make_backend("local:smollm2-135m", cache=False, **setting)
    assert "\n" not in str(err.value)
    local = make_backend("local:smollm2-135m", cache=False, structured=None, reasoning=None)
    assert isinstance(local, LocalBackend)
