"""A small ComfyUI HTTP + websocket driver for the end-to-end tests (stdlib + websocket-client)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, Optional

import websocket


class PromptRejected(Exception):
    """POST /prompt answered 400: ``body`` holds ``error`` and ``node_errors``."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")
        self.status = status
        self.body = body


class ComfyClient:
    """Talks to one ComfyUI server; keeps a websocket open and records every JSON message."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self.messages: list[dict] = []
        self._cond = threading.Condition()
        self._ws: Optional[websocket.WebSocketApp] = None
        self._thread: Optional[threading.Thread] = None

    # --- plain HTTP ---------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path} -> {status}: {str(body)[:500]}"
        return body

    def object_info(self) -> dict:
        return self.get("/object_info")

    # --- websocket ----------------------------------------------------------------------------
    def connect_ws(self, timeout: float = 30) -> None:
        url = self.base.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        opened = threading.Event()

        def on_message(_ws: Any, msg: Any) -> None:
            if isinstance(msg, (bytes, bytearray)):
                return  # binary frames are previews
            try:
                data = json.loads(msg)
            except ValueError:
                return
            with self._cond:
                self.messages.append(data)
                self._cond.notify_all()

        self._ws = websocket.WebSocketApp(url, on_message=on_message, on_open=lambda _ws: opened.set())
        self._thread = threading.Thread(target=self._ws.run_forever, kwargs={"ping_interval": 0}, daemon=True)
        self._thread.start()
        if not opened.wait(timeout):
            raise TimeoutError(f"websocket {url} did not open in {timeout} s")

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._thread is not None:
            self._thread.join(5)

    def events(self, prompt_id: str, kind: Optional[str] = None) -> list[dict]:
        """Messages about ``prompt_id`` (optionally of one type), in arrival order."""
        with self._cond:
            msgs = list(self.messages)
        out = [m for m in msgs if isinstance(m.get("data"), dict) and m["data"].get("prompt_id") == prompt_id]
        return [m for m in out if kind is None or m["type"] == kind]

    def wait_for(self, pred: Callable[[dict], bool], timeout: float) -> dict:
        """Block until a websocket message satisfies ``pred``; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for m in self.messages[seen:]:
                    if pred(m):
                        return m
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching websocket message")
                self._cond.wait(left)

    # --- prompts ------------------------------------------------------------------------------
    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id or raises :class:`PromptRejected`."""
        status, body = self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            raise PromptRejected(status, body if isinstance(body, dict) else {"raw": body})
        assert not body.get("node_errors"), body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """Poll /history until the prompt finished; returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                entry = h[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, prompt: dict, timeout: float = 300) -> tuple[str, dict]:
        pid = self.queue(prompt)
        return pid, self.wait(pid, timeout)


def status_messages(entry: dict) -> dict[str, Any]:
    """``{event: data}`` from a history entry's status messages (last one wins)."""
    return {name: data for name, data in entry.get("status", {}).get("messages", [])}


def error_text(entry: dict) -> str:
    msgs = status_messages(entry)
    err = msgs.get("execution_error")
    if not err:
        return json.dumps(entry.get("status"))[:2000]
    return f"{err.get('node_type')}: {err.get('exception_message')}\n" + "".join(err.get("traceback", []))[-3000:]
