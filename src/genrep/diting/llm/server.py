"""Any backend as an OpenAI-compatible HTTP server (stdlib only): ``GET /v1/models``, ``POST /v1/chat/completions``.

Serving the bundled local model this way lets every OpenAI-compatible tool (and genrep's own
:class:`~genrep.diting.llm.openai_client.OpenAIBackend`) use it, and gives tests and benchmarks a
real server to talk to. Requests are handled by ``http.server.ThreadingHTTPServer`` (one thread
per connection, HTTP/1.1 keep-alive); the backend runs on one asyncio loop in its own thread, so
concurrent requests reach it concurrently. Fields a request leaves out take :class:`Sampling`'s
defaults (temperature 0, not OpenAI's 1), except that no ``seed`` means unseeded. A message's
``content`` is a string or a list of ``{"type": "text", "text": ...}`` parts (joined in order; any
other part type is a 400). ``n`` must be 1 (or absent): one choice per request.

``stream: true`` answers with server-sent events in OpenAI's ``chat.completion.chunk`` form: a
chunk with the assistant role, the content, a chunk with the ``finish_reason``, with
``stream_options: {"include_usage": true}`` a chunk with the usage and no choices, then
``data: [DONE]``. genrep's backends answer whole completions, not token by token, so the content
comes as one delta once the backend has answered (the role chunk is sent at once). A backend
failure after the stream has started is an ``error`` event in place of the rest.

A malformed request gets a 400 with an OpenAI-style error body; a backend failure a
502. The server listens on loopback unless ``allow_remote=True`` (``--allow-remote``), because
it has no authentication; an invalid or unresolvable host, a port in use and a port that needs
privileges are one-line errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from genrep.core.errors import UserError
from genrep.diting.llm.types import Backend, Completion, LLMError, Sampling

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 2**20


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


# a DNS host name: dot-separated labels of letters, digits, '-' and '_', at most 253 characters
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$")


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def listen_address(host: str, port: int, *, allow_remote: bool = False) -> tuple[socket.AddressFamily, tuple]:
    """(address family, socket address) to listen on for ``host:port``, or a one-line UserError: a
    port outside 0-65535, a host that is neither an IP address nor a valid host name, one that does
    not resolve, or one that is not loopback without ``allow_remote`` (the server has no
    authentication). A name resolving to both IPv4 and IPv6 listens on IPv4."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"port must be an integer from 0 to 65535, got {port!r}")
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(name)
        literal = True
    except ValueError:
        literal = False
    if not literal and not _HOSTNAME.match(name):
        raise UserError(f"host {host!r}: not an IP address or a valid host name")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UserError(f"host {host!r}: cannot resolve it ({reason})") from None
    infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    infos.sort(key=lambda i: i[0] != socket.AF_INET)  # IPv4 first
    if not infos:
        raise UserError(f"host {host!r}: resolves to no IPv4 or IPv6 address")
    family, address = infos[0][0], infos[0][4]
    if not allow_remote and not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:  # type: ignore[union-attr]
        raise UserError(
            f"refusing to serve on non-loopback host '{host}' (the server has no authentication): "
            "pass --allow-remote to serve anyway (library: allow_remote=True)"
        )
    return family, address


def _bind_error(host: str, port: int, err: OSError) -> str:
    """One line for a failure to listen on ``host:port``."""
    where = _shown(host, port)
    if err.errno == errno.EADDRINUSE:
        return f"{where} is already in use; pick another --port"
    if err.errno == errno.EADDRNOTAVAIL:
        return f"{where}: '{host}' is not an address of this machine; pick another --host"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied (ports below 1024 need privileges); pick another --port"
    return f"{where}: cannot listen ({err.strerror or type(err).__name__})"


def _number(req: dict, name: str, default: float, low: float, high: float) -> float:
    value = req.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a number in [{low}, {high}]", name)
    return float(value)


def _integer(req: dict, name: str) -> int | None:
    value = req.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"'{name}' must be an integer", name)
    return value


def _content(content: object, i: int) -> str:
    """A message's content as one string: a string, or a list of text parts joined in order."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")
    texts = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict):
            raise BadRequest(f"{where} must be an object such as {{'type': 'text', 'text': '...'}}", where)
        if part.get("type") != "text":
            raise BadRequest(
                f"{where}: content part type {part.get('type')!r} is not supported (only 'text' parts are)", where
            )
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}: a text part needs a string 'text'", where)
        texts.append(part["text"])
    return "".join(texts)


def _messages(req: dict) -> list[dict]:
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise BadRequest(f"messages[{i}] must be an object with string 'role' and 'content'", f"messages[{i}]")
    return [{"role": m["role"], "content": _content(m["content"], i)} for i, m in enumerate(messages)]


def _stream_options(req: dict) -> tuple[bool, bool]:
    """(stream, include_usage) of a request."""
    stream = req.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", "stream")
    options = req.get("stream_options")
    if options is None:
        return bool(stream), False
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    if not stream:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise BadRequest("'stream_options.include_usage' must be a boolean", "stream_options")
    return True, include_usage


def _stop(req: dict) -> tuple[str, ...]:
    stop = req.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise BadRequest("'stop' must be a string or a list of strings", "stop")


@dataclass(frozen=True)
class ChatRequest:
    """A parsed chat-completions request: what the backend is asked, and how to answer."""

    messages: list[dict]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False


def parse_request(body: bytes) -> ChatRequest:
    """A chat-completions request body, parsed; :class:`BadRequest` if malformed or unsupported."""
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(req, dict):
        raise BadRequest("the request body must be a JSON object")
    n = _integer(req, "n")
    if n is not None and n != 1:
        raise BadRequest(f"'n' must be 1: this server answers one choice per request (got n={n})", "n")
    stream, include_usage = _stream_options(req)
    max_tokens = _integer(req, "max_tokens")
    if max_tokens is None:
        max_tokens = _integer(req, "max_completion_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest("'max_tokens' must be at least 1", "max_tokens")
    response_format = req.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise BadRequest("'response_format' must be an object", "response_format")
    defaults = Sampling()
    sampling = Sampling(
        temperature=_number(req, "temperature", defaults.temperature, 0.0, 2.0),
        top_p=_number(req, "top_p", defaults.top_p, 0.0, 1.0),
        max_tokens=defaults.max_tokens if max_tokens is None else max_tokens,
        seed=_integer(req, "seed"),  # no seed asked for: unseeded, as on OpenAI
        stop=_stop(req),
        response_format=response_format,
    )
    return ChatRequest(_messages(req), sampling, stream, include_usage)


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def completion_body(completion: Completion) -> dict[str, Any]:
    """A completion as OpenAI's ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": _usage(completion),
    }


def chunk_body(
    chunk_id: str, created: int, model: str, delta: dict | None, finish_reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One ``chat.completion.chunk``: a choice with ``delta`` (none when ``delta`` is None, as the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }


def stream_chunks(completion: Completion, chunk_id: str, created: int, include_usage: bool) -> list[dict[str, Any]]:
    """The chunks after the role chunk: the content as one delta, the finish reason, the usage if asked."""
    chunks = [chunk_body(chunk_id, created, completion.model, {"content": completion.text})]
    chunks.append(chunk_body(chunk_id, created, completion.model, {}, completion.finish_reason))
    if include_usage:
        chunks.append(chunk_body(chunk_id, created, completion.model, None, usage=_usage(completion)))
    return chunks


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _failure(backend: Backend, err: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and error body for a backend that failed: 502 for an LLMError, 500 for a bug in it."""
    if isinstance(err, LLMError):
        return 502, error_body(err.reason, "server_error")
    log.error("backend %s failed", backend.name, exc_info=err)  # a bug in the backend: report it, keep serving
    return 500, error_body(f"{type(err).__name__}: {err}", "server_error")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connections
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK would add ~40 ms
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str:
        path = urlsplit(self.path).path.rstrip("/")
        return path[len("/v1") :] if path.startswith("/v1/") else path

    def do_GET(self) -> None:
        if self._route() != "/models":
            return self._send(404, error_body(f"no route GET {self.path}"))
        model = {"id": self.server.backend.model, "object": "model", "created": 0, "owned_by": "genrep"}
        self._send(200, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return self._send(400, error_body("bad Content-Length header"))
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._send(413, error_body(f"request body over {MAX_BODY_BYTES} bytes"))
        body = self.rfile.read(length)
        if self._route() != "/chat/completions":
            return self._send(404, error_body(f"no route POST {self.path}"))
        try:
            request = parse_request(body)
        except BadRequest as err:
            return self._send(400, error_body(err.message, param=err.param))
        backend = self.server.backend
        work = asyncio.run_coroutine_threadsafe(backend.complete(request.messages, request.sampling), self.server.loop)
        if request.stream:
            return self._stream(work, request.include_usage)
        try:
            completion = work.result()
        except Exception as err:
            status, body_ = _failure(backend, err)
            return self._send(status, body_)
        self._send(200, completion_body(completion))

    def _event(self, data: str) -> None:
        """One server-sent event as one HTTP chunk, flushed."""
        payload = f"data: {data}\n\n".encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _stream(self, work: concurrent.futures.Future[Completion], include_usage: bool) -> None:
        """Answer with server-sent events: the role chunk at once, the rest once the backend has answered."""
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            role = chunk_body(chunk_id, created, self.server.backend.model, {"role": "assistant", "content": ""})
            self._event(json.dumps(role, ensure_ascii=False))
            try:
                chunks = stream_chunks(work.result(), chunk_id, created, include_usage)
            except Exception as err:  # the status is sent already: an error event instead of the rest
                chunks = [_failure(self.server.backend, err)[1]]
            for chunk in chunks:
                self._event(json.dumps(chunk, ensure_ascii=False))
            self._event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away mid-stream
            work.cancel()
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog of 5 drops connections from a concurrent client

    def __init__(self, family: socket.AddressFamily, address: tuple, backend: Backend, loop: asyncio.AbstractEventLoop):
        self.address_family = family
        self.backend, self.loop = backend, loop
        super().__init__(address, _Handler)


class LLMServer:
    """``backend`` served on ``host:port`` from background threads; port 0 picks a free port.

    ``with LLMServer(backend) as server: OpenAIBackend(model, server.url)...``. The server owns the
    backend from then on: :meth:`close` also closes it.
    """

    def __init__(self, backend: Backend, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False):
        family, address = listen_address(host, port, allow_remote=allow_remote)
        self.backend = backend
        self._loop = asyncio.new_event_loop()
        try:
            self._httpd = _Server(family, address, backend, self._loop)
        except OSError as err:
            self._loop.close()
            raise UserError(_bind_error(host, port, err)) from None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:54321/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"  # type: ignore[str-bytes-safe]

    def start(self) -> LLMServer:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._loop.run_forever, name="llm-server-loop", daemon=True),
                threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="llm-server-http", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
        return self

    def close(self) -> None:
        """Stop serving, close the backend, stop the loop."""
        if self._threads:
            self._httpd.shutdown()
            asyncio.run_coroutine_threadsafe(self.backend.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            for thread in self._threads:
                thread.join()
            self._threads = []
        self._httpd.server_close()
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        while any(t.is_alive() for t in self._threads):
            for thread in self._threads:
                thread.join(0.5)

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(backend: Backend, host: str = "127.0.0.1", port: int = 8000, *, allow_remote: bool = False) -> None:
    """Serve ``backend`` until interrupted (Ctrl-C)."""
    server = LLMServer(backend, host, port, allow_remote=allow_remote).start()
    print(f"serving {backend.name} at {server.url} (Ctrl-C stops)", file=sys.stderr)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
