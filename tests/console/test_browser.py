"""The console and the operator page in real headless Chromium, against a real API.

Screenshots of each scenario are saved under the artifacts directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from app.backends.local import LocalBackend
from tests.conftest import API_KEY, RunningApp
from tests.console.conftest import ADMIN_KEY

PLOT = """
import matplotlib.pyplot as plt
xs = list(range(20))
plt.figure(figsize=(5, 3))
plt.plot(xs, [x * x for x in xs], marker="o")
plt.title("squares")
plt.savefig("squares.png")
print("plotted", len(xs), "points")
"""

LOOP = """
import time
for i in range(6):
    print(f"line {i}", flush=True)
    time.sleep(0.6)
print("finished")
"""


def wait_text(page: Any, selector: str, text: str, timeout: float = 60_000) -> None:
    """Wait until the element's text contains ``text``."""
    page.wait_for_function(
        "([selector, text]) => { const node = document.querySelector(selector);"
        " return node !== null && node.textContent.includes(text); }",
        arg=[selector, text], timeout=timeout)


def open_page(page: Any, app: RunningApp, path: str, key: str) -> None:
    page.goto(f"{app.base_url}{path}")
    page.fill("#api-key", key)
    page.click("#key-form button")
    wait_text(page, "#key-state", "key set")


def run_code(page: Any, lang: str, code: str) -> None:
    page.select_option("#lang", lang)
    page.fill("#code", code)
    page.click("#run")


def test_a_matplotlib_plot_is_rendered(console_api: RunningApp, page: Any,
                                       artifacts: Path) -> None:
    open_page(page, console_api, "/console/", API_KEY)
    run_code(page, "py", PLOT)
    wait_text(page, "#status", "ok")
    page.wait_for_function("() => { const img = document.querySelector('#files figure img');"
                           " return img !== null && img.complete && img.naturalWidth > 0; }")
    width, height = page.locator("#files figure img").evaluate(
        "img => [img.naturalWidth, img.naturalHeight]")
    assert (width, height) == (500, 300)  # figsize 5x3 at matplotlib's 100 dpi
    assert "plotted 20 points" in page.locator("#output").text_content()
    assert page.locator("#files figcaption a").text_content() == "squares.png"
    page.screenshot(path=artifacts / "console-plot.png", full_page=True)


def test_lines_appear_before_the_program_ends(console_api: RunningApp, page: Any,
                                              artifacts: Path) -> None:
    open_page(page, console_api, "/console/", API_KEY)
    run_code(page, "py", LOOP)
    wait_text(page, "#output", "line 1")
    seen = page.locator("#output").text_content()
    status = page.locator("#status").text_content()
    page.screenshot(path=artifacts / "console-streaming-midway.png", full_page=True)
    assert status == "running", status
    assert "line 0\nline 1\n" in seen and "finished" not in seen
    wait_text(page, "#status", "ok")
    assert page.locator("#output").text_content() == (
        "".join(f"line {i}\n" for i in range(6)) + "finished\n")
    page.screenshot(path=artifacts / "console-streaming-done.png", full_page=True)


def test_uploads_csv_tables_and_a_kept_session(console_api: RunningApp, page: Any,
                                               artifacts: Path, tmp_path: Path) -> None:
    data = tmp_path / "input.csv"
    data.write_text("name,n\nalpha,1\nbeta,2\ngamma,3\n")
    open_page(page, console_api, "/console/", API_KEY)
    page.set_input_files("#upload", str(data))
    wait_text(page, "#upload-state", "uploaded 1 file(s)")
    session = page.locator("#session-id").text_content()
    assert len(session) == 21
    run_code(page, "py", "import pandas as pd\ndf = pd.read_csv('input.csv')\n"
                         "total = int(df['n'].sum())\n"
                         "df.assign(double=df['n'] * 2).to_csv('doubled.csv', index=False)\n"
                         "print('total', total)\n")
    wait_text(page, "#status", "ok")
    page.wait_for_selector("#files table.csv")
    rows = page.locator("#files table.csv tr").all_text_contents()
    assert rows == ["namendouble", "alpha12", "beta24", "gamma36"]
    page.screenshot(path=artifacts / "console-csv-table.png", full_page=True)
    assert page.locator("#session-id").text_content() == session
    wait_text(page, "#session-files", "doubled.csv")
    # the next run continues the session: its variables are still there
    run_code(page, "py", "print('again', total * 10)\n")
    wait_text(page, "#status", "ok")
    assert page.locator("#output").text_content() == "again 60\n"
    assert page.locator("#session-id").text_content() == session
    page.screenshot(path=artifacts / "console-session-csv.png", full_page=True)


def test_the_operator_page_shows_a_claimed_sandbox(console_api: RunningApp, browser: Any,
                                                   artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    try:
        operator, console = context.new_page(), context.new_page()
        open_page(operator, console_api, "/console/operator", ADMIN_KEY)
        wait_text(operator, "#state", "live")
        claimed = '#pools tr[data-lang="bash"] td:nth-child(5)'
        wait_text(operator, claimed, "0")
        open_page(console, console_api, "/console/", API_KEY)
        run_code(console, "bash", "echo working; sleep 5; echo done\n")
        wait_text(console, "#output", "working")
        wait_text(operator, claimed, "1", timeout=10_000)
        operator.screenshot(path=artifacts / "operator-claimed.png", full_page=True)
        wait_text(console, "#status", "ok")
        wait_text(operator, claimed, "0", timeout=15_000)
        wait_text(operator, "#recent tbody", "bash")
        operator.screenshot(path=artifacts / "operator-after-run.png", full_page=True)
    finally:
        context.close()


def test_stop_ends_the_run_and_frees_the_sandbox(console_api: RunningApp, page: Any) -> None:
    backend = console_api.app.state.backend
    assert isinstance(backend, LocalBackend)
    open_page(page, console_api, "/console/", API_KEY)
    run_code(page, "bash", "echo started; sleep 60\n")
    wait_text(page, "#output", "started")
    assert backend.pool_counts()["bash"].claimed == 1
    page.click("#stop")
    wait_text(page, "#status", "stopped")
    deadline = time.monotonic() + 15
    while backend.pool_counts()["bash"].claimed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.pool_counts()["bash"].claimed == 0


def test_the_operator_page_refuses_other_keys(console_api: RunningApp, page: Any) -> None:
    open_page(page, console_api, "/console/operator", API_KEY)
    wait_text(page, "#state", "not an admin key")


def test_the_operator_page_lists_and_ends_a_runtime_session(
        console_api: RunningApp, page: Any, artifacts: Path) -> None:
    with console_api.client() as http:
        made = http.post("/exec", json={"lang": "py", "runtime_session_hint": "console-conv",
                                        "code": "open('/mnt/data/c.txt','w').write('c')"},
                         headers={"X-CodeAPI-Expected-Profile": "stateful"}).json()
    assert made["runtime_status"] == "created", made
    open_page(page, console_api, "/console/operator", ADMIN_KEY)
    wait_text(page, "#runtime tbody", "console-conv")
    row = page.locator("#runtime tbody tr", has_text="console-conv")
    assert "yes" in row.inner_text() and made["runtime_session_id"] in row.inner_text()
    page.screenshot(path=artifacts / "operator-runtime-sessions.png", full_page=True)
    row.locator("button").click()
    page.wait_for_function(
        "() => !document.querySelector('#runtime tbody').textContent.includes('console-conv')")
