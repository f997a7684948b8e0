"""A real browser: JupyterLab driven by headless Debian Chromium via Playwright.

Chapter 0 is opened the way a learner gets it (the launcher's workspace
notebook), all cells are run, the gamma slider is moved with the keyboard, and
the test checks that the figure changed and that the kernel saw the new value.
Screenshots are kept in artifacts/browser/. The JupyterLab server is started
through the launcher and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time

import jupytext
import pytest
from playwright.sync_api import expect

from tests.lab import ROOT, LabServer

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "artifacts" / "browser"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def ensure_chromium() -> str:
    """Debian's chromium, installed with apt-get if missing (never `playwright install`)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    why = "Debian's chromium is not installed and this user cannot apt-get it"
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900)
        if os.path.exists(CHROMIUM):
            return CHROMIUM
        why = "apt-get install chromium did not provide /usr/bin/chromium"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    executable = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab():
    workspace = ROOT / "build" / "test-workspace-browser"
    shutil.rmtree(workspace, ignore_errors=True)
    server = LabServer(workspace, ROOT / "artifacts" / "browser" / "lab.log").start()
    yield server
    server.stop()


INDICATOR = ".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator"  # the open notebook's, not a hidden tab's


@contextlib.contextmanager
def _page(browser, failure_shot: str, width: int = 1400, height: int = 1000):
    """A fresh page; a screenshot ``<failure_shot>_failure.png`` if the test fails; always closed."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        yield page
    except Exception:
        page.screenshot(path=str(SHOTS / f"{failure_shot}_failure.png"))
        raise
    finally:
        page.close()


def _wait_idle(page, timeout=120_000):
    page.wait_for_selector(f"{INDICATOR}[data-status='idle']", timeout=timeout)


def _accept_kernel_dialog(page, wait_s: float = 3.0):
    """JupyterLab sometimes asks which kernel to start; take the notebook's own (python3)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog:has-text('Select Kernel') .jp-mod-accept")
        if dialog.count():
            dialog.first.click()
            return
        time.sleep(0.2)


def _stable_src(locator, timeout=30.0) -> str:
    """The image's src once it has stopped changing for a moment."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        src = locator.get_attribute("src")
        if src != last:
            last, since = src, time.monotonic()
        elif time.monotonic() - since > 1.0:
            return src
        time.sleep(0.2)
    return last


def test_chapter_0_runs_and_the_gamma_slider_redraws_the_plot(browser, lab):
    with _page(browser, "00") as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        assert lab.url == _notebook_url(lab, "00_welcome"), "the launcher must print chapter 0's URL"
        _open_and_run_all(page, lab, "00_welcome")

        slider = page.locator(".jp-OutputArea-output .widget-slider").first
        slider.wait_for(timeout=120_000)
        slider.scroll_into_view_if_needed()  # off-screen cells are not rendered (no innerText)
        image = page.locator(".jupyter-widgets.widget-output img").first
        image.wait_for(timeout=60_000)
        readout = page.locator(".jp-OutputArea-output .widget-readout").first
        expect(readout).to_have_text("0.90", timeout=30_000)  # the view fills it in just after rendering
        kernel_text = page.locator(".jp-OutputArea-output .widget-html-content").first
        expect(kernel_text).to_contain_text("gamma = 0.90", timeout=30_000)
        before = _stable_src(image)
        page.screenshot(path=str(SHOTS / "00_before.png"))

        handle = page.locator(".widget-slider .noUi-handle").first
        handle.focus()
        for _ in range(5):
            handle.press("ArrowRight")
        # the readout below the slider is written by the kernel's callback:
        page.wait_for_function(
            "() => document.querySelector('.jp-OutputArea-output .widget-html-content')"
            ".innerText.includes('gamma = 0.95')", timeout=30_000)
        expect(readout).to_have_text("0.95", timeout=30_000)
        after = _stable_src(image)
        assert after != before, "the plot did not change when gamma moved"
        page.screenshot(path=str(SHOTS / "00_after.png"))

        # Ask the kernel directly: a new cell at the end prints the widget's value.
        # (below the widget's cell, which is active; JupyterLab only renders visible cells)
        page.locator(".jp-Notebook .jp-Cell.jp-mod-active .jp-InputArea-prompt").first.click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        page.keyboard.press("Enter")  # edit mode in the new cell
        page.keyboard.type("print('KERNEL-SAYS', gamma_explorer.values['gamma'], gamma_explorer.n_draws > 1)")
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector(".jp-OutputArea-output:has-text('KERNEL-SAYS')", timeout=30_000)
        said = page.locator(".jp-OutputArea-output:has-text('KERNEL-SAYS')").last.inner_text()
        assert "KERNEL-SAYS 0.95 True" in said
        page.screenshot(path=str(SHOTS / "00_kernel.png"))
        assert not [e for e in errors if "widget" in e.lower()], errors


def test_chapter_text_files_open_as_notebooks(browser, lab):
    with _page(browser, "00_text", width=1200, height=800) as page:
        # a copy, so that nothing JupyterLab saves can touch the tracked chapter
        copy = lab.workspace / "00_welcome_text.py"
        shutil.copy(ROOT / "chapters" / "00_welcome.py", copy)
        rel = copy.relative_to(ROOT).as_posix()
        page.goto(f"http://127.0.0.1:{lab.port}/lab/tree/{rel}?token={lab.token}")
        page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell", timeout=90_000)
        # The status bar of a notebook says "Cell i/N"; JupyterLab renders only the
        # visible cells, so count through it rather than through the DOM.
        expected = len(jupytext.read(ROOT / "chapters" / "00_welcome.py", fmt="py:percent").cells)
        page.wait_for_selector(f".jp-StatusBar-Widget:has-text('/{expected}')", timeout=30_000)
        page.screenshot(path=str(SHOTS / "00_text_file.png"))


def _notebook_url(lab, stem: str) -> str:
    rel = (lab.workspace / f"{stem}.ipynb").relative_to(ROOT).as_posix()
    return f"http://127.0.0.1:{lab.port}/lab/tree/{rel}?token={lab.token}"


def _open_and_run_all(page, lab, stem: str, timeout_s: int = 600):
    page.goto(_notebook_url(lab, stem))
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell", timeout=90_000)
    _accept_kernel_dialog(page)
    _wait_idle(page)
    # Through the notebook's own toolbar ("restart the kernel and run all cells"):
    # the Run menu acts on whichever notebook JupyterLab considers current, which is
    # not reliably the one just opened when other notebooks are restored beside it.
    panel = page.locator(".jp-NotebookPanel:visible").first
    button = panel.locator(".jp-Toolbar [data-command='notebook:restart-run-all']").first
    try:
        button.wait_for(state="visible", timeout=20_000)
    except Exception:
        # seen once in a full run on a loaded machine: the button was in the DOM but not visible
        # (a narrow toolbar folds its last items into its "more" menu); open that menu first
        panel.locator(".jp-Toolbar-responsive-opener").first.click()
        button = page.locator(".jp-Toolbar-responsive-popup [data-command='notebook:restart-run-all']").first
    button.click()
    page.locator(".jp-Dialog .jp-mod-accept").first.click()  # "Restart Kernel?" -> Confirm
    page.wait_for_selector(f"{INDICATOR}[data-status='busy']", timeout=30_000)
    _wait_idle(page, timeout=timeout_s * 1000)


def _move_and_check(page, readout_text: str, handle_index: int, presses: int, expect_text: str,
                    shot: str, timeout_ms: int = 60_000):
    """In the live figure whose kernel-written readout contains ``readout_text``,
    press ArrowRight on slider handle ``handle_index``; wait for the readout to
    contain ``expect_text``; assert the figure changed."""
    box = page.locator(".jp-OutputArea-output .widget-vbox"
                       f":has(> .widget-html:has-text('{readout_text}'))").first
    box.wait_for(timeout=60_000)
    box.scroll_into_view_if_needed()
    element = box.element_handle()
    image = box.locator(".widget-output img").first
    before = _stable_src(image)
    page.screenshot(path=str(SHOTS / f"{shot}_before.png"))
    handle = box.locator(".noUi-handle").nth(handle_index)
    handle.focus()
    for _ in range(presses):
        handle.press("ArrowRight")
    page.wait_for_function("([el, text]) => el.innerText.includes(text)", arg=[element, expect_text],
                           timeout=timeout_ms)
    def current_src():
        # query anew each time: the Output widget may replace its <img> element after the
        # readout changed, and a handle taken before that would keep the old picture
        img = element.query_selector(".widget-output img")
        return img.get_attribute("src") if img else before

    deadline = time.monotonic() + 30
    while current_src() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert current_src() != before, f"{shot}: the plot did not change"
    page.screenshot(path=str(SHOTS / f"{shot}_after.png"))


def test_chapter_5_epsilon_sliders_redraw(browser, lab):
    with _page(browser, "05") as page:
        _open_and_run_all(page, lab, "05_ppo_clip")
        # the clipped objective: eps 0.20 -> 0.30 (two steps of 0.05), redrawn at once
        _move_and_check(page, "eps = 0.20", 0, 2, "eps = 0.30", "05_clip")
        # the training runs, cached: clip range 0.2 -> 0.3
        _move_and_check(page, "475 reached", 0, 1, "eps = 0.3:", "05_training")


def test_chapter_6_beta_slider_redraws(browser, lab):
    with _page(browser, "06") as page:
        _open_and_run_all(page, lab, "06_ppo_penalty")
        # initial beta 1 -> 10: a new training run (a few seconds), then the figure changes
        _move_and_check(page, "adaptive beta, initial 1,", 0, 1, "initial 10,", "06_beta", timeout_ms=120_000)


def test_chapter_8_beta_slider_redraws(browser, lab):
    with _page(browser, "08") as page:
        _open_and_run_all(page, lab, "08_rlhf_ppo")
        # the KL coefficient: beta 0 (the hack) -> 0.03, read from the benchmark's file
        _move_and_check(page, "beta = 0 (", 0, 1, "beta = 0.03 (", "08_beta")


def _click_and_check(page, readout_text: str, button: str, expect_text: str, shot: str, timeout_ms: int = 60_000):
    """In the live figure whose kernel-written readout contains ``readout_text``: the figure is
    drawn before any interaction (its default rendering), then clicking the toggle button
    labelled ``button`` makes the readout contain ``expect_text`` and changes the figure."""
    box = page.locator(".jp-OutputArea-output .widget-vbox"
                       f":has(> .widget-html:has-text('{readout_text}'))").first
    box.wait_for(timeout=60_000)
    box.scroll_into_view_if_needed()
    element = box.element_handle()
    before = _stable_src(box.locator(".widget-output img").first)
    assert before and before.startswith("data:image/png"), f"{shot}: no default figure before any interaction"
    page.screenshot(path=str(SHOTS / f"{shot}_before.png"))
    box.locator(".widget-toggle-button").filter(has_text=re.compile(rf"^\s*{re.escape(button)}\s*$")).first.click()
    page.wait_for_function("([el, text]) => el.innerText.includes(text)", arg=[element, expect_text],
                           timeout=timeout_ms)

    def current_src():
        img = element.query_selector(".widget-output img")
        return img.get_attribute("src") if img else before

    deadline = time.monotonic() + 30
    while current_src() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert current_src() != before, f"{shot}: the plot did not change"
    page.screenshot(path=str(SHOTS / f"{shot}_after.png"))


def test_chapter_10_variant_buttons_redraw(browser, lab):
    with _page(browser, "10") as page:
        _open_and_run_all(page, lab, "10_rlvr")
        # the variants over training, read from results/rlvr.json: plain GRPO -> full DAPO
        _click_and_check(page, "held-out pass@1", "dapo", "dapo {'loss_aggregation': 'dapo', 'clip_eps_high'",
                         "10_variant")
