"""The model card page in a real browser: Debian's headless Chromium, driven by Playwright.

The browser is the system's (``/usr/bin/chromium``, installed with apt-get when missing);
Playwright never downloads one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROWS = pd.DataFrame({"income": [41.5, 63.0], "age": [25, 47], "score": [-0.4, 1.2]})


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip("Debian's chromium is not installed, and apt-get (as root) is not here to install it")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "chromium", "chromium-driver"], check=True, env=env,
                       capture_output=True, timeout=1800)
    return CHROMIUM


@pytest.fixture
def page(chromium, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        dialogs: list[str] = []
        tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        requests: list[str] = []
        tab.on("request", lambda request: requests.append(request.url))
        tab.goto(server.url + "/")
        tab.wait_for_load_state("networkidle")
        yield tab, dialogs, requests
        browser.close()


def _section(tab, name):
    return tab.locator(f"#model-{name}")


def test_the_card_shows_each_model(page, bundles, tmp_path):
    tab, _, requests = page
    assert tab.locator("section.model").count() == 5
    pipe = _section(tab, "pipe")
    assert "sklearn" in pipe.locator("h2").inner_text()
    assert pipe.locator(".verdict").inner_text() == "passed"
    env_rows = pipe.locator("table.environment tbody tr")
    packages = {env_rows.nth(i).locator("td").nth(0).inner_text(): env_rows.nth(i).locator("td").nth(3).inner_text()
                for i in range(env_rows.count())}
    assert packages["scikit-learn"] == "same" and packages["python"] == "same"
    schema = pipe.locator("table.schema tbody tr")
    assert [schema.nth(i).locator("td").first.inner_text() for i in range(schema.count())] == ["income", "age", "score"]
    assert schema.nth(1).locator("td").nth(1).inner_text() == "int64"
    assert "risk & pricing" in pipe.locator("table.metadata").inner_text()
    assert all(url.startswith("http://127.0.0.1:") for url in requests), requests  # nothing from outside
    shot = tmp_path / "model-card.png"
    tab.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_html_and_script_in_metadata_show_as_text_and_never_run(page, bundles):
    tab, dialogs, _ = page
    metadata = _section(tab, "pipe").locator("table.metadata").inner_text()
    assert bundles["pipe"].manifest.metadata["owner"] in metadata  # the payload, as text
    assert bundles["pipe"].manifest.metadata["note"] in metadata
    tab.wait_for_timeout(300)  # give an injected script or image error handler its chance to run
    assert dialogs == []
    assert tab.evaluate("window.__xss") is None
    assert tab.evaluate("document.body.getAttribute('data-pwned')") is None
    assert tab.title() != "pwned"
    assert tab.evaluate("document.querySelectorAll('img').length") == 0
    assert tab.evaluate("[...document.scripts].map(s => s.getAttribute('src'))") == ["/static/card.js"]


def _predict(tab, name, payload, format_value="application/json", method="predict"):
    form = _section(tab, name).locator("form.try")
    form.locator("select[name=format]").select_option(format_value)
    form.locator("select[name=method]").select_option(method)
    form.locator("textarea").fill(payload)
    form.locator("button[type=submit]").click()
    tab.wait_for_function(
        "(form) => { const r = form.querySelector('.result').textContent, e = form.querySelector('.error').textContent;"
        " return (r && r !== '…') || e; }", arg=form.element_handle())
    return form


def test_the_form_predicts_pasted_json_and_csv(page, bundles):
    tab, _, _ = page
    expected = bundles["pipe"].predict(ROWS).tolist()
    form = _predict(tab, "pipe", json.dumps({"dataframe_records": ROWS.to_dict(orient="records")}))
    assert json.loads(form.locator(".result").inner_text()) == expected
    form = _predict(tab, "pipe", ROWS.to_csv(index=False), "text/csv")
    assert json.loads(form.locator(".result").inner_text()) == expected
    form = _predict(tab, "pipe", ROWS.to_csv(index=False), "text/csv", "predict_proba")
    got = json.loads(form.locator(".result").inner_text())
    assert [round(p, 9) for row in got for p in row] == [round(p, 9) for row in bundles["pipe"].predict_proba(ROWS)
                                                          for p in row]


def test_the_form_starts_with_sample_rows_that_predict(page, bundles):
    tab, _, _ = page
    form = _section(tab, "forest").locator("form.try")
    payload = json.loads(form.locator("textarea").input_value())
    form.locator("button[type=submit]").click()
    tab.wait_for_function("(f) => f.querySelector('.result').textContent.startsWith('[')", arg=form.element_handle())
    import numpy as np

    assert json.loads(form.locator(".result").inner_text()) == bundles["forest"].predict(
        np.asarray(payload["instances"])).tolist()


def test_the_form_shows_errors_and_warnings(page):
    tab, _, _ = page
    form = _predict(tab, "pipe", json.dumps({"dataframe_records": [{"income": 50.0, "score": 0.5}]}))
    assert form.locator(".error").inner_text().startswith("SchemaError (HTTP 422): Input is missing column(s) ['age']")
    rows = ROWS.assign(region=["<b>north</b>", "south"]).to_dict(orient="records")
    form = _predict(tab, "pipe", json.dumps({"dataframe_records": rows}))
    assert "'region'" in form.locator(".warnings").inner_text()
    assert form.locator(".warnings b").count() == 0
