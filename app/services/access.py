"""Who may talk to the app's server: one ASGI middleware in front of every route (the page, Gradio's API
and queue, its file route, photo/ and thumb/).

- On loopback the app has no login, so the Host header is checked: a web page elsewhere can make a
  browser send requests to 127.0.0.1 under its own name (DNS rebinding), and would then read photos
  and drive the API. Only loopback names are answered (`localhost`, a loopback address such as
  127.0.0.1 or [::1], any port) and the names the person adds (`cliplab app --allow-host NAME`, or
  CLIPLAB_APP_HOSTS="name1,name2"); anything else gets a 421 with a sentence.
- With a login (beyond loopback), wrong passwords are throttled per client address: the first
  FREE_TRIES are answered at once, then each further try must wait twice as long as the last
  (1 s, 2 s, 4 s... up to MAX_WAIT_SECONDS); a try during the wait gets a 429 saying how long to wait,
  without its password being checked. A successful login clears the count. Each try is counted before
  it is checked, so tries sent in parallel are throttled too.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

HOSTS_VARIABLE = "CLIPLAB_APP_HOSTS"
LOGIN_PATHS = ("/login", "/login/")  # Gradio's login form posts here
FREE_TRIES = 5
MAX_WAIT_SECONDS = 900.0
MAX_CLIENTS = 10_000  # failure records kept; the oldest go first

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def is_loopback(address: str) -> bool:
    """Whether a listening address or a host name stays on this machine."""
    name = address.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def configured_hosts(given: Iterable[str] = ()) -> tuple[str, ...]:
    """The host names the person allows beyond the loopback ones: given (--allow-host) and CLIPLAB_APP_HOSTS."""
    names = [*given, *os.environ.get(HOSTS_VARIABLE, "").split(",")]
    return tuple(dict.fromkeys(n.strip().rstrip(".").lower() for n in names if n.strip()))


def host_name(header: str) -> str:
    """The name of a Host header without its port: `localhost:7860` -> localhost, `[::1]:7860` -> ::1."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else header


@dataclass
class _Tries:
    failures: int = 0
    wait_until: float = 0.0


class Guard:
    """The ASGI middleware: `Guard(app, check_host=..., allowed_hosts=..., throttle_logins=...)`."""

    def __init__(self, app, check_host: bool = True, allowed_hosts: Iterable[str] = (),
                 throttle_logins: bool = False, free_tries: int = FREE_TRIES,
                 max_wait: float = MAX_WAIT_SECONDS) -> None:
        self.app = app
        self.check_host = check_host
        self.allowed_hosts = frozenset(configured_hosts(allowed_hosts))
        self.throttle_logins = throttle_logins
        self.free_tries, self.max_wait = int(free_tries), float(max_wait)
        self._tries: dict[str, _Tries] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.check_host and not self.host_allowed(_header(scope, b"host")):
            await _refuse(scope, send, 421, "This cliplab app answers only on this computer, at localhost or a "
                          "loopback address such as 127.0.0.1. To reach it under another name, start it with "
                          f"--allow-host NAME (or list the names in {HOSTS_VARIABLE}).")
            return
        if self.throttle_logins and scope["type"] == "http" and scope.get("method") == "POST" \
                and scope.get("path") in LOGIN_PATHS:
            await self._login(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False  # every browser sends one; a request without it names no one
        name = host_name(header)
        return is_loopback(name) or name in self.allowed_hosts

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = (scope.get("client") or ("?", 0))[0]
        now = time.monotonic()
        with self._lock:
            tries = self._tries.setdefault(client, _Tries())
            wait = tries.wait_until - now
            if wait <= 0:  # counted as a failure until it succeeds: parallel tries meet the wait too
                tries.failures += 1
                if tries.failures >= self.free_tries:
                    doublings = min(tries.failures - self.free_tries, 30)  # 2**30 s is past any cap
                    tries.wait_until = now + min(2.0 ** doublings, self.max_wait)
                self._forget_oldest()
        if wait > 0:
            await _refuse(scope, send, 429, f"Too many wrong passwords from this address: wait {math.ceil(wait)} s "
                          "before the next try (each wrong password doubles the wait).",
                          headers=[(b"retry-after", str(math.ceil(wait)).encode())])
            return

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                with self._lock:
                    self._tries.pop(client, None)
            await send(message)

        await self.app(scope, receive, watch)

    def _forget_oldest(self) -> None:
        while len(self._tries) > MAX_CLIENTS:
            self._tries.pop(next(iter(self._tries)))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _refuse(scope: Scope, send: Send, status: int, sentence: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": sentence[:120]})
        return
    body = json.dumps({"detail": sentence}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
