"""One webhook POST, to an address already checked (``shared.webhooks.destinations``).

The connection goes to that address, never to a fresh lookup of the name; the URL's host
still names the request (``Host``) and, for https, the TLS server name the certificate must
match. Redirects are never followed (``http.client`` does not, and no proxy from the
environment is used). The connection must open within ``CONNECT_TIMEOUT_S`` and the whole
exchange end within ``TOTAL_TIMEOUT_S``: a watchdog shuts the socket at that deadline,
whatever the peer trickles. At most ``RESPONSE_CAP_BYTES`` of the response body are read.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from shared.webhooks.destinations import DEFAULT_PORTS, Destination

CONNECT_TIMEOUT_S = 3.0
TOTAL_TIMEOUT_S = 10.0
RESPONSE_CAP_BYTES = 4096


@dataclass(frozen=True)
class Response:
    status: int
    location: str | None  # of a redirect, which is not followed
    body: bytes  # the first RESPONSE_CAP_BYTES at most


class _PinnedConnection(http.client.HTTPConnection):
    """An http(s) connection to ``address`` for a URL whose host is ``host``, done by ``deadline``."""

    def __init__(self, destination: Destination, address: str, deadline: float) -> None:
        super().__init__(destination.host, destination.port, timeout=TOTAL_TIMEOUT_S)
        self.default_port = DEFAULT_PORTS[destination.scheme]  # no ":443" in the Host header
        self._address = address
        self._deadline = deadline
        self._tls = ssl.create_default_context() if destination.scheme == "https" else None

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), timeout=CONNECT_TIMEOUT_S)
        sock.settimeout(max(0.01, self._deadline - time.monotonic()))  # the TLS handshake too
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host) if self._tls is not None else sock


def post(destination: Destination, address: str, body: bytes, headers: dict[str, str]) -> Response:
    """POST ``body`` to ``destination`` at ``address``; ``OSError`` (refused, reset, timed out,
    TLS) or ``http.client.HTTPException`` when no complete response came back in time."""
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    conn = _PinnedConnection(destination, address, deadline)
    timer: threading.Timer | None = None
    try:
        conn.connect()
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, args=(conn.sock,))
        timer.daemon = True
        timer.start()
        conn.request("POST", destination.target, body=body, headers=headers)
        response = conn.getresponse()
        content = response.read(RESPONSE_CAP_BYTES)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no complete response within {TOTAL_TIMEOUT_S:g}s")
        return Response(response.status, response.getheader("location"), content)
    finally:
        if timer is not None:
            timer.cancel()
        conn.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
