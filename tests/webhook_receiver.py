"""A real webhook receiver for the tests: ``http.server`` in a thread on a free 127.0.0.1 port.

It verifies every request's Standard Webhooks signature with the ``standardwebhooks``
package (as a user's receiver would) and answers from a script: ``answers`` is consumed one
status per request, then ``default`` (204). ``/redirect`` always answers 302 to
``/elsewhere`` (which a client following redirects would then request), ``/slow`` answers
only after ``slow_s`` seconds. Every request is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed event when the signature checked out, else None
    error: str | None  # why verification failed
    answered: int


@dataclass
class Receiver:
    secret: str = ""  # whsec_...: set it before a request arrives
    answers: list[int] = field(default_factory=list)
    default: int = 204
    slow_s: float = 3.0
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, error = None, None
                try:
                    verified = Webhook(receiver.secret).verify(body, headers)
                except (WebhookVerificationError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                with receiver._lock:
                    if self.path == "/redirect":
                        status = 302
                    elif error is not None:
                        status = 401
                    else:
                        status = receiver.answers.pop(0) if receiver.answers else receiver.default
                    receiver.requests.append(Received(self.path, headers, body, verified, error, status))
                if self.path == "/slow":
                    time.sleep(receiver.slow_s)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        """The first ``n`` requests, once they have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {n} webhook requests arrived"
            time.sleep(0.05)
        return self.requests[:n]

    @staticmethod
    def event(request: Received) -> dict[str, Any]:
        return json.loads(request.body)
