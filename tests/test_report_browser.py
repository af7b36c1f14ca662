"""Open report.html in headless Chromium: every <img> loads, the console shows
no errors, and nothing but data: and file: URLs is requested (offline).

Talks the DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out,
NUL-terminated JSON), so no extra Python dependency is needed. Under CI
(CI=true) a missing chromium fails the test instead of skipping it."""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time

import pytest
import torch

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """Minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, exe: str, profile: str):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # the browser reads commands on fd 3 and writes replies/events on fd 4
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._r)
        os.close(self._w)


def open_page(exe: str, url: str, profile: str) -> tuple[list[list], list[dict], list[str]]:
    """(images [complete, naturalWidth, src head], console/log errors, requested URLs)."""
    dt = DevTools(exe, profile)
    try:
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.send(f"{domain}.enable", session=session)
        dt.events.clear()
        dt.send("Page.navigate", {"url": url}, session=session)
        dt.wait_for("Page.loadEventFired", timeout=60)
        expr = "JSON.stringify(Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 30)]))"
        images = json.loads(dt.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
                            ["result"]["value"])
        time.sleep(0.3)  # let late console messages arrive
        dt.send("Runtime.evaluate", {"expression": "1"}, session=session)
    finally:
        dt.close()
    errors, urls = [], []
    for ev in dt.events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            errors.append(p)
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(p)
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(p["entry"])
        elif m == "Network.requestWillBeSent":
            urls.append(p["request"]["url"])
    return images, errors, urls


@pytest.fixture(scope="module")
def chromium():
    exe = chromium_path()
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is required under CI for the report browser test (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def test_report_renders_in_headless_chromium(chromium, tmp_path):
    from patchlab.evaluation import evaluate, make_controls
    from patchlab.models import tiny_classifier
    from patchlab.patches.candidate import Candidate
    from patchlab.report import update_index, write_run

    clf = tiny_classifier(num_classes=10)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32, generator=g)
    cands = [Candidate(torch.rand(3, 10, 10, generator=g), "synth", "<img src=x onerror=alert(1)>")]
    controls = make_controls(clf, images[:1], images[1:2], g, target=3)
    ev = evaluate(clf, cands, images[2:], None, 3, sizes=(0.1, 0.3), random_placements=2, controls=controls,
                  generator=g, image_names=["<img src=x onerror=alert(1)>.png"] * 4)
    run = tmp_path / "reports" / "run"
    _, html_path = write_run(run, ev, model="tiny", seed=0)
    update_index(tmp_path / "reports")
    for page, min_images in ((html_path, 8), (tmp_path / "reports" / "index.html", 0)):
        imgs, errors, urls = open_page(chromium, page.resolve().as_uri(), str(tmp_path / f"profile-{page.stem}"))
        assert len(imgs) >= min_images
        assert all(ok and width > 0 for ok, width, _ in imgs), imgs
        assert errors == [], errors
        assert all(u.startswith(("data:", "file:")) for u in urls), urls
