"""Headless Chromium loads every UI workflow the way a dropped file is loaded; no node type is missing.

Chromium is driven over the DevTools protocol: the test dispatches a real ``drop`` event carrying
the workflow file on the page (the frontend's own drop handler loads it), records what the
frontend reports as missing node types, checks every node is registered, converts the graph back to
an API prompt with the frontend (``app.graphToPrompt``) and compares it with the API twin, and
saves a screenshot per workflow under the artifacts folder.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from comfy_host import ComfyServer
from helpers import API_DIR, UI_DIR

WORKFLOWS = sorted(p.stem for p in UI_DIR.glob("*.json"))


class CDP:
    """Minimal Chrome DevTools Protocol client over one page websocket."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict:
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expr: str, timeout: float = 60) -> Any:
        res = self.call(
            "Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True, timeout=timeout * 1000
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {json.dumps(res['exceptionDetails'])[:1500]}")
        return res["result"].get("value")

    def wait_true(self, expr: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(expr):
                    return
            except RuntimeError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied: {expr}")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def page(chromium: str, comfy_server: ComfyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CDP]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "--remote-allow-origins=*", "--window-size=2400,1350", "about:blank",
    ]  # fmt: skip
    log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, (profile / "chromium.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = json.loads(r.read())
        target = next(t for t in targets if t["type"] == "page")
        cdp = CDP(target["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        cdp.call("Page.navigate", url=comfy_server.url + "/")
        cdp.wait_true(
            "!!(window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app"
            " && window.comfyAPI.app.app.graph && window.LiteGraph"
            " && window.LiteGraph.registered_node_types['TAV_Sample'])",
            timeout=120,
        )
        # then idle: the frontend has opened its start-up workflow (newer frontends load the default one
        # after the graph exists, and would replace a graph dropped before) and hides its loading spinner
        cdp.wait_true(
            "(() => { const em = window.comfyAPI.app.app.extensionManager;"
            " return !!(em && em.workflow && em.workflow.activeWorkflow && !em.spinner); })()",
            timeout=120,
        )
        yield cdp
        cdp.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)
        log.close()


DROP_JS = """
(async () => {
  const app = window.comfyAPI.app.app;
  const missing = [];
  const original = app.showMissingNodesError;
  app.showMissingNodesError = (types) => {
    for (const t of types) missing.push(typeof t === 'string' ? t : t.type);
  };
  try {
    app.graph.clear();
    const file = new File([%(text)s], %(name)s, {type: 'application/json'});
    const dt = new DataTransfer();
    dt.items.add(file);
    document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    const want = %(count)d;
    for (let i = 0; i < 200 && app.graph.nodes.length !== want; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 500));
    const nodes = app.graph.nodes.map((n) => ({
      id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
    }));
    const prompt = (await app.graphToPrompt()).output;
    // fit the whole graph between the side bar / tab bar and the window's edges (text drawn down to ~0.6)
    const b = app.graph.nodes.reduce((b, n) => [
      Math.min(b[0], n.pos[0]), Math.min(b[1], n.pos[1] - 30),
      Math.max(b[2], n.pos[0] + n.size[0]), Math.max(b[3], n.pos[1] + n.size[1]),
    ], [1e9, 1e9, -1e9, -1e9]);
    const left = 70, top = 150;
    const s = Math.min(1, (window.innerWidth - left - 30) / (b[2] - b[0]), (window.innerHeight - top - 30) / (b[3] - b[1]));
    app.canvas.ds.scale = s;
    app.canvas.ds.offset = [left / s - b[0], top / s - b[1]];
    app.canvas.setDirty(true, true);
    await new Promise((r) => setTimeout(r, 300));
    return {missing, nodes, prompt};
  } finally {
    app.showMissingNodesError = original;
  }
})()
"""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return [str(x) for x in a] == [str(x) for x in b]
    return a == b


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_loads_like_a_dropped_file(page: CDP, name: str, artifacts: Path) -> None:
    ui = json.loads((UI_DIR / f"{name}.json").read_text())
    api = json.loads((API_DIR / f"{name}.json").read_text())
    text = json.dumps(ui)
    res = page.eval(DROP_JS % {"text": json.dumps(text), "name": json.dumps(f"{name}.json"), "count": len(ui["nodes"])})
    shot = page.call("Page.captureScreenshot", format="png")
    out = artifacts / f"browser_{name}.png"
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {out}")

    assert res["missing"] == [], f"frontend reports missing node types: {res['missing']}"
    unregistered = [n for n in res["nodes"] if not n["registered"]]
    assert not unregistered, unregistered
    assert sorted(n["type"] for n in res["nodes"]) == sorted(n["type"] for n in ui["nodes"])

    prompt = res["prompt"]
    assert set(prompt) == set(api), f"frontend prompt nodes {sorted(prompt)} != API twin {sorted(api)}"
    for node_id, node in api.items():
        got = prompt[node_id]
        assert got["class_type"] == node["class_type"]
        for key, value in node["inputs"].items():
            assert key in got["inputs"], f"{name} node {node_id}: frontend lost input {key}"
            assert _same(got["inputs"][key], value), f"{name} node {node_id}.{key}: {got['inputs'][key]!r} != {value!r}"
