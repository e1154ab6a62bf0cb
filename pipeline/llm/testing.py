"""Stand-ins for tests and benchmarks of code that drives engines: a scripted engine (stages,
caches, assets) and a real OpenAI-compatible HTTP server on 127.0.0.1 (the `openai` engine)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.llm.engines.base import Engine
from pipeline.llm.types import Request, Result


class ScriptedEngine(Engine):
    """Answers each request with `answer(request)`; an exception it raises becomes that
    request's error. Counts calls and requests; `delay_s` sleeps per request."""

    kind = "scripted"

    def __init__(self, answer: Callable[[Request], str], model: str = "scripted-v1", delay_s: float = 0.0):
        super().__init__(model)
        self.answer = answer
        self.delay_s = delay_s
        self.calls = 0
        self.requests: list[Request] = []

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        self.calls += 1
        results = []
        for request in requests:
            self.requests.append(request)
            if self.delay_s:
                time.sleep(self.delay_s)
            try:
                text = self.answer(request)
            except Exception as err:  # noqa: BLE001 - the script's failure is the request's error
                results.append(self._error(f"{type(err).__name__}: {err}"))
                continue
            results.append(Result(text=text, engine=self.kind, model=self.model, finish_reason="stop"))
        return results


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when many clients connect at once


class FakeServer:
    """An OpenAI chat-completions server on 127.0.0.1 whose behaviour a test scripts via `plan`.

    `plan(n, body, headers)` gets the 1-based request number and returns
    (status, reply dict or text, sleep seconds).
    """

    def __init__(self, plan):
        self.plan = plan
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.count += 1
                    n = server.count
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                try:
                    status, reply, sleep = server.plan(n, body, dict(self.headers))
                    if sleep:
                        time.sleep(sleep)
                    data = (json.dumps(reply) if isinstance(reply, dict) else str(reply)).encode()
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text: str, finish: str = "stop") -> dict:
    """A chat-completions reply carrying `text`."""
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}  # fmt: skip
