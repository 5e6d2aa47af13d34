"""Who may talk to the running app (app.services.access, issue 27 item 4): on loopback only loopback host
names and the configured ones, on every route (a web page using DNS rebinding reaches 127.0.0.1 under
its own name); with a login, wrong passwords throttled per client. Real servers on loopback, plain HTTP."""

from __future__ import annotations

import math
import time

import httpx
import pytest
from browser_fixtures import free_port
from library_fixtures import tiny_bundle, write_image

from cliplab.app.services import access, library
from cliplab.app.services.app_state import AppState
from cliplab.indexes.catalog import open_catalog

ROUTES = ("/", "/config", "/gradio_api/info", "/photo/1", "/thumb/1", "/gradio_api/queue/status")


@pytest.fixture
def state(cliplab_home, tmp_path) -> AppState:
    write_image(tmp_path / "photos" / "a.jpg", 1)
    state = AppState(catalog=open_catalog(), bundle=tiny_bundle())
    library.add_folders(state.catalog, state.search_bundle, [str(tmp_path / "photos")], workers=0)
    yield state
    state.catalog.engine.dispose()


def serve(state: AppState, host: str, **options):
    from cliplab.app.gradio_app import launch
    port = free_port()
    demo, _url = launch(state, host=host, port=port, block=False, **options)
    return demo, f"http://{host}:{port}", port


def test_loopback_answers_only_loopback_and_configured_host_names(state, monkeypatch):
    monkeypatch.setenv(access.HOSTS_VARIABLE, "photos.home.arpa, Other.Example.")
    demo, base, port = serve(state, "127.0.0.1", allowed_hosts=("cliplab.lan",))
    try:
        for name in ("evil.example.com", f"evil.example.com:{port}", f"127.0.0.1.evil.example:{port}",
                     f"localhost.evil.example:{port}", "cliplab.lan.evil.example", f"[::2]:{port}", "10.0.0.1"):
            for route in ROUTES:
                answer = httpx.get(base + route, headers={"Host": name})
                assert answer.status_code == 421, (name, route, answer.status_code)
                assert "answers only on this computer" in answer.json()["detail"]
        for name in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"127.1.2.3:{port}", f"[::1]:{port}",
                     f"LOCALHOST:{port}", f"cliplab.lan:{port}", "photos.home.arpa", f"other.example:{port}"):
            assert httpx.get(base + "/photo/1", headers={"Host": name}).status_code == 200, name
            assert httpx.get(base + "/config", headers={"Host": name}).status_code == 200, name
    finally:
        demo.close()


def test_beyond_loopback_wrong_passwords_are_throttled(state, monkeypatch):
    monkeypatch.setenv("CLIPLAB_APP_PASSWORD", "correct horse battery")
    demo, base, _port = serve(state, "127.0.0.2")  # a login, as with --listen
    try:
        def login(password: str) -> httpx.Response:
            return httpx.post(base + "/login", data={"username": "cliplab", "password": password})

        assert httpx.get(base + "/photo/1").status_code == 401
        for n in range(access.FREE_TRIES):
            assert login(f"wrong {n}").status_code == 400  # answered at once
        refused = login("wrong again")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "Too many wrong passwords from this address: wait 1 s" in refused.json()["detail"]
        assert login("correct horse battery").status_code == 429  # not even checked during the wait
        time.sleep(1.2)
        assert login("wrong once more").status_code == 400  # checked again, and the wait doubles
        start = time.monotonic()
        answers = [login(f"guess {n}").status_code for n in range(60)]
        elapsed = time.monotonic() - start
        # waits of 2, 4, 8... s: in `elapsed` seconds at most this many guesses reach the password check
        checked = 1 + int(math.log2(1 + elapsed / 2))
        assert answers.count(400) <= checked and answers.count(429) >= 60 - checked, (answers, elapsed)
        while (right := login("correct horse battery")).status_code == 429:
            time.sleep(int(right.headers["retry-after"]) + 0.2)
        assert right.status_code == 200, right.text
        for n in range(access.FREE_TRIES):  # a good login clears the count
            assert login(f"typo {n}").status_code == 400
    finally:
        demo.close()


def test_host_names_and_loopback():
    assert access.host_name("LocalHost:7860") == "localhost" and access.host_name("[::1]:7860") == "::1"
    assert access.host_name("example.com.") == "example.com" and access.host_name("::1") == "::1"
    assert all(access.is_loopback(a) for a in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "localhost."))
    assert not any(access.is_loopback(a) for a in ("0.0.0.0", "192.168.1.5", "::", "localhost.example", ""))
