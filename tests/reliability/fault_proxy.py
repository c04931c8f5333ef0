"""A fault-injecting HTTP proxy for S3, of the project's own (the standard library only).

It sits between boto3 and moto's S3 server and forwards every request, except the ones
its *plan* says to break: those get a 500 ``InternalError``, a 503 ``ServiceUnavailable``
or ``SlowDown``, a ``Throttling`` error, or a connection dropped before the response or
in the middle of its body. The plan is a list of :class:`Rule`; each rule numbers the
requests it matches and fails the first N, every k-th, or a seeded random share of them,
so a run is reproducible. Every request and every injected fault is counted, so a test
can prove that faults really happened.

A rule's ``key`` pattern is searched in the request's *subject*: the object key for
object requests, ``?<decoded query>`` for bucket-level ones (a listing reads
``?list-type=2&prefix=out/pages/...``).
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import unquote, urlsplit

Fault = Literal[
    "internal_error",  # 500 InternalError
    "service_unavailable",  # 503 ServiceUnavailable
    "slow_down",  # 503 SlowDown: botocore counts it as throttling (1 s backoff base)
    "throttling",  # 400 Throttling: retryable by its error code alone, not its status
    "drop",  # the request never reaches S3; the socket closes without a response
    "drop_after",  # S3 does the work, then the socket closes without a response
    "truncate",  # S3 answers; the client gets the headers and half the body, then EOF
]
FAULTS: tuple[Fault, ...] = (
    "internal_error", "service_unavailable", "slow_down", "throttling",
    "drop", "drop_after", "truncate",
)
_ERRORS: dict[str, tuple[int, str, str]] = {
    "internal_error": (500, "InternalError", "We encountered an internal error."),
    "service_unavailable": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "slow_down": (503, "SlowDown", "Please reduce your request rate."),
    "throttling": (400, "Throttling", "Rate exceeded."),
}
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade",
}


@dataclass(frozen=True)
class Rule:
    """Which requests to break, and how.

    ``faults`` is cycled through, one per injected fault. With neither ``times``,
    ``every`` nor ``rate``, every matching request fails (a fault that outlasts any retry).
    """

    faults: Fault | tuple[Fault, ...]
    method: str | None = None  # "GET", "PUT", "HEAD", "DELETE"...; None: any
    key: str | None = None  # a regex searched in the request's subject; None: any
    times: int | None = None  # at most this many faults from this rule
    every: int | None = None  # only the k-th, 2k-th... matching request
    rate: float | None = None  # only this share of matching requests, drawn with `seed`
    seed: int = 0

    def __post_init__(self) -> None:
        kinds = (self.faults,) if isinstance(self.faults, str) else self.faults
        if not kinds or any(k not in FAULTS for k in kinds):
            raise ValueError(f"faults must be among {FAULTS}, got {self.faults!r}")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be >= 1")

    @property
    def kinds(self) -> tuple[Fault, ...]:
        return (self.faults,) if isinstance(self.faults, str) else self.faults

    def matches(self, method: str, subject: str) -> bool:
        if self.method is not None and method.upper() != self.method.upper():
            return False
        return self.key is None or re.search(self.key, subject) is not None


@dataclass
class _RuleState:
    matched: int = 0
    injected: int = 0
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True)
class Event:
    """One request the proxy saw, and the fault it injected (None: forwarded intact)."""

    method: str
    subject: str
    fault: Fault | None


class FaultProxy:
    """The proxy: ``start()``, point boto3 at ``url``, set a plan, read the counts."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._states: list[_RuleState] = []
        self.events: list[Event] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> FaultProxy:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- plan and counts --------------------------------------------------------------

    def set_plan(self, *rules: Rule) -> None:
        """Replace the plan; rules are tried in order and the first to fire wins."""
        with self._lock:
            self._rules = list(rules)
            self._states = [_RuleState(rng=random.Random(r.seed)) for r in rules]

    def faults_off(self) -> None:
        self.set_plan()

    def reset_counts(self) -> None:
        with self._lock:
            self.events = []

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.events)

    @property
    def faults(self) -> Counter[str]:
        """Injected faults by kind."""
        with self._lock:
            return Counter(e.fault for e in self.events if e.fault is not None)

    def injected(self, key: str | None = None) -> list[Event]:
        """The faulted requests, optionally only those whose subject matches ``key``."""
        with self._lock:
            return [e for e in self.events
                    if e.fault is not None and (key is None or re.search(key, e.subject))]

    def _decide(self, method: str, subject: str) -> Fault | None:
        with self._lock:
            fault: Fault | None = None
            for rule, state in zip(self._rules, self._states, strict=True):
                if not rule.matches(method, subject):
                    continue
                state.matched += 1
                if rule.times is not None and state.injected >= rule.times:
                    continue
                if rule.every is not None and state.matched % rule.every:
                    continue
                if rule.rate is not None and state.rng.random() >= rule.rate:
                    continue
                fault = rule.kinds[state.injected % len(rule.kinds)]
                state.injected += 1
                break
            self.events.append(Event(method, subject, fault))
            return fault


def subject_of(path: str) -> str:
    """The object key of a path-style request, or ``?<query>`` for a bucket request."""
    parts = urlsplit(path)
    _bucket, _, key = parts.path.lstrip("/").partition("/")
    if key:
        return unquote(key)
    return f"?{unquote(parts.query)}"


def _error_body(code: str, message: str, subject: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{subject}</Resource><RequestId>fault-proxy</RequestId></Error>"
    ).encode()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as boto3's pool expects

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the counts are the record

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP and k.lower() != "expect"}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                headers.pop("Transfer-Encoding", None)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            finally:
                conn.close()

        def _drop(self) -> None:
            # No response at all: the client reads EOF where a status line should be.
            self.close_connection = True

        def _handle(self) -> None:
            body = self._body()  # always read, so a dropped request is not half-sent
            subject = subject_of(self.path)
            fault = proxy._decide(self.command, subject)
            if fault == "drop":
                return self._drop()
            if fault in _ERRORS:
                status, code, message = _ERRORS[fault]
                if self.command == "HEAD" and status < 500:
                    status = 503  # a HEAD answer has no body to carry the code
                payload = b"" if self.command == "HEAD" else _error_body(code, message, subject)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return None
            status, reason, headers, data = self._forward(body)
            if fault == "drop_after" or (fault == "truncate" and not data):
                return self._drop()
            self.send_response(status, reason)
            for name, value in headers:
                lower = name.lower()
                if lower in _HOP_BY_HOP or lower in ("server", "date"):
                    continue
                if lower == "content-length" and self.command != "HEAD":
                    continue  # set below from the bytes actually read
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return None
            if self.command != "HEAD":
                self.wfile.write(data)
            return None

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


# ---- for tests: a bucket behind the proxy ---------------------------------------------


@dataclass(frozen=True)
class FaultyBucket:
    """A fresh bucket that boto3 reaches only through ``proxy``."""

    uri: str  # s3://<bucket>
    bucket: str
    proxy: FaultProxy
    upstream: str  # moto itself, for setup and checks that must bypass the faults


def create_bucket(endpoint: str) -> str:
    """A new bucket made directly on moto (never through the proxy)."""
    import boto3

    bucket = f"kz-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket=bucket)
    return bucket
