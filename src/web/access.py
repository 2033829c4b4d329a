"""Who may use the app's HTTP server: one guard in front of every route it serves.

The page's widget routes are as powerful as the HTTP API: the Editor's Validate and Start execute
config text (Python) with the app's rights. So one rule holds for every door (docs/security.md):

- **Off the platform**, ``/api/*`` always needs the app's token, and so does every other route —
  the page, ``/sly/*``, the widget routes, the websocket, the health checks — as soon as the
  server can be reached from beyond this machine: it listens on an address that is not loopback
  (``--host 0.0.0.0``), or the connection came in on or from such an address. A request from
  loopback to a server bound to loopback only needs no token for the page (today's behaviour).
- **On the platform** its proxy authenticates every request to the app; only ``/api/*`` needs a
  token, and only when one is set.

The token is accepted as ``Authorization: Bearer <token>`` (scripts), or as the cookie a browser
gets for opening the URL the app prints once (``/?token=…``): that GET is answered by a 303 to
the same URL without the token and an HttpOnly, ``SameSite=Lax`` cookie (Lax, not Strict: a
Strict cookie is withheld from the redirect when the link was clicked on another site, and the
user would meet a 401 first; a cross-site POST or websocket never carries it). Without a valid
token a request is answered 401 (403 for a websocket handshake) before anything runs.

Two more checks off the platform, against web pages open in the user's browser: a request that
carries an ``Origin`` must come from the page's own origin (a page on another port of the same
host is "same-site" and would carry the cookie), and a request let in without a token must name
this machine in its ``Host`` (DNS rebinding: a page whose name now resolves to 127.0.0.1 would
otherwise be the page's own origin in the browser's eyes).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

TOKEN_COOKIE = "train_mmdet3_token"
TOKEN_QUERY = "token"
Addresses = list[tuple[str, int]]


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an IP address, or a name from a Host header) is this machine's loopback:
    127.0.0.0/8, ::1, an IPv4-mapped loopback, ``localhost`` and ``*.localhost`` (RFC 6761)."""
    if not host:
        return False
    host = host.strip("[]").split("%", 1)[0].lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def listening_addresses() -> Addresses | None:
    """The TCP addresses this process listens on (``[]`` before the server binds, or under an
    in-process test client); None when the system does not say, which the guard reads as
    "reachable from elsewhere"."""
    import psutil

    try:
        connections = psutil.Process().net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    listening = {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return sorted(listening)


def wait_until_listening(
    timeout_s: float = 120.0, listening: Callable[[], Addresses | None] = listening_addresses
) -> Addresses:
    """The addresses once the server listens (uvicorn binds after the app is imported);
    ``[]`` when it did not within ``timeout_s`` (an in-process test client never does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        addresses = listening()
        if addresses:
            return addresses
        time.sleep(0.2)
    return []


def _interface_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback: the hosts a browser elsewhere can use."""
    import socket

    import psutil

    found = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == socket.AF_INET and not is_loopback(entry.address):
                found.append(entry.address)
    return found or [socket.gethostname()]


def start_lines(addresses: Addresses, token: str | None) -> list[str]:
    """What the app prints once it listens: where, whether the page needs the token, and the
    URL to open (with the token when it does)."""
    if not addresses:
        return []
    where = ", ".join(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip, port in addresses)
    port = addresses[0][1]
    if all(is_loopback(ip) for ip, _ in addresses):
        api = "; the HTTP API (/api/*) needs 'Authorization: Bearer <token>'" if token else ""
        return [
            f"Listening on {where}: this machine only, the page needs no token{api}.",
            f"Open http://127.0.0.1:{port}/",
        ]
    wildcard = any(ip in ("0.0.0.0", "::") for ip, _ in addresses)
    hosts = _interface_addresses() if wildcard else [ip for ip, _ in addresses if ":" not in ip]
    hosts = hosts or [addresses[0][0]]
    query = f"/?{urlencode({TOKEN_QUERY: token})}" if token else "/"
    lines = [
        f"Listening on {where}: reachable from other machines, so every route (the page, the "
        "widgets, /api/*) needs the app's token.",
        *(f"Open http://{host}:{port}{query}" for host in hosts),
    ]
    if token:
        lines.append("Scripts send 'Authorization: Bearer <token>' (the token in the URL above).")
    return lines


@dataclass(frozen=True)
class _Verdict:
    """What the guard answers: None lets the request through."""

    response: Response | None = None
    websocket_close: bool = False


class AccessGuard:
    """ASGI middleware that applies the module's rule to every HTTP and websocket request.

    Args:
        app: the ASGI app behind it.
        token: the app's token; None only on the platform without ``TRAIN_MMDET3_API_TOKEN``.
        on_platform: the platform's proxy authenticates: only ``/api/*`` is checked, nothing else
            changes.
        listening: where this process listens (injectable for tests); a non-empty answer is
            kept, as a server does not re-bind.
    """

    def __init__(
        self,
        app: Any,
        token: str | None,
        on_platform: bool,
        listening: Callable[[], Addresses | None] = listening_addresses,
    ) -> None:
        if token is None and not on_platform:
            raise ValueError("off the platform the app's server needs a token to guard it")
        if token is not None and not token:
            raise ValueError("the app's token must not be empty")
        self.app = app
        self.token = token
        self.on_platform = on_platform
        self._listening = listening
        self._listens_beyond_loopback: bool | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        verdict = self.verdict(HTTPConnection(scope))
        if verdict.websocket_close:
            await send({"type": "websocket.close", "code": 1008})
        elif verdict.response is not None:
            await verdict.response(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def verdict(self, conn: HTTPConnection) -> _Verdict:
        """Let the request through, or the response that refuses (or redirects) it."""
        path = conn.url.path
        websocket = conn.scope["type"] == "websocket"
        if not self.on_platform and not _same_origin(conn):
            return self._refuse(conn, 403, "a request from another web page's origin is refused")
        if self._presented(conn):
            if not websocket and conn.query_params.get(TOKEN_QUERY) is not None:
                return _Verdict(self._drop_token_from_url(conn))
            return _Verdict()
        if (
            not websocket
            and conn.scope.get("method") in ("GET", "HEAD")
            and self._valid(conn.query_params.get(TOKEN_QUERY))
        ):
            return _Verdict(self._drop_token_from_url(conn, set_cookie=True))
        api = path.startswith("/api/")
        if self.token is not None and (api or (not self.on_platform and self._exposed(conn))):
            return self._refuse(conn, 401, _TOKEN_NEEDED)
        if not self.on_platform and not is_loopback(_host_name(conn)):
            return self._refuse(
                conn, 403, "open the app at http://127.0.0.1 or http://localhost, or with its "
                "token (the URL it printed, ?token=...): without the token the page answers "
                "this machine's names only",
            )  # fmt: skip
        return _Verdict()

    def _exposed(self, conn: HTTPConnection) -> bool:
        """Whether this request may come from beyond this machine: the server listens beyond
        loopback, or the connection arrived on or from an address that is not loopback."""
        client = conn.scope.get("client")
        server = conn.scope.get("server")
        if client is not None and not is_loopback(client[0]):
            return True
        if server is not None and not is_loopback(server[0]):
            return True
        if self._listens_beyond_loopback is None:
            addresses = self._listening()
            if addresses is None:
                return True  # the system does not say: assume the worst, ask for the token
            if not addresses:
                return False  # not bound to a socket (an in-process client): nothing to reach
            self._listens_beyond_loopback = any(not is_loopback(ip) for ip, _ in addresses)
        return self._listens_beyond_loopback

    def _presented(self, conn: HTTPConnection) -> bool:
        """A valid token in the Authorization header or the cookie."""
        header = conn.headers.get("authorization", "")
        bearer = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        return self._valid(bearer) or self._valid(conn.cookies.get(TOKEN_COOKIE))

    def _valid(self, given: str | None) -> bool:
        if self.token is None or not given:
            return False
        return secrets.compare_digest(given.encode(), self.token.encode())

    def _drop_token_from_url(self, conn: HTTPConnection, set_cookie: bool = False) -> Response:
        rest = [(k, v) for k, v in conn.query_params.multi_items() if k != TOKEN_QUERY]
        location = conn.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(location, status_code=303)
        if set_cookie:
            response.set_cookie(TOKEN_COOKIE, self.token or "", httponly=True, samesite="lax")
        return response

    @staticmethod
    def _refuse(conn: HTTPConnection, status: int, message: str) -> _Verdict:
        if conn.scope["type"] == "websocket":
            return _Verdict(websocket_close=True)
        if conn.url.path.startswith("/api/"):
            return _Verdict(JSONResponse({"error": message, "problems": [message]}, status))
        return _Verdict(PlainTextResponse(message, status))


_TOKEN_NEEDED = (
    "this app needs its token: open the URL it printed at start (http://HOST:PORT/?token=...), "
    "or send 'Authorization: Bearer <token>'"
)


def _host_name(conn: HTTPConnection) -> str | None:
    host = conn.headers.get("host")
    return urlsplit(f"//{host}").hostname if host else None


def _same_origin(conn: HTTPConnection) -> bool:
    """No Origin (not a browser's cross-origin request), or the Origin names the Host the
    request was sent to (or, behind a reverse proxy, the host it forwarded: a page elsewhere
    cannot set that header without a preflight, which this server never grants)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    hosts = {conn.headers.get("host"), conn.headers.get("x-forwarded-host")}
    return urlsplit(origin).netloc.lower() in {h.lower() for h in hosts if h}


def guard_server(
    server: FastAPI,
    token: str | None,
    on_platform: bool,
    listening: Callable[[], Addresses | None] = listening_addresses,
) -> None:
    """Put ``AccessGuard`` in front of every route of ``server`` (the outermost middleware).

    The server's middleware stack is dropped so that its next request rebuilds it:
    ``add_middleware`` refuses once the stack is built, and in production the SDK's
    ``Application`` constructor has a worker thread GET "/" (for its offline page) that races
    with this call. Nothing else is served yet: uvicorn listens only after ``src.web.main`` is
    imported."""
    options = dict(token=token, on_platform=on_platform, listening=listening)
    server.user_middleware.insert(0, Middleware(AccessGuard, **options))
    server.middleware_stack = None
