"""A small threaded HTTP server on 127.0.0.1 for playing a provider's REST API in tests.

Subclasses implement `handle(method, path, headers, body) -> (status, json_body)`.
Scripted failures (`fail_next(500, times=2)`) are answered before `handle` runs.
The server stops on context exit, and by itself after ``lifetime`` seconds so a
forgotten one cannot keep a test run alive.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

JsonBody = dict[str, Any]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    fields: dict[str, Any] = field(default_factory=dict)


class FakeHttpServer:
    def __init__(self, lifetime: float = 60.0) -> None:
        self.requests: list[Received] = []
        self._scripted: deque[tuple[int, JsonBody]] = deque()
        self._lock = threading.Condition()
        self._lifetime = lifetime
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------ for subclasses
    def handle(self, req: Received) -> tuple[int, JsonBody]:
        raise NotImplementedError

    def error_body(self, status: int) -> JsonBody:
        return {"status": status, "message": "scripted failure"}

    # ------------------------------------------------------------ scripting
    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._scripted.append((status, self.error_body(status)))

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self.requests) >= count, timeout)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._serve(self, "POST")

            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self._lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        req = Received(
            method,
            handler.path,
            {k.lower(): v for k, v in handler.headers.items()},
            handler.rfile.read(length),
        )
        with self._lock:
            scripted = self._scripted.popleft() if self._scripted else None
        status, body = scripted if scripted is not None else self.handle(req)
        req.status = status
        # Recorded before answering: once the client has its answer, the test sees the request.
        with self._lock:
            self.requests.append(req)
            self._lock.notify_all()
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
