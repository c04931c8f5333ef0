"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium.

The review pages' tests and ``bench/review.py`` open pages in it. Selenium is told the
Debian driver's path, so selenium-manager never downloads a browser or a driver.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEBIAN_PACKAGES = "chromium chromium-driver"
# Root in a container: no sandbox; and nothing that reaches the network on its own.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--hide-scrollbars",
         "--lang=ja")


def missing() -> str | None:
    """Why Chromium cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} not found: apt-get install {DEBIAN_PACKAGES} (make test does)"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Chrome]:
    """A headless Chromium whose viewport is ``width`` x ``height`` CSS pixels, at one
    device pixel per CSS pixel (so screenshot pixels are page coordinates)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if reason := missing():
        raise FileNotFoundError(reason)
    with tempfile.TemporaryDirectory(prefix="kz-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                  options=options)
        try:
            # The window size includes no browser chrome headless, but make sure.
            inner = driver.execute_script("return [innerWidth, innerHeight]")
            driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
            yield driver
        finally:
            driver.quit()
