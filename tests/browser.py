"""Opening a local HTML file in headless Chromium, as a person would, and reporting its images.

The Debian chromium and chromedriver (installed by infra/setup.sh) are named explicitly, so
Selenium never looks for, or downloads, a browser or a driver. Run as root on a closed network
Chromium needs --no-sandbox and has its background fetches turned off, else it can hang.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)

_IMAGES = """
return Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    shown: i.getBoundingClientRect().width
}));
"""


@dataclass(frozen=True)
class Image:
    alt: str
    complete: bool
    width: int  # naturalWidth: 0 when the image failed to decode
    height: int
    shown: float  # laid-out width in CSS pixels


@dataclass(frozen=True)
class RenderedPage:
    title: str
    images: tuple[Image, ...]
    text: str


def render(page: Path, screenshot: Path, profile: Path, timeout: float = 60.0) -> RenderedPage:
    """Loads `page`, waits for its images, saves a full-page PNG to `screenshot`."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(timeout)
        driver.get(page.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while True:
            found = driver.execute_script(_IMAGES)
            if all(i["complete"] for i in found) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # Beyond the viewport: the whole report in one picture, as a reader scrolls through it.
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return RenderedPage(
            title=driver.title,
            images=tuple(Image(**i) for i in found),
            text=driver.find_element("tag name", "body").text,
        )
    finally:
        driver.quit()
