"""Browser-test fixtures: the app in a subprocess on a free loopback port, and headless Chromium.

Use from a test module with `from browser_fixtures import app_server, browser, page  # noqa: F401`.
The app runs with its own CLIPLAB_HOME, the demo model when assets/demo is built (else a tiny random
model saved in our format) and a small demo photo folder indexed before the server answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DEMO_PHOTOS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        message = (f"BROWSER TESTS SKIPPED: {CHROMIUM} is missing. Install Debian's Chromium "
                   "(apt-get install chromium, or scripts/system-test-deps.sh) to run them.")
        print(message, file=sys.stderr)
        pytest.skip(message)


def test_model(home: Path) -> str:
    """The demo model when built, else a tiny random CLIP saved in our format under home."""
    from cliplab.assets import asset_path
    demo = asset_path("demo")
    if (demo / "model.safetensors").is_file():
        return "demo"
    from library_fixtures import tiny_bundle

    from cliplab.engine.weights import save_model
    folder = home / "tiny-model"
    save_model(tiny_bundle().model, folder, meta={"name": "tiny"})
    return str(folder)


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the app did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@dataclass
class Server:
    url: str
    home: Path
    model: str
    photos: Path
    log: Path


def start_app(home: Path, extra_args: list[str] | None = None, demo_photos: int = DEMO_PHOTOS,
              host: str = "127.0.0.1") -> tuple[subprocess.Popen, Server]:
    """The app in a subprocess (cliplab app ... --wait-first-start), answering at host."""
    model = test_model(home)
    port = free_port()
    log = home / "app.log"
    env = {**os.environ, "CLIPLAB_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1",
           # the caller's path first: a checkout run with PYTHONPATH pointing at it serves its own code
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)}
    command = [sys.executable, "-m", "cliplab.app.cli", "app", "--model", model, "--port", str(port), "--no-browser",
               "--demo-photos", str(demo_photos), "--wait-first-start", *(extra_args or [])]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}/"
    try:
        wait_for(url, process, log)
    except Exception:
        process.kill()
        raise
    return process, Server(url, home, model, home / "demo-photos", log)


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The running app: .url, .home (its CLIPLAB_HOME), .photos (the indexed demo folder), .log."""
    require_chromium()
    home = tmp_path_factory.mktemp("app_home")
    process, server = start_app(home)
    yield server
    stop_app(process)


@pytest.fixture(scope="session")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_server):
    """A fresh page on the app, loaded; closed after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(app_server.url)
    tab.wait_for_selector("#banner")
    yield tab
    context.close()


def screenshot(page, test_output_dir: Path, name: str) -> Path:
    """Save a full-page screenshot under the test's output; CLIPLAB_UPDATE_SCREENSHOTS=1 copies it to docs/."""
    path = test_output_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CLIPLAB_UPDATE_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return path
