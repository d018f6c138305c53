"""Real browser: JupyterLab on localhost, driven by Debian's headless Chromium through Playwright,
runs the interactive chapter live (``INTERACTIVE = True``), clicks on the axial plane, presses
*Segment* and sees the mask overlay appear. The screenshot is kept as a test artefact
(``outputs/test-artifacts/interactive.png``).

The model is an untrained ``tiny`` checkpoint made here: the test checks the user interface
(click → point → Segment → overlay), not segmentation quality.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from sam3d.interactive.viewer import AXES_RECTS, SEGMENT_CLASS, STATUS_CLASS

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "09_interactive.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "outputs" / "test-artifacts"
SERVER_START_S = 120
RUN_ALL_S = 420  # imports, the headless segmentation and the live viewer on 2 busy cores
SEGMENT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _untrained_checkpoint(path: Path) -> Path:
    from sam3d import build_sam3d
    from sam3d.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_sam3d("tiny"), path)
    return path


def _notebook_copy(folder: Path, checkpoint: Path) -> Path:
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {
        "MODE": "smoke", "CHECKPOINT": str(checkpoint), "PREPROCESSING": "lits",
        "DATA_DIR": str(ROOT / "data"), "INTERACTIVE": True, "ITK_VIEWER": False,
    })
    out = folder / NOTEBOOK.name
    nbformat.write(nb, out)
    return out


@pytest.fixture
def lab_server(tmp_path):
    """``(base url, token)`` of a JupyterLab serving ``tmp_path/work`` on a free port."""
    work = tmp_path / "work"
    work.mkdir()
    _notebook_copy(work, _untrained_checkpoint(tmp_path / "tiny_untrained.pt"))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jconfig"),
           "JUPYTER_DATA_DIR": str(tmp_path / "jdata"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jruntime"), "IPYTHONDIR": str(tmp_path / "ipy"),
           "PYTHONPATH": str(ROOT)}
    env.pop("MPLBACKEND", None)  # the kernel picks its own (inline, then ipympl)
    log = open(tmp_path / "jupyterlab.log", "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--allow-root",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}); log:\n"
                            + (tmp_path / "jupyterlab.log").read_text(encoding="utf-8")[-3000:])
            try:
                json.loads(_get(f"{base}/api/status?token={token}"))
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {base} in {SERVER_START_S} s")
                time.sleep(0.5)
        yield base, token, tmp_path
    finally:
        _stop(proc, base, token)
        log.close()


def _stop(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut JupyterLab (and its kernels) down; kill its process group if it does not stop."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10).read()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):  # kernels it may have left behind
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(2)
    proc.wait(timeout=30)


def _red_pixels(png: bytes) -> int:
    """Pixels of a screenshot where red clearly dominates (the mask overlay's colour)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r - g > 60) & (r - b > 60)).sum())


def _run_all_cells(page, tries: int = 4) -> None:
    """Run → Run All Cells, once the kernel is connected. Clicked while the notebook's session
    is still starting, JupyterLab asks for a kernel instead of running: accept, then retry."""
    from playwright.sync_api import expect

    expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
        timeout=120_000)
    no_news = page.get_by_role("button", name="No", exact=True)
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    for _ in range(tries):
        if no_news.is_visible():  # "notified about official Jupyter news?" toast
            no_news.click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        deadline = time.time() + 20
        while time.time() < deadline:
            if any(re.search(r"\[(\*|\d+)\]", t or "") for t in prompts.all_text_contents()):
                return
            dialog = page.locator(".jp-Dialog")
            if dialog.count() and dialog.first.is_visible():
                dialog.locator(".jp-mod-accept").first.click()  # "Select" the default kernel
                break
            time.sleep(0.5)
        time.sleep(3)
    pytest.fail(f"Run All Cells did not start the notebook in {tries} tries")


def test_chromium_is_installed():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y "
                    "chromium); the browser test needs it, and .ci/run installs it in CI")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_click_segment_overlay_in_jupyterlab(lab_server):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y "
                    "chromium); CI's .ci/run installs it before make test")
    from playwright.sync_api import expect, sync_playwright

    base, token, tmp = lab_server
    t0 = time.time()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "interactive.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            expect(page.locator(".jp-Notebook")).to_be_visible(timeout=120_000)
            _run_all_cells(page)

            status = page.locator(f".{STATUS_CLASS}")
            expect(status).to_contain_text("click on a plane", timeout=RUN_ALL_S * 1000)
            canvas = page.locator(".jupyter-matplotlib-canvas-div").last
            canvas.scroll_into_view_if_needed()
            expect(canvas).to_be_visible(timeout=60_000)
            time.sleep(1.0)  # the first frame of the figure
            box = canvas.bounding_box()
            left, bottom, width, height = AXES_RECTS["axial"]
            x = box["x"] + (left + width / 2) * box["width"]
            y = box["y"] + (1 - (bottom + height / 2)) * box["height"]
            page.mouse.click(x, y)
            expect(status).to_contain_text("on the axial plane", timeout=60_000)
            time.sleep(1.0)
            before = canvas.screenshot()

            page.locator(f".{SEGMENT_CLASS}").click()
            expect(status).to_contain_text(re.compile(r"mask: \d+ voxels"),
                                           timeout=SEGMENT_S * 1000)
            voxels = int(re.search(r"mask: (\d+) voxels", status.inner_text()).group(1))
            deadline, after = time.time() + 60, before
            while time.time() < deadline:  # the canvas redraws after the status changes
                after = canvas.screenshot()
                if _red_pixels(after) > _red_pixels(before) + 200:
                    break
                time.sleep(0.5)
            page.locator(".jp-OutputArea-output").filter(has=canvas).last.screenshot(
                path=str(shot))
            clicks = page.locator(".jp-OutputArea-output").filter(
                has=canvas).last.inner_text()
        except BaseException:  # pytest.fail and expect's errors alike
            failure = ARTIFACTS / "interactive-failure.png"
            page.screenshot(path=str(failure))
            print(f"\nbrowser test failed; screenshot: {failure}")
            raise
        finally:
            browser.close()
    print(f"\nbrowser test screenshot: {shot} ({time.time() - t0:.0f} s in the browser)")
    assert voxels > 0, "Segment produced an empty mask"
    assert _red_pixels(after) > _red_pixels(before) + 200, "no mask overlay appeared on the canvas"
    assert re.search(r"\(d, h, w\) = \(97, \d+, \d+\)", clicks), clicks  # axial slice d = 97
