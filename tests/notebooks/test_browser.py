"""The lab bar in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

Opens 05-rbac-role (a copy, so autosave cannot write outputs into the repo), runs every cell in
solution mode, clicks the bar's Check button and reads the result the bar renders. Screenshots go
to artifacts/ (gitignored); with CKALAB_UPDATE_SCREENSHOTS=1 they also refresh docs/*.png.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ckalab import grading, labs
from ckalab.waiting import WaitTimeout, wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter(cluster, tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of the notebooks, kernels pointed at the test cluster."""
    root = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns("_source"))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, CKALAB_CLUSTER=cluster.name, CKALAB_NOTEBOOK_MODE="solution",
               JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("CKALAB_SEED", None)
    # User settings: start the notebook's own kernel without asking, and never fetch news.
    for plugin, value in {"notebook-extension/tracker": {"autoStartDefaultKernel": True},
                          "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = tmp_path / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         "--allow-root", "--LabApp.extension_manager=readonly",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    def ready():
        if proc.poll() is not None:
            raise AssertionError("JupyterLab exited")
        urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
        return True

    try:
        wait_for(ready, 60, "JupyterLab to answer on loopback", interval=0.3)
    except WaitTimeout:
        proc.kill()
        raise AssertionError(f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
    yield base, token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _wait_for_kernel(page, seconds: float = 90) -> None:
    """Wait until the notebook's kernel is idle; accept the kernel dialog if JupyterLab shows one."""
    idle = page.locator(".jp-StatusBar-Widget", has_text="| Idle")
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select Kernel")

    def idle_now() -> bool:
        if select.count() and select.first.is_visible():
            select.first.click()
        return idle.count() > 0

    wait_for(idle_now, seconds, "the notebook kernel to be idle", interval=0.25)


def test_lab_bar_check_in_browser(jupyter, cluster, lab_harness):
    from playwright.sync_api import expect, sync_playwright

    lab = labs.load("rbac-role")
    lab_harness(lab.id)
    base, token = jupyter
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/05-rbac-role.ipynb?token={token}")
            page.locator(".jp-Notebook").first.wait_for()
            _wait_for_kernel(page)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            # The notebook's own last cell grades (solution mode applied the reference solution).
            cell_result = page.locator(".jp-OutputArea-output .ckalab-result").last
            expect(cell_result).to_have_attribute("data-passed", "true", timeout=120_000)

            bar = page.locator(".ckalab-bar").first
            bar.scroll_into_view_if_needed()
            bar.locator(".ckalab-btn-check").click()
            rendered = bar.locator(".ckalab-result")
            expect(rendered).to_have_attribute("data-passed", "true", timeout=60_000)

            expected = grading.run(lab, cluster)  # what the CLI would say about the same cluster
            text = rendered.inner_text()
            assert f"Score {expected.max_score}/{expected.max_score}: All checks passed" in text
            for c in expected.checks:
                assert c.title in text
            assert bar.locator(".ckalab-check-row[data-passed='true']").count() == len(expected.checks)

            page.screenshot(path=str(ARTIFACTS / "notebook-05-rbac-role.png"), full_page=True)
            bar.screenshot(path=str(ARTIFACTS / "lab-bar.png"))

            # Hint: one more per click, numbered.
            bar.locator(".ckalab-btn-hint").click()
            expect(bar.locator(".ckalab-out .ckalab-msg")).to_contain_text(f"Hint 1/{len(lab.hints)}: {lab.hints[0]}")
            # Reset asks first; confirming removes the solution, so Check fails again.
            bar.locator(".ckalab-btn-reset").click()
            yes = bar.locator(".ckalab-reset-yes")
            expect(yes).to_be_visible()
            yes.click()
            expect(bar.locator(".ckalab-out .ckalab-msg")).to_contain_text(f"Reset '{lab.id}': removed")
            expect(yes).to_be_hidden()
            bar.locator(".ckalab-btn-check").click()
            expect(bar.locator(".ckalab-result")).to_have_attribute("data-passed", "false")
            bar.screenshot(path=str(ARTIFACTS / "lab-bar-unfinished.png"))
            assert not grading.run(lab, cluster).passed
        finally:
            browser.close()
    if os.environ.get("CKALAB_UPDATE_SCREENSHOTS"):  # refresh the README's pictures on request only
        shutil.copyfile(ARTIFACTS / "lab-bar.png", REPO / "docs" / "screenshot-lab-bar.png")
        shutil.copyfile(ARTIFACTS / "notebook-05-rbac-role.png", REPO / "docs" / "screenshot-notebook.png")
