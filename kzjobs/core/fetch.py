"""Fetching what a IIIF manifest points at, without letting it reach internal services.

A manifest is data from outside: its URLs could name ``http://169.254.169.254/`` or a
host whose DNS answer is ``127.0.0.1``. Every URL is checked against the allowed list
(``KZ_FETCH_ALLOWED``) before the request, on the addresses its host resolves to, and
again on the address each connection actually reached (a second DNS answer cannot slip
in between). Redirects are followed by hand so that each hop is checked.

Requests time out, are retried with exponential backoff (urllib3's ``Retry``: refused
connections, 429 and 5xx), and wait their turn per host (``KZ_FETCH_HOST_INTERVAL``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

if TYPE_CHECKING:
    import requests

    from kzjobs.core.settings import Settings

MAX_REDIRECTS = 5


class FetchError(ValueError):
    """A URL that was refused or could not be fetched; ``reason`` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _port(parts: Any) -> int:
    try:
        port = parts.port
    except ValueError:
        raise FetchError(f"bad port in {parts.geturl()!r}") from None
    return port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Allowed:
    """The allowed list: ``scheme://host[:port]`` entries; a ``*`` in the host allows
    matching hosts on public addresses only, a named host whatever its addresses."""

    entries: tuple[str, ...]

    def _match(self, scheme: str, host: str, port: int) -> tuple[bool, bool]:
        """(allowed at all, allowed on non-public addresses)."""
        for entry in self.entries:
            parts = urlsplit(entry if "://" in entry else f"https://{entry}")
            pattern = (parts.hostname or "").lower()
            if parts.scheme != scheme or not fnmatch.fnmatchcase(host, pattern):
                continue
            if parts.port is not None and parts.port != port:
                continue
            if "*" not in pattern:
                return True, True
            return True, False
        return False, False

    def check_url(self, url: str) -> tuple[str, str, int, bool]:
        """(scheme, host, port, may reach non-public addresses), or :class:`FetchError`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"refused {url!r}: not an http(s) URL")
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError(f"refused {url!r}: no host")
        if parts.username or parts.password:
            raise FetchError(f"refused {url!r}: credentials in the URL")
        if ".." in unquote(parts.path).split("/"):
            raise FetchError(f"refused {url!r}: '..' in the path")
        port = _port(parts)
        allowed, private_ok = self._match(parts.scheme, host, port)
        if not allowed:
            raise FetchError(f"refused {url!r}: {parts.scheme}://{host}:{port} is not in "
                             "the allowed hosts (KZ_FETCH_ALLOWED)")
        return parts.scheme, host, port, private_ok


def public(address: str) -> bool:
    """Whether ``address`` is a global unicast address: not loopback, link-local,
    private, shared, multicast, reserved or unspecified (IPv4-mapped IPv6 included)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_addresses(host: str, port: int) -> None:
    """Refuse a host any of whose addresses is not public (DNS included)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = str(info[4][0])
        if not public(address):
            raise FetchError(f"refused {host!r}: it resolves to {address}, not a public "
                             "address (name the host in KZ_FETCH_ALLOWED to allow it)")


class _HostPace:
    """At most one request per ``interval`` seconds to each host, across threads.

    A dozen lines here rather than a rate-limiting package: the rule is one interval per
    host between the requests a job makes (urllib3's retries add their own backoff)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            time.sleep(start - now)


def _guarded_adapter(fetcher: Fetcher, retries: Any) -> requests.adapters.HTTPAdapter:
    """A requests adapter whose connections check the peer address they reached."""
    from requests.adapters import HTTPAdapter
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def guarded(base: type) -> type:
        class Guarded(base):  # type: ignore[misc, valid-type]
            def _new_conn(self):  # type: ignore[no-untyped-def]
                sock = super()._new_conn()
                peer = sock.getpeername()[0]
                if not fetcher.may_reach(self.host, self.port, peer):
                    sock.close()
                    raise FetchError(f"refused {self.host!r}: connected to {peer}, not a "
                                     "public address")
                return sock
        return Guarded

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            http = type("GuardedHTTPPool", (HTTPConnectionPool,),
                        {"ConnectionCls": guarded(HTTPConnectionPool.ConnectionCls)})
            https = type("GuardedHTTPSPool", (HTTPSConnectionPool,),
                         {"ConnectionCls": guarded(HTTPSConnectionPool.ConnectionCls)})
            self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}

    return Adapter(max_retries=retries)


class Fetcher:
    """GETs within the settings' allowed hosts, timeouts, retries and per-host pace."""

    def __init__(self, settings: Settings) -> None:
        self.allowed = Allowed(tuple(settings.fetch_allowed))
        self.timeout = settings.fetch_timeout
        self.retries = settings.fetch_retries
        self.backoff = settings.fetch_backoff
        self.max_bytes = settings.fetch_max_bytes
        self.pace = _HostPace(settings.fetch_host_interval)
        self._private_ok: set[tuple[str, int]] = set()
        self._local = threading.local()

    def may_reach(self, host: str, port: int, address: str) -> bool:
        return (host.lower(), int(port)) in self._private_ok or public(address)

    @property
    def session(self) -> requests.Session:
        """One session per thread (requests sessions are not thread-safe)."""
        session = getattr(self._local, "session", None)
        if session is None:
            import requests
            from urllib3.util.retry import Retry

            retries = Retry(total=self.retries, connect=self.retries, read=self.retries,
                            status=self.retries, backoff_factor=self.backoff,
                            status_forcelist=(429, 500, 502, 503, 504),
                            allowed_methods=frozenset({"GET"}), redirect=False,
                            raise_on_status=False, respect_retry_after_header=True)
            session = requests.Session()
            session.trust_env = False  # no proxy from the environment: we check the peer
            adapter = _guarded_adapter(self, retries)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def check(self, url: str) -> None:
        """Refuse ``url`` before any connection, naming the rule it breaks."""
        _scheme, host, port, private_ok = self.allowed.check_url(url)
        if private_ok:
            self._private_ok.add((host, port))
        else:
            check_addresses(host, port)

    def get(self, url: str, *, accept: str = "*/*") -> bytes:
        """The body of ``url``, following checked redirects, or :class:`FetchError`."""
        import requests

        for _hop in range(MAX_REDIRECTS + 1):
            self.check(url)
            self.pace.wait(urlsplit(url).netloc)
            try:
                response = self.session.get(url, timeout=self.timeout, stream=True,
                                            allow_redirects=False, headers={"Accept": accept})
            except FetchError:
                raise
            except requests.RequestException as exc:
                cause = exc.args[0] if exc.args else exc
                reason = getattr(cause, "reason", cause)
                if isinstance(reason, FetchError):
                    raise reason from None
                raise FetchError(f"cannot fetch {url}: {type(exc).__name__}: {reason}") from None
            with response:
                if response.is_redirect and response.headers.get("location"):
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise FetchError(f"cannot fetch {url}: HTTP {response.status_code}")
                return self._body(url, response)
        raise FetchError(f"cannot fetch {url}: more than {MAX_REDIRECTS} redirects")

    def _body(self, url: str, response: requests.Response) -> bytes:
        import requests

        size = int(response.headers.get("content-length") or 0)
        if size > self.max_bytes:
            raise FetchError(f"{url}: {size:,} bytes is over {self.max_bytes:,} "
                             "(KZ_FETCH_MAX_BYTES)")
        chunks, total = [], 0
        try:
            for chunk in response.iter_content(1 << 16):
                total += len(chunk)
                if total > self.max_bytes:
                    raise FetchError(f"{url}: over {self.max_bytes:,} bytes "
                                     "(KZ_FETCH_MAX_BYTES)")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise FetchError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None
        return b"".join(chunks)
