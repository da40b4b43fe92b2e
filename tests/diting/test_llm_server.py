import asyncio

import httpx
import pytest

from genrep.core.errors import UserError
from genrep.diting.llm import LLMError, LLMServer, LocalBackend, OpenAIBackend, Sampling
from genrep.diting.llm.local import _SeededSampler, cut_at_stop, transcript

from .fakes import EchoBackend


@pytest.fixture
def echo_server():
    backend = EchoBackend("echo-1")
    with LLMServer(backend) as server:
        yield server, backend
    assert backend.closed  # the server closes its backend


async def _complete(url: str, prompt: str, sampling: Sampling = Sampling(), model: str = "echo-1", **kw):
    client = OpenAIBackend(model, url, backoff_base_s=0.01, **kw)
    try:
        return await client.complete([{"role": "user", "content": prompt}], sampling)
    finally:
        await client.aclose()


def test_openai_backend_talks_to_the_server_end_to_end(echo_server):
    server, backend = echo_server
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
    sampling = Sampling(temperature=0.5, top_p=0.8, max_tokens=9, seed=None, stop=("x", "y"),
                        response_format={"type": "json_object"})
    c = asyncio.run(_complete(server.url, "你好 world", sampling))
    assert (c.text, c.model, c.finish_reason) == ("echo: 你好 world", "echo-1", "stop")
    assert (c.prompt_tokens, c.completion_tokens) == (2, 3)
    assert backend.calls[-1] == ([{"role": "user", "content": "你好 world"}], sampling)


class GatheringBackend(EchoBackend):
    """Holds each call until ``n`` calls are inside it at once (60 s at most), then echoes; counts the most."""

    def __init__(self, n: int):
        super().__init__("echo")
        self.n, self.active, self.most = n, 0, 0

    async def complete(self, messages, sampling):
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 60
            while self.most < self.n and loop.time() < end:
                await asyncio.sleep(0.01)
            return await super().complete(messages, sampling)
        finally:
            self.active -= 1


def test_concurrent_requests_reach_the_backend_concurrently():
    backend = GatheringBackend(16)
    with LLMServer(backend) as server:
        async def many():
            client = OpenAIBackend("echo", server.url, concurrency=16)
            try:
                return await asyncio.gather(*(client.complete([{"role": "user", "content": str(i)}], Sampling())
                                              for i in range(16)))
            finally:
                await client.aclose()

        results = asyncio.run(many())
    assert [r.text for r in results] == [f"echo: {i}" for i in range(16)]
    assert backend.most == 16  # all 16 inside the backend at once, not one after another


def test_models_route_and_openai_style_errors(echo_server):
    server, _ = echo_server
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/models").json()["data"][0]["id"] == "echo-1"
        post = lambda body: http.post("/chat/completions", json=body)
        bad = {"not json": http.post("/chat/completions", content=b"{nope"),
               "no messages": post({"model": "m"}),
               "bad message": post({"messages": [{"role": "user"}]}),
               "bad temperature": post({"messages": [], "temperature": "hot"}),
               "stream": post({"messages": [{"role": "user", "content": "x"}], "stream": True})}
        assert {k: r.status_code for k, r in bad.items()} == dict.fromkeys(bad, 400)
        assert bad["no messages"].json()["error"]["param"] == "messages"
        assert bad["bad message"].json()["error"]["message"].startswith("messages[0] must be an object")
        assert bad["stream"].json()["error"]["type"] == "invalid_request_error"
        assert http.get("/nothing").status_code == 404


def test_a_backend_failure_is_a_502(echo_server):
    server, _ = echo_server
    with pytest.raises(LLMError, match="HTTP 502 after 2 attempts"):
        asyncio.run(_complete(server.url, "fail", max_retries=1))


def test_only_loopback_unless_asked():
    with pytest.raises(UserError, match="non-loopback host '0.0.0.0'"):
        LLMServer(EchoBackend(), host="0.0.0.0")
    LLMServer(EchoBackend(), host="localhost").close()


def test_local_decoding_helpers():
    import torch

    assert cut_at_stop("a, b. c", (".", ",")) == ("a", True) and cut_at_stop("abc", ("x",)) == ("abc", False)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert transcript(messages) == "system: S\nuser: U\nassistant:"
    assert transcript([{"role": "user", "content": "Chinese: 好\nEnglish:"}]) == "Chinese: 好\nEnglish:"  # continue it
    scores = torch.randn(1, 50)

    def pick(seed, top_p=1.0):
        return int(_SeededSampler(1.0, top_p, seed)(None, scores).argmax())

    assert [pick(3) for _ in range(3)] == [pick(3)] * 3 and len({pick(s) for s in range(20)}) > 1
    assert {pick(s, top_p=1e-6) for s in range(10)} == {int(scores.argmax())}


def test_the_bundled_smollm2_answers_through_the_server_greedily_and_deterministically(smollm2_dir):
    """Cheap: SmolLM2 loads in seconds from the materialised cache; 2 x 8 greedy tokens."""
    with LLMServer(LocalBackend("smollm2-135m")) as server:
        first, second = (asyncio.run(_complete(server.url, "Name three colours of the rainbow.", Sampling(max_tokens=8),
                                               model="smollm2-135m", timeout_s=1800)) for _ in range(2))
    assert first.text.strip() and first.text == second.text
    assert first.completion_tokens <= 8 and first.prompt_tokens > 5 and first.model == "smollm2-135m"
