"""The page (serve/static/index.html) in headless Chromium against a real `serve.run`, driven like a shopper.

Chromium (/usr/bin/chromium, no downloaded browser) runs with `--remote-debugging-port=0` on loopback and a
fresh profile; the tests speak the Chrome DevTools protocol to it over the `websockets` client (in the lock):
they type with `Input.insertText` + an Enter key event, click with mouse events at an element's centre, read
the DOM with `Runtime.evaluate`, and see the page's own POST /search bodies through the `Network` domain.
The page has no test-only hooks. One Serve app (topology single, the fake VLM as the re-ranking teacher) for
the module.

Screenshots: `DISTILL_PAGE_SCREENSHOTS=docs` writes docs/serving-page-{conversation,edit}.png (else they go to
a temporary directory: the capture is still exercised).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from helpers.serve import FakeVLM, make_serve_world, rerank_settings, running_retriever

from distill.config.pipeline import ServeConfig

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
DESCRIPTION = "A blue ball, the same round shape as the reference."
websockets_sync = pytest.importorskip("websockets.sync.client")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


# ------------------------------------------------------------------------------ a small CDP client


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools protocol (CDP)."""

    def __init__(self, profile: Path, width: int = 1100, height: int = 900):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, deadline = profile / "DevToolsActivePort", time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
        self.ws = websockets_sync.connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024**2,
                                          open_timeout=30)
        self.next_id, self.events = 0, []
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def js(self, expression: str):
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}; status: {self.js(STATUS)!r}, "
                             f"error: {self.js(ERROR)!r}")

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('results')")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (after scrolling it into view)."""
        box = self.js(f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
            if (!el) return null; el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        assert box, f"no element {selector}"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type(self, selector: str, text: str, enter: bool = True) -> None:
        """Focus the input, type `text`, and press Enter (which submits its form)."""
        self.click(selector)
        self.call("Input.insertText", text=text)
        if enter:
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                          nativeVirtualKeyCode=13, **({"text": "\r"} if kind == "keyDown" else {}))

    def searches(self) -> list[dict]:
        """The bodies of the page's POST /search requests so far (since the last `open`), oldest first."""
        self.js("0")  # drain events that arrived since the last call
        return [json.loads(e["params"]["request"]["postData"]) for e in self.events
                if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["method"] == "POST"
                and e["params"]["request"]["url"].endswith("/search")]

    def screenshot(self, path: Path, width: int = 900) -> None:
        """The whole page as a small PNG (scaled to `width`, 128 colours)."""
        from PIL import Image

        h = self.js("Math.ceil(document.documentElement.scrollHeight)")
        w = self.js("Math.ceil(document.documentElement.clientWidth)")
        self.js("window.scrollTo(0, 0)")
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        img = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.quantize(colors=128).save(path, optimize=True)


STATUS = "document.getElementById('status').textContent"
ERROR = "document.getElementById('error').hidden ? '' : document.getElementById('error').textContent"
CARD_IDS = "[...document.querySelectorAll('#results .card')].map(c => c.dataset.itemId)"
CARD_SCORES = "[...document.querySelectorAll('#results .card .score')].map(c => c.textContent)"
SCORER = "document.getElementById('scorer').textContent"


# -------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vlm():
    with FakeVLM(description=DESCRIPTION) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory, offline_student, ray_session, vlm):
    world = make_serve_world(tmp_path_factory.mktemp("page-world"), offline_student)
    rerank, teacher = rerank_settings(vlm.base_url, k=8, budget_s=5.0)
    cfg = ServeConfig(topology="single", max_k=20)
    with running_retriever(world["index"], cfg, rerank=rerank, teacher=teacher) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    yield b
    b.close()


@pytest.fixture
def page(browser, server, vlm):
    vlm.mode = "ok"
    browser.open(server["url"] + "/")
    return browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return DOCS if os.environ.get("DISTILL_PAGE_SCREENSHOTS") == "docs" else tmp_path_factory.mktemp("shots")


def _api_ids(server, body: dict) -> list[str]:
    r = server["client"].post("/search", json=body)
    assert r.status_code == 200, r.text
    return [h["item_id"] for h in r.json()["results"]]


# -------------------------------------------------------------------------------------------- tests


def test_conversation_turns_refine_the_results(page, server, shots):
    first, second = "a toy for my nephew", "something blue, he loves balls"
    page.type("#turn", first)
    page.wait_for(f"{STATUS}.includes('(1 turns)')")
    ids_1, scores_1 = page.js(CARD_IDS), page.js(CARD_SCORES)
    page.type("#turn", second)
    page.wait_for(f"{STATUS}.includes('(2 turns)')")
    page.wait_for("[...document.querySelectorAll('#results img')].every(i => i.dataset.loaded === '1')")

    sent = page.searches()
    two = {"kind": "conversation", "turns": [{"role": "user", "content": first}, {"role": "user", "content": second}]}
    assert [s["query"] for s in sent] == [{"kind": "conversation", "turns": two["turns"][:1]}, two]
    assert sent[-1]["k"] == 12 and sent[-1]["rerank"] is False
    assert page.js("[...document.querySelectorAll('#chat li')].map(l => l.textContent)") == [first, second]
    assert page.js("document.getElementById('results').dataset.kind") == "conversation"
    ids_2 = page.js(CARD_IDS)
    assert ids_2 == _api_ids(server, {"query": two, "k": 12})  # the list shows the two-turn answer
    assert (ids_2, page.js(CARD_SCORES)) != (ids_1, scores_1)  # ... which the second turn changed
    assert "student" in page.js(SCORER) and page.js(ERROR) == ""
    page.screenshot(shots / "serving-page-conversation.png")

    # A new conversation starts from nothing: the next turn is sent alone.
    page.click("#new-conversation")
    assert page.js("document.querySelectorAll('#chat li').length") == 0
    page.type("#turn", "a kite")
    page.wait_for(f"{STATUS}.includes('(1 turns)')")
    assert page.searches()[-1]["query"] == {"kind": "conversation", "turns": [{"role": "user", "content": "a kite"}]}


def test_edit_an_item_sends_a_composed_query_and_shows_the_description(page, server, shots):
    page.type("#query", "a red ball")
    page.wait_for(f"document.querySelectorAll('#results .card').length === 11 && {STATUS}.includes('text query')")
    page.click('#results .card[data-item-id="item-000"] .edit')
    page.wait_for("document.activeElement && document.activeElement.classList.contains('edit-input')")
    page.type('#results .card[data-item-id="item-000"] .edit-input', "in blue")
    page.wait_for("document.getElementById('results').dataset.kind === 'composed'")
    page.wait_for("[...document.querySelectorAll('img')].every(i => i.dataset.loaded === '1')")

    body = page.searches()[-1]
    assert body["query"] == {"kind": "composed", "reference_item": "item-000", "modification": "in blue"}
    assert page.js("document.getElementById('reference').hidden") is False
    assert page.js("document.getElementById('reference').dataset.itemId") == "item-000"
    assert page.js("document.getElementById('reference-image').dataset.src") == "/items/item-000/image"
    assert page.js("document.getElementById('reference-title').textContent") == "red ball"
    assert page.js("document.getElementById('modification').textContent") == "in blue"
    assert DESCRIPTION in page.js("document.getElementById('description').textContent")
    assert "joint(w=0.5)" in page.js(SCORER)
    assert page.js(CARD_IDS) == _api_ids(server, {"query": body["query"], "k": 12})
    page.screenshot(shots / "serving-page-edit.png")


def test_rerank_toggle_reorders_with_the_teacher_and_says_why_not(page, server, vlm):
    page.type("#query", "a green kite for a windy afternoon")
    page.wait_for(f"{STATUS}.includes('text query')")
    student_ids = page.js(CARD_IDS)
    assert "teacher-rerank" not in page.js(SCORER)
    page.click("#rerank")  # the toggle asks the query on screen again, with the teacher
    page.wait_for(f"{SCORER}.includes('teacher-rerank')")
    assert page.searches()[-1] == {"query": "a green kite for a windy afternoon", "k": 12, "rerank": True}
    reranked = page.js(CARD_IDS)
    # The teacher re-ordered the student's top 8 (rerank.k); the rest keep the student's order.
    assert sorted(reranked[:8]) == sorted(student_ids[:8]) and reranked[8:] == student_ids[8:]
    assert reranked == _api_ids(server, page.searches()[-1])  # the teacher's order (now cached)
    assert page.js("document.getElementById('scorer').dataset.scorer") == "student+teacher-rerank"

    vlm.mode = "garbage"  # a teacher that answers prose: the student's order, and the page says why
    page.type("#query", "purple things for a party")
    page.wait_for(f"{STATUS}.includes('purple things')")
    assert page.searches()[-1]["rerank"] is True
    assert page.js("document.getElementById('scorer').dataset.scorer") == "student"
    assert "not re-ranked:" in page.js("document.querySelector('#scorer .rerank-reason').textContent")

    vlm.mode = "ok"  # a link can ask for it: ?q=...&rerank=1
    page.open(server["url"] + "/?q=a+blue+kite+for+the+beach&rerank=1")
    page.wait_for(f"{SCORER}.includes('teacher-rerank')")
    assert page.js("document.getElementById('rerank').checked") is True
    assert page.searches() == [{"query": "a blue kite for the beach", "k": 12, "rerank": True}]


def test_api_errors_are_shown_in_the_page(page):
    page.type("#query", "a yellow box")
    page.wait_for(f"{STATUS}.includes('text query')")
    shown = page.js(CARD_IDS)
    page.click('#results .card .edit')
    page.type("#results .card .edit-input", "x" * 501)  # modification: at most 500 characters
    error = page.wait_for(ERROR)
    assert error.startswith("error 422: ") and "modification" in error, error
    assert page.js(CARD_IDS) == shown  # the results stay; never a blank page
