"""Screenshot a sweep's dashboard (its parent run's "Model metrics" tab in `mlflow ui`) for the README.

    python -m bespoke_exp -m epoch=1,2,...,10 guidance=1,1.5,2 \\
        paths.root=/tmp/dash tracking.uri=sqlite:////tmp/dash/mlflow.db      # a demo sweep
    python scripts/readme_screenshot.py --tracking-uri sqlite:////tmp/dash/mlflow.db

Starts `mlflow ui` on a loopback address in the background and drives headless Chromium over its
DevTools protocol: a plain `chromium --screenshot` can't, because the page needs two inputs to
show what the README describes: the chart filter (to show the ranked metric's epoch curves next
to the image cards) and each image card's step box (a card opens at step 0, where the sweep has
no image; it is set to the best epoch). Then it stops both and saves a palette PNG small enough
for the repository (scripts/readme/dashboard.png).

A maintenance script, not run in CI: it assumes `chromium` is installed (Debian: apt-get install
chromium) and uses aiohttp (installed with mlflow) for the DevTools websocket.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
from PIL import Image

from bespoke_exp import tracking

OUT = Path(__file__).resolve().parent / "readme" / "dashboard.png"
# Another loopback address than 127.0.0.1: on "localhost" the UI opens its assistant panel over a
# third of the page on first load (there is no flag for it), elsewhere it stays a small button.
HOST = "127.0.0.2"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
STEP_BOXES = "document.querySelectorAll('input[type=number]')"  # one per image card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the sweep's store, sqlite:///...")
    parser.add_argument("--sweep", default=None, help="sweep id or parent run id (default: the newest)")
    parser.add_argument("--port", type=int, default=5077, help="for mlflow ui")
    parser.add_argument("--debug-port", type=int, default=9337, help="for Chromium's DevTools")
    parser.add_argument("--window", default="1400,1700", help="browser window, width,height")
    parser.add_argument("--filter", default="epoch_score", help="chart filter: the sections to show")
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds the page gets to load")
    parser.add_argument("--colors", type=int, default=128, help="palette size of the saved PNG")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def parent_page(uri: str, sweep: str | None, port: int) -> tuple[str, int]:
    """(the parent run's metric charts page, as a sweep prints it at its end but on HOST and in the
    UI's model-training mode, the sweep's best epoch)."""
    experiment = tracking.find_sweep_experiment(uri, sweep)
    if experiment is None:
        raise SystemExit(f"no sweep {sweep or ''} in {uri}")
    tracker = tracking.connect(uri, experiment)
    parent = tracking.find_sweep(tracker, sweep)
    url = tracking.run_ui_url(tracker, parent.info.run_id, port).replace("127.0.0.1", HOST)
    return url + "?workflowType=machine_learning", int(parent.data.tags["best.epoch"])


def start(command: list[str]) -> subprocess.Popen:
    """In its own process group, so `stop` also ends what it spawns (uvicorn workers, renderers)."""
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.wait(timeout=30)


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 120.0) -> bytes:
    """The body of `url` once it answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except (urllib.error.URLError, OSError):
            if process.poll() is not None:
                raise SystemExit(f"{process.args[0]} exited with status {process.returncode}") from None
            time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout_s:g} s")


class DevTools:
    """The few Chrome DevTools protocol calls this needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    async def __call__(self, method: str, **params) -> dict:
        call = next(self.ids)
        await self.ws.send_json({"id": call, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == call:
                return reply.get("result", {})
        raise ConnectionError(f"DevTools closed during {method}")

    async def js(self, expression: str):
        return (await self("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get(
            "value"
        )

    async def type_into(self, selector_js: str, text: str) -> None:
        """Replace an input's text as a user would (React sees real input events), then Enter."""
        await self.js(f"(() => {{ const e = {selector_js}; e.focus(); e.select(); }})()")
        await self("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            await self(
                "Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13
            )


async def capture(page_ws: str, url: str, chart_filter: str, step: int, load_s: float) -> bytes:
    async with aiohttp.ClientSession() as http, http.ws_connect(page_ws, max_msg_size=0) as ws:
        tools = DevTools(ws)
        await tools("Page.navigate", url=url)
        await asyncio.sleep(load_s)
        await tools.type_into("document.querySelector('input[role=searchbox]')", chart_filter)
        await asyncio.sleep(3)
        # Cards render as they come into view: repeat until every step box shows the epoch.
        for _ in range(10):
            boxes = await tools.js(f"[...{STEP_BOXES}].map(e => e.value)")
            if boxes and all(value == str(step) for value in boxes):
                break
            for index, value in enumerate(boxes or []):
                if value != str(step):
                    await tools.type_into(f"{STEP_BOXES}[{index}]", str(step))
            await asyncio.sleep(2)
        # Back to the top of every scrolled container, caret out of the last box, images loaded.
        await tools.js(
            "document.activeElement.blur();"
            "document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })"
        )
        await asyncio.sleep(4)
        return base64.b64decode((await tools("Page.captureScreenshot", format="png"))["data"])


def screenshot(url: str, window: str, chart_filter: str, step: int, load_s: float, debug_port: int) -> bytes:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state from earlier runs
        browser = start(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"]
            + [f"--remote-debugging-port={debug_port}", "about:blank"]
        )
        try:
            targets = json.loads(wait_for(f"http://127.0.0.1:{debug_port}/json/list", browser))
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            return asyncio.run(capture(page_ws, url, chart_filter, step, load_s))
        finally:
            stop(browser)


def shrink(png: bytes, out: Path, colors: int) -> int:
    """A palette PNG: UI screenshots have few colours, so this keeps them sharp at a fraction of the size."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        raw.write_bytes(png)
        with Image.open(raw) as image:
            small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, optimize=True)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url, best_epoch = parent_page(args.tracking_uri, args.sweep, args.port)
    server = start(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.tracking_uri, "--host", HOST]
        + ["--port", str(args.port), "--allowed-hosts", f"{HOST},{HOST}:{args.port}", "--workers", "1"]
    )
    try:
        wait_for(f"http://{HOST}:{args.port}/health", server)
        png = screenshot(url, args.window, args.filter, best_epoch, args.load_s, args.debug_port)
    finally:
        stop(server)
    size = shrink(png, args.out, args.colors)
    print(f"{url} (images at epoch {best_epoch})\n-> {args.out} ({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
