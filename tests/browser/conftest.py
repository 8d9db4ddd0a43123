"""Fixtures of the browser tests: a real headless Chromium driven by Selenium (Debian's
``chromium`` and ``chromium-driver``; ``.ci/run`` installs them when missing), the API and
UI served by uvicorn on PostgreSQL (tests/support/api.py), and a folder for screenshots.

Without Chromium the tests are skipped on a laptop and fail under ``CI`` (as a missing
service does, tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import in_ci

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
#: how long a test waits for something to show in the page (seconds)
WAIT = 15


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module's tests (cookies are cleared between them)."""
    missing = [str(p) for p in (CHROMEDRIVER, CHROMIUM) if not p.exists()]
    if missing:
        message = (f"{', '.join(missing)} not found: apt-get install -y chromium "
                   "chromium-driver")
        if in_ci():
            pytest.fail(f"{message}; CI is set, so this is an error, not a skip",
                        pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1440,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$SQUALL_TEST_ARTIFACTS`` (made if needed), else tmp_path."""
    folder = Path(os.environ.get("SQUALL_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
