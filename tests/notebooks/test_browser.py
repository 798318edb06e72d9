"""The notebooks in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

JupyterLab is started the way `make lab` starts it: its root is the learner's copy made by
`ckalab notebooks` (so autosave never writes into the repo) and its default URL is the welcome
notebook. The tests follow the URL JupyterLab prints (landing), run 05-rbac-role in solution mode
and use the lab bar (Check, Hint, Reset, and the status line across a stop and a start of the
cluster), and drive the mock exam (nothing starts before the Start button; Finish asks first).
Screenshots go to artifacts/ (gitignored); with CKALAB_UPDATE_SCREENSHOTS=1 they also refresh
docs/*.png.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ckalab import exam, grading, labs
from ckalab import notebook as ckalab_notebook
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


WELCOME_URL = "/lab/tree/00-welcome.ipynb"  # the Makefile's --LabApp.default_url


@pytest.fixture(scope="module")
def jupyter(cluster, tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving the learner's copy of the notebooks, kernels pointed at the
    test cluster; yields (base URL, token, the URL it printed)."""
    tmp_path = tmp_path_factory.mktemp("jupyter")
    root, _ = ckalab_notebook.copy_notebooks(tmp_path / "notebooks")
    exam_nb = root / "exam.ipynb"  # a one-task exam keeps the test short
    exam_nb.write_text(exam_nb.read_text().replace("LABS = None", "LABS = ['rbac-role']"))
    assert "LABS = ['rbac-role']" in exam_nb.read_text()
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, CKALAB_CLUSTER=cluster.name, CKALAB_NOTEBOOK_MODE="solution",
               JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("CKALAB_SEED", None)
    # User settings: start the notebook's own kernel without asking, render every cell (not only
    # those scrolled into view, so a test can read the last one), and never fetch news.
    for plugin, value in {"notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
                          "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = tmp_path / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         f"--LabApp.default_url={WELCOME_URL}",
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
    log.flush()
    printed = re.findall(r"http://127\.0\.0\.1:\d+\S*", (tmp_path / "jupyter.log").read_text())
    yield base, token, printed[0] if printed else ""
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


def _browser(pw):
    from playwright.sync_api import expect

    # expect() waits 5 s unless told (a page's set_default_timeout is not its timeout): under the
    # workers' load on real nodes (five, 2 cores) the welcome notebook's last cells took longer once.
    expect.set_options(timeout=30_000)
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def _run_all(browser, base: str, token: str, notebook: str):
    """Open `notebook` in a new page, wait for its kernel, Run All; return the page.

    Each notebook gets a workspace of its own, so no notebook open in an earlier test comes back
    and takes the focus: Run All acts on the current tab, which must be this one."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{base}/lab/workspaces/{notebook.split('.')[0]}/tree/{notebook}?token={token}")
    page.locator(".jp-Notebook").first.wait_for()
    _wait_for_kernel(page)
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")).to_contain_text(notebook)
    _menu(page, "Run", "Run All Cells")
    return page


def _menu(page, menu: str, item: str) -> None:
    page.get_by_role("menuitem", name=menu, exact=True).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def _clear_and_run_all(page) -> None:
    """Clear every output first, so what the test then reads comes from this run."""
    _menu(page, "Edit", "Clear Outputs of All Cells")
    _menu(page, "Run", "Run All Cells")


def test_printed_url_lands_on_the_welcome_notebook(jupyter):
    """The link JupyterLab prints opens 00-welcome.ipynb (not the Launcher); the file browser shows
    the notebooks without their build sources; the welcome notebook ends with where to go next."""
    from playwright.sync_api import expect, sync_playwright

    base, token, printed = jupyter
    assert printed.startswith(f"{base}{WELCOME_URL}?token="), printed
    url = printed.split("?")[0] + f"?token={token}"  # JupyterLab prints a given token as '...'
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator(".jp-Notebook").first.wait_for()
            expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")).to_contain_text("00-welcome.ipynb")
            assert page.locator(".jp-Launcher").count() == 0
            listing = page.locator(".jp-DirListing-item .jp-DirListing-itemText")
            expect(listing.first).to_be_visible()
            names = listing.all_inner_texts()
            assert "00-welcome.ipynb" in names and "exam.ipynb" in names
            assert "_source" not in names and not [n for n in names if n.endswith(".md") or n.endswith(".py")]
            expect(page.locator(".jp-MarkdownCell h2", has_text="Where to go next")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "landing.png"))
        finally:
            browser.close()


def test_lab_bar_check_in_browser(jupyter, cluster, lab_harness):
    from playwright.sync_api import expect, sync_playwright

    lab = labs.load("rbac-role")
    lab_harness(lab.id)
    base, token, _ = jupyter
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = _run_all(browser, base, token, "05-rbac-role.ipynb")

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

            # The status line follows the cluster: stopped in a terminal, then started again.
            status = bar.locator(".ckalab-status")
            expect(status).to_contain_text(f"Cluster '{cluster.name}' (local backend) is running.")
            try:
                cluster.down(progress=lambda m: None)
                bar.locator(".ckalab-btn-check").click()
                expect(status).to_contain_text(f"Cluster '{cluster.name}' (local backend) is stopped.")
                expect(bar.locator(".ckalab-out .ckalab-error")).to_contain_text(
                    f"Cluster '{cluster.name}' is not running")
                bar.screenshot(path=str(ARTIFACTS / "lab-bar-stopped.png"))
                # Run All now: the bar cell stops the run with one line, no traceback anywhere.
                _clear_and_run_all(page)
                stop = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                expect(stop.first).to_be_visible()
                assert stop.count() == 1, stop.all_inner_texts()
                expect(stop).to_have_text(f"Cluster '{cluster.name}' (local backend) is stopped. Start it in a "
                                          f"terminal with: ckalab up --name {cluster.name}, then run this cell again.")
                assert "Traceback" not in page.locator(".jp-Notebook").inner_text()
                _wait_for_kernel(page)
                assert page.locator(".ckalab-result").count() == 0  # the check cell did not run
            finally:
                cluster.up(progress=lambda m: None)
            _clear_and_run_all(page)  # started again: the same notebook runs through
            expect(page.locator(".jp-OutputArea-output .ckalab-result").last).to_have_attribute(
                "data-passed", "true", timeout=120_000)
            bar = page.locator(".ckalab-bar").first
            expect(bar.locator(".ckalab-status")).to_contain_text(f"Cluster '{cluster.name}' (local backend) is running.")
        finally:
            browser.close()
    if os.environ.get("CKALAB_UPDATE_SCREENSHOTS"):  # refresh the README's pictures on request only
        shutil.copyfile(ARTIFACTS / "lab-bar.png", REPO / "docs" / "screenshot-lab-bar.png")
        shutil.copyfile(ARTIFACTS / "notebook-05-rbac-role.png", REPO / "docs" / "screenshot-notebook.png")


def test_exam_starts_only_from_its_button_and_finish_asks_first(jupyter, cluster):
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(exam.exam_dir(), ignore_errors=True)
    base, token, _ = jupyter
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = _run_all(browser, base, token, "exam.ipynb")  # "just to look"
            panel = page.locator(".ckalab-exam").first
            start = panel.locator(".ckalab-exam-start")
            expect(start).to_be_visible()
            expect(page.locator(".jp-OutputArea-output", has_text="No exam has been graded yet")).to_have_count(1)
            assert exam.load_state() is None, "Run All started an exam"

            start.click()
            expect(panel.locator(".ckalab-countdown")).to_contain_text("Time left 1:5")  # 120 minutes, counting down
            assert exam.running(exam.load_state())
            task = panel.locator(".ckalab-exam-task")
            expect(task).to_contain_text("Task 1 · 6 of 6 points")
            # Rendered Markdown, as in the lab notebooks: a heading, bold names, inline code, a list.
            expect(task.locator("h2")).to_contain_text("RBAC")
            expect(task.locator("strong", has_text=labs.load("rbac-role").params["user"])).to_have_count(1)
            expect(task.locator("li code", has_text="create")).to_have_count(1)
            assert "**" not in task.inner_text() and task.locator("pre").count() == 0
            page.screenshot(path=str(ARTIFACTS / "exam-running.png"))

            finish = panel.locator(".ckalab-exam-finish")
            finish.click()
            confirm = panel.locator(".ckalab-exam-confirm")
            expect(confirm).to_be_visible()
            assert exam.running(exam.load_state()), "Finish graded without asking"
            panel.locator(".ckalab-exam-finish-no").click()
            expect(confirm).to_be_hidden()
            assert exam.running(exam.load_state())

            finish.click()
            panel.locator(".ckalab-exam-finish-yes").click()
            report = panel.locator(".ckalab-exam-report")
            expect(report).to_have_attribute("data-passed", "false", timeout=60_000)
            graded = exam.load_state()["report"]
            assert not exam.running(exam.load_state())
            rows = report.locator(".ckalab-check-row")
            assert rows.count() == len(graded["tasks"][0]["checks"]) > 0
            expect(report.locator(".ckalab-check-row[data-state='failed']").first).to_be_visible()
            expect(finish).to_be_hidden()
            page.screenshot(path=str(ARTIFACTS / "exam-report.png"), full_page=True)
        finally:
            browser.close()
            shutil.rmtree(exam.exam_dir(), ignore_errors=True)
