"""A small HTTP proxy in front of moto's S3 that injects the faults a real object store shows.

The worker's S3 client talks to the proxy; everything else (the uploads, SQS, the soak's
own checks) talks to moto directly.  For each request the proxy draws, from a seeded
generator, either nothing (relay it) or one fault:

* ``500``: an ``InternalError`` answer, the request never reaches moto;
* ``slowdown``: a 503 ``SlowDown`` answer, likewise;
* ``reset``: the connection is reset (RST) before the request is relayed;
* ``lost``: the request is relayed (a PUT *is* applied), then the connection is reset, so
  the client sees a failure for a write that happened: what makes retried writes unsafe;
* ``timeout``: the request is relayed, and the answer held back past the client's read
  timeout (the client gives up; a PUT is applied).

botocore retries each of them (standard mode), so most faults are absorbed; a request that
draws faults on every attempt reaches the handler as a transient error and its SQS message
is redelivered.  Counts per fault kind are kept for the soak's table.

Like S3 and unlike moto, the proxy refuses keys over 1,024 bytes (UTF-8) with a 400
``KeyTooLongError``, so the soak sees what AWS would do with an over-long result key.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

FAULT_KINDS = ("500", "slowdown", "reset", "lost", "timeout")
# Share of the fault rate each kind gets; timeouts are rarer, as each costs a read timeout.
DEFAULT_MIX = {"500": 0.25, "slowdown": 0.25, "reset": 0.2, "lost": 0.2, "timeout": 0.1}
MAX_KEY_BYTES = 1024
_ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
              '<RequestId>faultproxy</RequestId></Error>')


class FaultProxy:
    """``with FaultProxy(upstream, rate=0.03, seed=1) as proxy: proxy.endpoint_url``."""

    def __init__(self, upstream: str, *, rate: float, seed: int = 0, stall_s: float = 2.5,
                 mix: dict[str, float] | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate = rate
        self.stall_s = stall_s
        self.mix = mix or DEFAULT_MIX
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.enabled = threading.Event()
        self.enabled.set()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._outage: tuple[float, str] = (0.0, "500")
        self._server = _Server(("127.0.0.1", 0), _Relay)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy",
                                        daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://127.0.0.1:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def outage(self, seconds: float, kind: str = "500") -> None:
        """Fail every request with ``kind`` for ``seconds`` from now: a brownout no retry rides out."""
        with self._lock:
            self._outage = (time.monotonic() + seconds, kind)

    def draw(self) -> str | None:
        """The fault for the next request, or None; counted."""
        with self._lock:
            self.requests += 1
            until, kind = self._outage
            if self.enabled.is_set() and time.monotonic() < until:
                self.counts[f"outage {kind}"] += 1
                return kind
            if not self.enabled.is_set() or self._random.random() >= self.rate:
                return None
            kind = self._random.choices(list(self.mix), weights=list(self.mix.values()))[0]
            self.counts[kind] += 1
            return kind


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets are on purpose; nothing to report


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _upstream = threading.local()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(self._key().encode()) > MAX_KEY_BYTES:
            return self._answer(400, {"Content-Type": "application/xml"}, _ERROR_XML.format(
                code="KeyTooLongError", message="Your key is too long").encode())
        fault = self.server.proxy.draw()
        if fault == "reset":
            return self._reset()
        if fault in ("500", "slowdown"):
            code, status = ("InternalError", 500) if fault == "500" else ("SlowDown", 503)
            return self._answer(status, {"Content-Type": "application/xml"},
                                _ERROR_XML.format(code=code, message=f"injected {fault}").encode())
        status, headers, data = self._forward(body)
        if fault == "lost":
            return self._reset()
        if fault == "timeout":
            time.sleep(self.server.proxy.stall_s)
        return self._answer(status, headers, data)

    def _key(self) -> str:
        """The object key of a path-style request (``/bucket/key?query``); empty for bucket requests."""
        path = urlsplit(self.path).path
        parts = path.lstrip("/").split("/", 1)
        return unquote(parts[1]) if len(parts) == 2 else ""

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = getattr(self._upstream, "conn", None)
        for attempt in range(2):  # a kept-alive upstream connection may have been closed meanwhile
            if conn is None:
                conn = self._upstream.conn = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"connection", "expect"}}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, {k: v for k, v in resp.getheaders()
                                     if k.lower() not in {"connection", "transfer-encoding", "keep-alive"}}, data
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._upstream.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "date", "server"}:
                self.send_header(name, value)
        length = headers.get("Content-Length") or headers.get("content-length") or str(len(data))
        self.send_header("Content-Length", length if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reset(self) -> None:
        """Close with an RST (linger 0): the client sees "connection reset by peer"."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
