"""A real headless Chromium for the admin page's tests: Debian's chromium and chromium-driver
(tests/run.sh installs them as root), driven by Selenium, with a fresh profile, no network
beyond what the page asks for, and nothing downloaded at run time. Screenshots are kept under
the test's tmp path and named in the test output."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium tries to reach Google's services.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-proxy-server",
         "--window-size=1280,900")


class Browser:
    def __init__(self, driver: webdriver.Chrome, shots: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.driver = driver
        self.shots = shots
        self.capsys = capsys

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def path(self) -> str:
        url = self.driver.current_url
        return "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url

    @property
    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def fill(self, name: str, value: str) -> None:
        element = self.find(f'[name="{name}"]')
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)

    def click(self, css: str) -> None:
        self.find(css).click()

    def button(self, text: str) -> None:
        """Click the button (or link) showing `text`."""
        self.driver.find_element(
            By.XPATH, f'//button[normalize-space()="{text}"] | //a[normalize-space()="{text}"]').click()

    def wait_for_text(self, text: str, timeout: float = 30) -> None:
        WebDriverWait(self.driver, timeout, poll_frequency=0.2,  # a page being replaced
                      ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(
            lambda _driver: text in self.text, f"{text!r} never appeared on {self.path}")

    def screenshot(self, name: str) -> Path:
        """The whole page as PNG under the test's tmp path; its path goes to the test output."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        with self.capsys.disabled():
            print(f"\nscreenshot: {path}")
        return path


@pytest.fixture
def browser(tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (tests/run.sh "
                    "installs them as root)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield Browser(driver, tmp_path, capsys)
    finally:
        driver.quit()
