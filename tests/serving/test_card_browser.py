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


# --- A server started with a token: the page asks for it, keeps it in the tab's sessionStorage only, and sends it
# --- as the Authorization header; a 401 says so plainly.

TOKEN = "card-token-7f3a9c2e51b04d6e"


@pytest.fixture
def token_server(start_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return start_server(["pipe.msafe", "forest.msafe", "--token-file", str(token_file)]).wait_ready()


@pytest.fixture
def locked(chromium, token_server):
    """A tab on the token server's page, with what it asked for (URLs and Authorization headers) and dialogs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        tab = context.new_page()
        seen: dict[str, list] = {"dialogs": [], "requests": [], "responses": []}
        tab.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
        tab.on("request", lambda request: seen["requests"].append((request.url, request.headers.get("authorization"))))
        tab.on("response", lambda response: seen["responses"].append((response.url, response.status)))
        first = tab.goto(token_server.url + "/")
        tab.wait_for_load_state("networkidle")
        yield tab, context, seen, first
        browser.close()


def _give_token(tab, token):
    form = tab.locator("form.token")
    form.locator("input[name=token]").fill(token)
    form.locator("button[type=submit]").click()
    tab.wait_for_function("() => document.querySelectorAll('section.model').length > 0 || "
                          "document.querySelector('form.token .error').textContent !== ''")


def test_without_the_token_the_page_shows_nothing_of_the_models_and_asks_for_it(locked):
    tab, _, seen, first = locked
    assert first.status == 401  # the page that asks for the token comes with the 401
    assert tab.locator("form.token input[type=password]").is_visible()
    assert tab.locator("section.model").count() == 0
    html = tab.content()
    for secret in ("pipe", "forest", "risk &amp; pricing", "sklearn", "income"):
        assert secret not in html
    assert "sessionStorage" in tab.locator("main").inner_text()
    _give_token(tab, "not-the-token")
    assert tab.locator("form.token .error").inner_text().startswith("The server refused the token (HTTP 401)")
    assert tab.locator("section.model").count() == 0
    assert tab.evaluate("sessionStorage.getItem('modelsafe.token')") is None  # a refused token is not kept
    assert seen["dialogs"] == []


def test_with_the_token_the_card_loads_and_predicts(locked, bundles, tmp_path):
    tab, context, seen, _ = locked
    _give_token(tab, TOKEN)
    assert tab.locator("section.model").count() == 2
    assert tab.locator("form.token .error").inner_text() == ""
    assert tab.locator("form.token button.forget").is_visible()
    assert not tab.locator("form.token input[name=token]").is_visible()
    assert _section(tab, "pipe").locator(".verdict").inner_text() == "passed"
    assert "risk & pricing" in _section(tab, "pipe").locator("table.metadata").inner_text()
    assert tab.title() == "modelsafe: pipe, forest"
    expected = bundles["pipe"].predict(ROWS).tolist()
    form = _predict(tab, "pipe", json.dumps({"dataframe_records": ROWS.to_dict(orient="records")}))
    assert json.loads(form.locator(".result").inner_text()) == expected, form.locator(".error").inner_text()
    form = _predict(tab, "pipe", ROWS.to_csv(index=False), "text/csv")
    assert json.loads(form.locator(".result").inner_text()) == expected
    # where the token went: the Authorization header of the page's own fetches; never a URL, a cookie or localStorage
    assert tab.evaluate("sessionStorage.getItem('modelsafe.token')") == TOKEN
    assert tab.evaluate("localStorage.length") == 0 and tab.evaluate("document.cookie") == ""
    assert context.cookies() == []
    assert all(TOKEN not in url for url, _ in seen["requests"]), seen["requests"]
    sent = [(url, header) for url, header in seen["requests"] if "/invocations" in url]
    assert len(sent) == 2 and all(header == f"Bearer {TOKEN}" for _, header in sent)
    assert (tab.url.rstrip("/"), 401) in [(u.rstrip("/"), s) for u, s in seen["responses"]]
    # the metadata's script and onerror payloads are text here too
    tab.wait_for_timeout(300)
    assert seen["dialogs"] == [] and tab.evaluate("window.__xss") is None
    assert tab.evaluate("document.body.getAttribute('data-pwned')") is None
    assert tab.evaluate("document.querySelectorAll('img').length") == 0
    assert tab.evaluate("[...document.scripts].map(s => s.getAttribute('src'))") == ["/static/card.js"]
    shot = tmp_path / "model-card-with-token.png"
    tab.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_the_token_lasts_for_the_tab_and_is_forgotten_on_request(locked):
    tab, context, _, _ = locked
    _give_token(tab, TOKEN)
    tab.reload()
    tab.wait_for_function("() => document.querySelectorAll('section.model').length === 2")  # unlocked from the tab
    other = context.new_page()  # another tab: sessionStorage is the tab's own
    other.goto(tab.url)
    other.wait_for_load_state("networkidle")
    assert other.locator("section.model").count() == 0 and other.locator("form.token input").is_visible()
    with tab.expect_navigation():
        tab.locator("form.token button.forget").click()
    tab.wait_for_load_state("networkidle")
    assert tab.locator("section.model").count() == 0
    assert tab.evaluate("sessionStorage.getItem('modelsafe.token')") is None


def test_a_prediction_refused_with_401_says_why_and_asks_again(locked):
    tab, _, _, _ = locked
    _give_token(tab, TOKEN)
    tab.evaluate("sessionStorage.setItem('modelsafe.token', 'a-token-the-server-no-longer-takes')")
    form = _predict(tab, "pipe", json.dumps({"dataframe_records": ROWS.to_dict(orient="records")}))
    message = form.locator(".error").inner_text()
    assert message.startswith("The server refused the token (HTTP 401)") and "top of the page" in message
    assert form.locator(".result").inner_text() == ""
    assert tab.locator("form.token input[name=token]").is_visible()
    assert tab.evaluate("sessionStorage.getItem('modelsafe.token')") is None
    _give_token(tab, TOKEN)  # given again: the card comes back and predicts
    form = _predict(tab, "forest", json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}))
    assert form.locator(".error").inner_text() == "" and json.loads(form.locator(".result").inner_text())


def test_only_a_browser_gets_the_page_and_only_the_assets_are_open(token_server):
    import httpx

    html = httpx.get(token_server.url + "/", headers={"Accept": "text/html,application/xhtml+xml"}, timeout=30)
    assert html.status_code == 401 and html.headers["www-authenticate"] == "Bearer"
    assert html.headers["content-type"].startswith("text/html") and html.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in html.headers["content-security-policy"]
    assert 'form class="token"' in html.text and "pipe" not in html.text
    api = httpx.get(token_server.url + "/", timeout=30)  # an API client: the JSON error
    assert api.status_code == 401 and api.json()["error"]["type"] == "AuthenticationError"
    for asset in ("/static/card.js", "/static/card.css"):
        assert httpx.get(token_server.url + asset, timeout=30).status_code == 200, asset
    assert httpx.get(token_server.url + "/docs", headers={"Accept": "text/html"}, timeout=30).status_code == 401
    authorized = httpx.get(token_server.url + "/", headers={"Authorization": f"Bearer {TOKEN}",
                                                            "Accept": "text/html"}, timeout=30)
    assert authorized.status_code == 200 and 'id="model-pipe"' in authorized.text
