"""A scriptable OpenAI chat-completions server on loopback that injects faults (stdlib only, for tests).

Each request is keyed by its prompt (the last message's content); the n-th request for a prompt
gets ``script[prompt][n]`` (``"ok"`` once the list is used up), or ``script(prompt, n)`` when
``script`` is a function. Faults, with an optional ``:ARG``:

    ok            200, reply ``replies[prompt]`` or ``"echo: <prompt>"``
    slow:S        200 after S seconds
    timeout:S     S seconds of silence (longer than the client's timeout), then 200
    hang          silence until the server closes: a timeout for any client timeout, however slow the machine
    <status>[:S]  that HTTP status with an OpenAI error body, and ``Retry-After: S`` if S is given
    <status>date:S  the same with ``Retry-After`` as an HTTP-date S seconds ahead
    truncated     200 whose body stops halfway (Content-Length promises more), connection closed
    nonjson       200 with an HTML body
    nochoices     200 with ``"choices": []``

The server counts requests per prompt, records their arrival times and bodies, and tracks the
most requests it had in flight at once.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Script = dict[str, list[str]] | Callable[[str, int], str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str = "application/json",
        headers: dict | None = None,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        fault_server = self.server.fault_server
        fault = fault_server._arrive(prompt, body)
        try:
            self._answer(fault, prompt, body)
        finally:
            fault_server._leave()

    def _answer(self, fault: str, prompt: str, body: dict) -> None:
        kind, _, arg = fault.partition(":")
        if kind in ("slow", "timeout"):
            time.sleep(float(arg))
            kind = "ok"
        if kind == "hang":
            self.server.fault_server.closing.wait()
            self.close_connection = True
            return None
        if kind == "ok":
            text = self.server.fault_server.replies.get(prompt, f"echo: {prompt}")
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            answer = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(text.split()),
                    "total_tokens": len(prompt.split()) + len(text.split()),
                },
            }
            return self._send(200, json.dumps(answer).encode())
        if kind == "truncated":
            data = json.dumps({"choices": [{"message": {"content": "x" * 100}}]}).encode()
            self.close_connection = True
            return self._send(200, data[: len(data) // 2], length=len(data))
        if kind == "nonjson":
            return self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if kind == "nochoices":
            return self._send(200, json.dumps({"object": "chat.completion", "choices": []}).encode())
        status = int(kind.removesuffix("date"))
        headers = {}
        if arg:
            date = kind.endswith("date")
            headers["Retry-After"] = email.utils.formatdate(time.time() + float(arg), usegmt=True) if date else arg
        # OpenAI's error types; a 5xx says "server_error", as a 5xx worth retrying does.
        kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
        error = {"error": {"message": f"injected {status} for {prompt}", "type": kind}}
        self._send(status, json.dumps(error).encode(), headers=headers)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections from a concurrent client
    fault_server: FaultServer

    def handle_error(self, request, client_address) -> None:  # a client that gave up on a slow answer
        pass


class FaultServer:
    """``with FaultServer({"p": ["500", "ok"]}) as server: ... server.url, server.counts["p"]``."""

    def __init__(self, script: Script | None = None, replies: dict[str, str] | None = None):
        self.script = script if script is not None else {}
        self.replies = replies or {}
        self.counts: Counter[str] = Counter()
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self.closing = threading.Event()  # set on exit: releases the "hang" faults
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fault_server = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _arrive(self, prompt: str, body: dict) -> str:
        with self._lock:
            n = self.counts[prompt]
            self.counts[prompt] += 1
            self.arrivals[prompt].append(time.monotonic())
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if callable(self.script):
            return self.script(prompt, n)
        faults = self.script.get(prompt, [])
        return faults[n] if n < len(faults) else "ok"

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
