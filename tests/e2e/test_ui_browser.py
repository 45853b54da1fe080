"""The MLflow UI in a real browser: headless Chromium finds a run by name, its per-split metrics and its plots.

Debian's ``chromium`` and ``chromium-driver`` drive the page through Selenium
(``.ci/run`` installs them where missing). Screenshots go to the test's
output folder, and also to ``$NORMLAB_SCREENSHOT_DIR`` when set (that is how
``docs/img/`` is refreshed for the README).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_SECONDS = 45
SPLITS = ("id/test", "ood/noise", "ood/contrast", "ood/rotation")


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with a fresh profile and no network of its own."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(driver), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    extra = os.environ.get("NORMLAB_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / name)
    return path


def dismiss_popups(driver) -> None:
    """Close MLflow's first-visit hints and assistant panel, which cover the page."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Got it' or @aria-label='Close']"):
        if button.is_displayed():
            button.click()


def test_run_found_by_name_shows_per_split_metrics_and_plots(server_runs, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_SECONDS)
    name = server_runs.run_names[0]
    client = MlflowClient(tracking_uri=server_runs.server.url)
    exp = client.get_experiment_by_name("normlab")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")

    # 1. The experiment's runs, filtered by the run's name.
    browser.get(f"{server_runs.server.url}/#/experiments/{exp.experiment_id}/runs")
    search = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "input[data-testid='search-box']")))
    dismiss_popups(browser)
    search.send_keys(f"attributes.run_name = '{name}'", Keys.ENTER)
    link = wait.until(ec.element_to_be_clickable((By.XPATH, f"//a[normalize-space()='{name}']")))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "1 matching run"))
    assert not browser.find_elements(By.XPATH, f"//a[normalize-space()='{server_runs.run_names[1]}']")

    # 2. The run page: per-split accuracies, as MLflow stored them.
    link.click()
    wait.until(ec.url_contains(run.info.run_id))
    metric_search = wait.until(ec.element_to_be_clickable((By.XPATH, "//input[@placeholder='Search metrics']")))
    dismiss_popups(browser)
    metric_search.send_keys("accuracy")
    for split in SPLITS:
        key = f"{split}/accuracy"
        row = wait.until(ec.visibility_of_element_located(
            (By.XPATH, f"//div[@role='row'][.//*[normalize-space()='{key}']]")))
        assert repr(run.data.metrics[key]) in row.text, (key, row.text)
    save_screenshot(browser, tmp_path, "mlflow-run-metrics.png")

    # 3. The learning curves plot, rendered from the server's artifact store.
    browser.find_element(By.XPATH, "//*[@role='tab' and normalize-space()='Artifacts']").click()
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[normalize-space()='plots']"))).click()
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[normalize-space()='learning_curves.png']"))).click()
    # The UI fetches the file from the server and shows it from a blob: URL.
    image = wait.until(ec.visibility_of_any_elements_located((By.XPATH, "//img[starts-with(@src, 'blob:')]")))[0]
    wait.until(lambda _: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 200
    shot = save_screenshot(browser, tmp_path, "mlflow-run-plots.png")
    assert shot.stat().st_size > 10_000
