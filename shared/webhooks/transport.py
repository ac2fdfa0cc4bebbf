"""One webhook POST, to an address already checked (``shared.webhooks.destinations``).

The connection goes to one of those addresses (the first that answers, in the resolver's
order), never to a fresh lookup of the name; the URL's host
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
    """An http(s) connection for ``destination``, to the first of its checked addresses that
    answers (each gets ``CONNECT_TIMEOUT_S``), done by ``deadline``."""

    def __init__(self, destination: Destination, deadline: float) -> None:
        super().__init__(destination.host, destination.port, timeout=TOTAL_TIMEOUT_S)
        self.default_port = DEFAULT_PORTS[destination.scheme]  # no ":443" in the Host header
        self._addresses = destination.addresses
        self._deadline = deadline
        self._tls = ssl.create_default_context() if destination.scheme == "https" else None

    def connect(self) -> None:
        error: OSError = ConnectionError("no address to connect to")
        for address in self._addresses:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                sock = socket.create_connection((address, self.port), timeout=min(CONNECT_TIMEOUT_S, remaining))
                break
            except OSError as exc:
                error = exc
        else:
            raise error
        sock.settimeout(max(0.01, self._deadline - time.monotonic()))  # the TLS handshake too
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host) if self._tls is not None else sock


def post(destination: Destination, body: bytes, headers: dict[str, str]) -> Response:
    """POST ``body`` to ``destination`` (at one of its checked addresses); ``OSError`` (refused,
    reset, timed out, TLS) or ``http.client.HTTPException`` when no complete response came
    back in time."""
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    conn = _PinnedConnection(destination, deadline)
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
