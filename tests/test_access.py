"""Who may use the app's server (src/web/access.py): off the platform, once the server can be
reached from beyond this machine, every route — the page, /sly/*, the widget routes, the websocket,
/api/* — needs the app's token, as a Bearer header or the cookie the printed URL gives.

The first tests drive the guard on a small server of the same shape (routes like the SDK's);
the last one is the issue's attack on the real app, bound to every interface and reached
through this machine's network address, in a subprocess."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from src.web.access import TOKEN_COOKIE, guard_server, is_loopback, start_lines
from tests.helpers import AppProcess, free_port

TOKEN = "s3cret-token"
EVERY_INTERFACE = [("0.0.0.0", 8000)]
LOOPBACK_ONLY = [("127.0.0.1", 8000)]
VALIDATE = "/cfg_validate/button_clicked_cb"
WS = "ws://127.0.0.1:8000/sly/ws"  # TestClient's websockets ignore base_url


def _server(listening, token=TOKEN, on_platform=False) -> tuple[FastAPI, list[str]]:
    """A server with a page, a widget route, an API route and a websocket; ``ran`` records what
    was executed."""
    ran: list[str] = []
    server = FastAPI()

    @server.get("/")
    def page() -> dict:
        return {"page": True}

    @server.post(VALIDATE)
    def validate() -> dict:
        ran.append("validate")
        return {}

    @server.get("/api/status")
    def status() -> dict:
        return {"state": "idle"}

    @server.websocket("/sly/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    guard_server(server, token, on_platform=on_platform, listening=lambda: listening)
    return server, ran


def _client(server, client_ip="127.0.0.1", host="127.0.0.1:8000", **kwargs) -> TestClient:
    return TestClient(
        server, base_url=f"http://{host}", client=(client_ip, 50000), follow_redirects=False,
        **kwargs,
    )  # fmt: skip


def test_bound_to_every_interface_every_route_needs_the_token_even_from_loopback():
    server, ran = _server(EVERY_INTERFACE)
    client = _client(server)
    assert client.get("/").status_code == 401
    assert client.post(VALIDATE, json={}).status_code == 401
    assert client.get("/api/status").status_code == 401
    wrong = {"Authorization": "Bearer guess"}
    assert client.post(VALIDATE, json={}, headers=wrong).status_code == 401
    assert client.get("/?token=guess").status_code == 401
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(WS) as ws:
        ws.receive_text()
    assert ran == []
    assert "token" in client.get("/").text  # says what to do


def test_the_printed_url_gives_a_cookie_and_drops_the_token_from_the_url():
    server, ran = _server(EVERY_INTERFACE)
    client = _client(server)
    opened = client.get(f"/?token={TOKEN}&tab=2")
    assert opened.status_code == 303
    assert opened.headers["location"] == "/?tab=2"
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert client.cookies.get(TOKEN_COOKIE) == TOKEN
    assert client.get("/?tab=2").status_code == 200
    assert client.post(VALIDATE, json={}).status_code == 200
    assert client.get("/api/status").status_code == 200
    with client.websocket_connect(WS) as ws:
        assert ws.receive_text() == "hello"
    assert ran == ["validate"]
    # a POST cannot trade the URL's token for anything
    fresh = _client(server)
    assert fresh.post(f"{VALIDATE}?token={TOKEN}", json={}).status_code == 401


def test_scripts_send_the_bearer_header():
    server, ran = _server(EVERY_INTERFACE)
    client = _client(server, client_ip="192.0.2.9", host="192.0.2.2:8000")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post(VALIDATE, json={}, headers=auth).status_code == 200
    assert client.get("/api/status", headers=auth).status_code == 200
    assert ran == ["validate"]


def test_bound_to_loopback_the_page_is_open_to_this_machine_only():
    """Today's behaviour while the server listens on loopback: the page needs no token, /api/*
    does; a connection from or to another address needs it whatever the server is bound to."""
    server, ran = _server(LOOPBACK_ONLY)
    local = _client(server)
    assert local.get("/").status_code == 200
    assert local.post(VALIDATE, json={}).status_code == 200
    assert local.get("/api/status").status_code == 401
    with local.websocket_connect(WS) as ws:
        assert ws.receive_text() == "hello"
    assert _client(server, host="localhost:8000").get("/").status_code == 200
    forwarded = _client(server, client_ip="203.0.113.5")  # e.g. a local proxy's X-Forwarded-For
    assert forwarded.post(VALIDATE, json={}).status_code == 401
    assert ran == ["validate"]


def test_other_web_pages_in_the_users_browser_are_refused():
    """A page elsewhere posting to the widget routes (same-site on another port, so the cookie
    goes along), or reaching them through DNS rebinding (a foreign Host)."""
    server, ran = _server(LOOPBACK_ONLY)
    local = _client(server)
    evil = {"Origin": "http://127.0.0.1:9999"}
    assert local.post(VALIDATE, json={}, headers=evil).status_code == 403
    rebound = {"Host": "evil.example:8000"}  # its name resolves to 127.0.0.1 now
    assert local.post(VALIDATE, json={}, headers=rebound).status_code == 403
    same = {"Origin": "http://127.0.0.1:8000"}
    assert local.post(VALIDATE, json={}, headers=same).status_code == 200
    exposed, ran_exposed = _server(EVERY_INTERFACE)
    with_cookie = _client(exposed, cookies={TOKEN_COOKIE: TOKEN})
    refused = with_cookie.post(VALIDATE, json={}, headers=evil)
    assert refused.status_code == 403
    assert ran == ["validate"] and ran_exposed == []


def test_on_the_platform_nothing_changes():
    """The platform's proxy authenticates: the page is open; /api/* needs a token only when one
    is set."""
    server, _ = _server(EVERY_INTERFACE, token=None, on_platform=True)
    proxied = _client(server, client_ip="10.0.0.7", host="app.example.com")
    assert proxied.post(VALIDATE, json={}).status_code == 200
    assert proxied.get("/api/status").status_code == 200
    server, _ = _server(EVERY_INTERFACE, token=TOKEN, on_platform=True)
    proxied = _client(server, client_ip="10.0.0.7", host="app.example.com")
    assert proxied.get("/").status_code == 200
    assert proxied.get("/api/status").status_code == 401


def test_when_the_system_does_not_say_where_it_listens_the_token_is_needed():
    server, _ = _server(None)
    assert _client(server).get("/").status_code == 401


def test_loopback_names():
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "app.localhost",
                 "::ffff:127.0.0.1"):  # fmt: skip
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.0.2.2", "testserver", "evil.example", "", None):
        assert not is_loopback(host), host


def test_start_lines_say_where_and_what_to_open():
    lines = start_lines([("127.0.0.1", 8000)], TOKEN)
    assert "this machine only" in lines[0] and lines[-1] == "Open http://127.0.0.1:8000/"
    assert TOKEN not in "".join(lines)
    lines = start_lines([("192.0.2.2", 8123)], TOKEN)
    assert "every route" in lines[0]
    assert f"Open http://192.0.2.2:8123/?token={TOKEN}" in lines


def _network_address() -> str | None:
    import socket

    import psutil

    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == socket.AF_INET and not is_loopback(entry.address):
                return entry.address
    return None


def _post_state(client: httpx.Client, route: str, st: dict) -> httpx.Response:
    return client.post(route, json={"state": st, "context": {}})


def _to_the_editor(client: httpx.Client) -> dict:
    """Choose RTMDet, compose, switch the Editor to advanced: the page's state, ready to edit."""
    st = client.post("/sly/state", json={}).json()
    st["model_arch"]["value"] = "RTMDet"
    assert _post_state(client, "/model_arch/value_changed", st).status_code == 200
    st = client.post("/sly/state", json={}).json()
    st["model_pre"]["checked"] = False
    st["classes_select"]["value"] = ["square", "circle", "triangle"]
    assert _post_state(client, "/compose/button_clicked_cb", st).status_code == 200
    st = client.post("/sly/state", json={}).json()
    st["cfg_advanced"]["value"] = True
    assert _post_state(client, "/cfg_advanced/value_changed", st).status_code == 200
    return client.post("/sly/state", json={}).json()


def test_the_real_app_bound_to_every_interface_guards_its_page(demo_project, tmp_path: Path):
    """The issue's attack: ``uvicorn src.web.main:app --host 0.0.0.0`` with no token set, reached
    through this machine's network address (127.0.0.1 where it has none: bound to every
    interface, loopback needs the token too). Without the token, the page's Validate with a
    config that writes a file and /sly/state answer 401 and the file is not written; with the
    cookie from the printed URL, or the Bearer header, they work."""
    port = free_port()
    env = dict(
        PROJECT_DIR=str(demo_project),
        SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
        TEAM_FILES_DIR=str(tmp_path / "team"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        TRAIN_MMDET3_API_TOKEN="",
    )
    app = AppProcess(env, "0.0.0.0", port)
    marker = tmp_path / "pwned.txt"
    attack = f"open({str(marker)!r}, 'w').write('ran')\n"
    try:
        token = app.token()
        host = _network_address() or "127.0.0.1"
        opened = app.wait_for_line(f"Open http://{host}:{port}/?token=")
        assert opened.endswith(f"?token={token}")
        assert any("every route" in line for line in app.lines)
        base = f"http://{host}:{port}"
        anyone = httpx.Client(base_url=base, timeout=60)
        deadline = time.time() + 60
        while (page := anyone.get("/")).status_code != 401 and time.time() < deadline:
            time.sleep(0.5)
        assert page.status_code == 401, f"the page answered without the token: {page.status_code}"
        assert anyone.post("/sly/state", json={}).status_code == 401
        assert anyone.post("/sly/data", json={}).status_code == 401
        assert anyone.get("/api/status").status_code == 401

        # the owner opens the printed URL: a cookie, the token gone from the address
        owner = httpx.Client(base_url=base, timeout=120)
        first = owner.get(opened.split("Open ", 1)[1], follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/"
        assert owner.get("/").status_code == 200
        st = _to_the_editor(owner)
        st["cfg_editor"]["text"] = attack + st["cfg_editor"]["text"]

        # the attacker, with the owner's state in hand: 401, nothing runs
        assert _post_state(anyone, VALIDATE, st).status_code == 401
        assert anyone.post(f"{VALIDATE}?token={token[:-1]}x").status_code == 401
        assert not marker.exists()

        # a script with the Bearer header is the owner: the route runs (and so does the config)
        bearer = {"Authorization": f"Bearer {token}"}
        script = httpx.Client(base_url=base, timeout=120, headers=bearer)
        assert _post_state(script, VALIDATE, st).status_code == 200
        assert marker.read_text() == "ran"
        assert script.get("/api/status").status_code == 200
    finally:
        app.close()


def test_behind_a_reverse_proxy_the_forwarded_host_is_the_pages_origin():
    """nginx without ``proxy_set_header Host``: the browser's Origin names the proxy's host,
    which the proxy forwards as X-Forwarded-Host; the page works with its token there."""
    server, ran = _server(LOOPBACK_ONLY)
    proxied = _client(server, cookies={TOKEN_COOKIE: TOKEN})
    headers = {"Origin": "https://lab.example.com", "X-Forwarded-Host": "lab.example.com"}
    assert proxied.post(VALIDATE, json={}, headers=headers).status_code == 200
    forged = {"Origin": "https://evil.example", "X-Forwarded-Host": "lab.example.com"}
    assert proxied.post(VALIDATE, json={}, headers=forged).status_code == 403
    assert ran == ["validate"]
    # without the token, a name that is not this machine's is told how to get in
    refused = _client(server).get("/", headers={"Host": "lab.example.com"})
    assert refused.status_code == 403 and "token" in refused.text
