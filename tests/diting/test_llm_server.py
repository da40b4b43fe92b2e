import asyncio
import json
import socket

import httpx
import pydantic
import pytest

try:  # the official client, a dev dependency: its tests skip without it, the rest still run
    import openai
except ImportError:  # pragma: no cover
    openai = None

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.diting.llm import LLMError, LLMServer, LocalBackend, OpenAIBackend, Sampling
from genrep.diting.llm.local import cut_at_stop, transcript
from genrep.diting.llm.sampling import SeededSampler

from .fakes import EchoBackend, ScriptedBackend


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
    sampling = Sampling(
        temperature=0.5, top_p=0.8, max_tokens=9, seed=None, stop=("x", "y"), response_format={"type": "json_object"}
    )
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
                return await asyncio.gather(
                    *(client.complete([{"role": "user", "content": str(i)}], Sampling()) for i in range(16))
                )
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
        bad = {
            "not json": http.post("/chat/completions", content=b"{nope"),
            "no messages": post({"model": "m"}),
            "bad message": post({"messages": [{"role": "user"}]}),
            "bad temperature": post({"messages": [], "temperature": "hot"}),
            "stream": post({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "n": post({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "stream_options alone": post({"messages": [{"role": "user", "content": "x"}], "stream_options": {}}),
            "image part": post({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
            "bad content": post({"messages": [{"role": "user", "content": 3}]}),
        }
        assert {k: r.status_code for k, r in bad.items()} == dict.fromkeys(bad, 400)
        assert bad["no messages"].json()["error"]["param"] == "messages"
        assert bad["bad message"].json()["error"]["message"].startswith("messages[0] must be an object")
        assert bad["stream"].json()["error"]["type"] == "invalid_request_error"
        assert bad["n"].json()["error"]["param"] == "n"
        assert bad["image part"].json()["error"]["param"] == "messages[0].content[0]"
        assert http.get("/nothing").status_code == 404


needs_openai = pytest.mark.skipif(openai is None, reason="the openai package is not installed (pip install openai)")


def _openai(server: LLMServer) -> "openai.OpenAI":
    """The official client against ``server`` (``server.url`` ends in /v1 already); no retries."""
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=600)  # a hang guard only


@needs_openai
def test_the_official_openai_client_gets_a_chat_completion(echo_server):
    server, backend = echo_server
    with _openai(server) as client:
        r = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "hi there"}], n=1, temperature=0.3, seed=7
        )
    assert (r.object, r.model, len(r.choices)) == ("chat.completion", "echo-1", 1)
    assert (r.choices[0].message.role, r.choices[0].message.content) == ("assistant", "echo: hi there")
    assert r.choices[0].finish_reason == "stop" and r.usage is not None and r.usage.total_tokens == 2 + 3
    assert backend.calls[-1][1] == Sampling(temperature=0.3, seed=7)


@needs_openai
def test_content_as_a_list_of_text_parts_is_joined_in_order(echo_server):
    server, backend = echo_server
    parts = [{"type": "text", "text": "one "}, {"type": "text", "text": "two"}]
    with _openai(server) as client:
        r = client.chat.completions.create(
            model="echo-1",
            messages=[
                {"role": "system", "content": [{"type": "text", "text": "S"}]},
                {"role": "user", "content": parts},
            ],
        )
        assert r.choices[0].message.content == "echo: one two"
        assert backend.calls[-1][0] == [{"role": "system", "content": "S"}, {"role": "user", "content": "one two"}]
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        with pytest.raises(
            openai.BadRequestError, match="messages\\[0\\].content\\[1\\]: content part type 'image_url'"
        ):
            client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": [parts[0], image]}])


@needs_openai
def test_n_above_one_is_a_400_naming_n(echo_server):
    server, _ = echo_server
    with _openai(server) as client, pytest.raises(openai.BadRequestError, match="'n' must be 1") as err:
        client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "x"}], n=2)
    assert err.value.status_code == 400 and err.value.param == "n"


class Verdict(pydantic.BaseModel):
    label: str
    score: int


@needs_openai
def test_response_format_json_schema_json_object_and_parse_reach_the_backend():
    backend = ScriptedBackend(['{"label": "good", "score": 4}', '{"a": 1}', '{"label": "bad", "score": 1}'])
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "Verdict", "schema": Verdict.model_json_schema(), "strict": True},
    }
    messages = [{"role": "user", "content": "judge"}]
    with LLMServer(backend) as server, _openai(server) as client:
        r = client.chat.completions.create(model="scripted", messages=messages, response_format=schema_format)
        assert Verdict.model_validate_json(r.choices[0].message.content or "") == Verdict(label="good", score=4)
        assert backend.calls[-1][1].response_format == schema_format
        r = client.chat.completions.create(model="scripted", messages=messages, response_format={"type": "json_object"})
        assert r.choices[0].message.content == '{"a": 1}'
        assert backend.calls[-1][1].response_format == {"type": "json_object"}
        parsed = client.chat.completions.parse(model="scripted", messages=messages, response_format=Verdict)
    assert parsed.choices[0].message.parsed == Verdict(label="bad", score=1)
    sent = backend.calls[-1][1].response_format
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Verdict"
    assert sent["json_schema"]["strict"] is True and set(sent["json_schema"]["schema"]["properties"]) == {
        "label",
        "score",
    }


@needs_openai
def test_streaming_through_the_official_client(echo_server):
    server, _ = echo_server
    messages = [{"role": "user", "content": "流 stream me"}]
    with _openai(server) as client:
        chunks = list(client.chat.completions.create(model="echo-1", messages=messages, stream=True))
        assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: 流 stream me"
        assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
        assert all(c.usage is None for c in chunks)
        with_usage = list(
            client.chat.completions.create(
                model="echo-1", messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
        assert (with_usage[-1].usage.prompt_tokens, with_usage[-1].usage.completion_tokens) == (3, 4)
        assert with_usage[-2].choices[0].finish_reason == "stop"
        with pytest.raises(openai.APIError, match="injected failure"):  # a failure mid-stream is an error event
            list(
                client.chat.completions.create(
                    model="echo-1", messages=[{"role": "user", "content": "fail"}], stream=True
                )
            )
        # the connection is still usable after streams (keep-alive, chunked framing intact)
        assert client.chat.completions.create(model="echo-1", messages=messages).choices[0].message.content


def test_the_raw_event_stream_ends_with_done(echo_server):
    server, _ = echo_server
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=server.url) as http, http.stream("POST", "/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    kinds = [json.loads(e[6:]) for e in events[:-1]]
    assert [k["choices"][0]["delta"] if k["choices"] else "usage" for k in kinds] == [
        {"role": "assistant", "content": ""},
        {"content": "echo: x"},
        {},
        "usage",
    ]


def test_a_backend_failure_is_a_502(echo_server):
    server, _ = echo_server
    with pytest.raises(LLMError, match="HTTP 502 after 2 attempts"):
        asyncio.run(_complete(server.url, "fail", max_retries=1))


def test_only_loopback_unless_asked():
    with pytest.raises(UserError, match="non-loopback host '0.0.0.0'.*pass --allow-remote .*allow_remote=True"):
        LLMServer(EchoBackend(), host="0.0.0.0")
    with LLMServer(EchoBackend(), host="0.0.0.0", allow_remote=True) as server:
        assert server.url.startswith("http://0.0.0.0:")
    if _resolves("localhost"):
        with LLMServer(EchoBackend(), host="localhost") as server:
            assert server.url.startswith("http://127.0.0.1:")  # a name resolving to both families listens on IPv4


def _resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, 0)
        return True
    except OSError:
        return False


@pytest.fixture
def busy_port():
    """A loopback port this test holds (bound and listening), so that a server cannot take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_and_a_bad_host_or_port_are_one_line_errors(busy_port):
    with pytest.raises(UserError) as err:
        LLMServer(EchoBackend(), port=busy_port)
    assert str(err.value) == f"127.0.0.1:{busy_port} is already in use; pick another --port"
    for host in ("a..b", "x y", "", "-bad", "a" * 64):
        with pytest.raises(UserError, match=r"^host .*: not an IP address or a valid host name$"):
            LLMServer(EchoBackend(), host=host)
    for port in (-1, 65536, "80", True):
        with pytest.raises(UserError, match="port must be an integer from 0 to 65535"):
            LLMServer(EchoBackend(), port=port)


def _serve_cli(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of ``genrep diting serve ARGV`` with a backend that needs no model."""
    with pytest.raises(SystemExit) as exit_info:
        main(["diting", "serve", "--backend", "http:m@http://127.0.0.1:9/v1", *map(str, argv)])
    return exit_info.value.code, capsys.readouterr().err


def test_serve_cli_reports_bad_ports_and_hosts_in_one_line(capsys, busy_port):
    cases = {
        (f"--port={busy_port}",): f"127.0.0.1:{busy_port} is already in use; pick another --port",
        ("--port", "0"): "Invalid value for '--port': 0 is not in the range 1<=x<=65535",
        ("--port", "65536"): "Invalid value for '--port': 65536 is not in the range 1<=x<=65535",
        ("--port", "http"): "Invalid value for '--port': 'http' is not a valid integer",
        ("--host", "my host"): "host 'my host': not an IP address or a valid host name",
        ("--host", "0.0.0.0"): "refusing to serve on non-loopback host '0.0.0.0' (the server has no "
        "authentication): pass --allow-remote to serve anyway",
    }
    for argv, message in cases.items():
        code, err = _serve_cli(capsys, *argv)
        assert code == 2 and err.startswith(f"genrep: error: {message}"), err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_serve_cli_passes_allow_remote(capsys, monkeypatch):
    import genrep.diting.llm.server as server_module

    seen = {}
    monkeypatch.setattr(server_module, "serve", lambda backend, **kw: seen.update(kw, model=backend.model))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "diting",
                "serve",
                "--backend",
                "http:m@http://127.0.0.1:9/v1",
                "--host",
                "0.0.0.0",
                "--port",
                "8123",
                "--allow-remote",
            ]
        )
        raise SystemExit(0)
    assert exit_info.value.code == 0
    assert seen == {"host": "0.0.0.0", "port": 8123, "allow_remote": True, "model": "m"}
    assert "without authentication" in capsys.readouterr().err


def test_local_decoding_helpers():
    import torch

    assert cut_at_stop("a, b. c", (".", ",")) == ("a", True) and cut_at_stop("abc", ("x",)) == ("abc", False)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert transcript(messages) == "system: S\nuser: U\nassistant:"
    assert transcript([{"role": "user", "content": "Chinese: 好\nEnglish:"}]) == "Chinese: 好\nEnglish:"  # continue it
    scores = torch.randn(1, 50)

    def pick(seed, top_p=1.0):
        return int(SeededSampler(1.0, top_p, seed)(None, scores).argmax())

    assert [pick(3) for _ in range(3)] == [pick(3)] * 3 and len({pick(s) for s in range(20)}) > 1
    assert {pick(s, top_p=1e-6) for s in range(10)} == {int(scores.argmax())}


def test_the_bundled_smollm2_answers_through_the_server_greedily_and_deterministically(smollm2_dir):
    """Cheap: SmolLM2 loads in seconds from the materialised cache; 2 x 8 greedy tokens."""
    with LLMServer(LocalBackend("smollm2-135m")) as server:
        first, second = (
            asyncio.run(
                _complete(
                    server.url,
                    "Name three colours of the rainbow.",
                    Sampling(max_tokens=8),
                    model="smollm2-135m",
                    timeout_s=1800,
                )
            )
            for _ in range(2)
        )
    assert first.text.strip() and first.text == second.text
    assert first.completion_tokens <= 8 and first.prompt_tokens > 5 and first.model == "smollm2-135m"
