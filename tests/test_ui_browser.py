"""The stock MLflow UI in a real browser (headless Chromium from Debian's packages): tenant A's
user logs in with HTTP Basic (the key as password), sees A's experiment and run, and does
not see B's. A screenshot is saved under the test's temporary folder.
"""

from __future__ import annotations

import secrets
import shutil
import time
from urllib.parse import urlsplit

import pytest
from mlflow import MlflowClient

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    assert CHROMIUM and CHROMEDRIVER, "install Debian's chromium and chromium-driver (make test)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'chrome-profile'}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_for_text(driver, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not shown within {timeout}s; page shows:\n{body[:2000]}")


def test_tenant_user_sees_only_own_experiments_in_the_ui(
    tenant_server, make_tenant, browser, tmp_path, monkeypatch
):
    tenant_a, key_a = make_tenant("editor")
    _tenant_b, key_b = make_tenant("editor")
    mark = secrets.token_hex(3)
    names = {}
    for label, key in (("alpha", key_a), ("bravo", key_b)):
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
        client = MlflowClient(tracking_uri=tenant_server.url)
        exp = client.create_experiment(f"{label}-exp-{mark}")
        run = client.create_run(exp, run_name=f"{label}-run-{mark}")
        client.set_terminated(run.info.run_id)
        names[label] = (exp, run.info.run_id)

    host = urlsplit(tenant_server.url).netloc
    # Log in as a browser does after the Basic challenge: the credentials are cached for the
    # origin and sent with the UI's requests (a page URL may not carry them itself).
    browser.get(f"http://user:{key_a}@{host}/api/2.0/tenants/whoami")
    assert tenant_a in browser.find_element("tag name", "body").text
    # The UI's workspace picker lists only the user's own tenant; pick it.
    browser.get(f"http://{host}/")
    body = _wait_for_text(browser, "Select a workspace")
    assert tenant_a in body and _tenant_b not in body
    next(e for e in browser.find_elements("xpath", f"//*[text()='{tenant_a}']")
         if e.is_displayed()).click()
    _wait_for_text(browser, "Experiments")
    browser.get(f"http://{host}/?workspace={tenant_a}#/experiments")
    body = _wait_for_text(browser, f"alpha-exp-{mark}")
    assert f"bravo-exp-{mark}" not in body

    exp_a, _run_a = names["alpha"]
    browser.get(f"http://{host}/?workspace={tenant_a}#/experiments/{exp_a}/runs")
    body = _wait_for_text(browser, f"alpha-run-{mark}")
    assert f"bravo-run-{mark}" not in body
    shot = tmp_path / f"ui-{tenant_a}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 0

    exp_b, _run_b = names["bravo"]
    browser.get(f"http://{host}/?workspace={tenant_a}#/experiments/{exp_b}/runs")
    time.sleep(3)
    assert f"bravo-run-{mark}" not in browser.find_element("tag name", "body").text
