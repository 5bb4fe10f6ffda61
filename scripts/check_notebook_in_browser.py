"""Open the exercise in JupyterLab in headless Chromium: screenshots, and do the figures show?

    python scripts/check_notebook_in_browser.py --out /tmp/notebook-look

Run it after changing how the notebook looks (its text, its figures in imgs/). It starts a
private JupyterLab server (see lab_server.py), opens the notebook in Debian's Chromium through
Selenium and Debian's chromedriver (`apt-get install chromium chromium-driver`; selenium is in
the dev extra), and writes to --out a screenshot of Part 1's top (part1_top.png) and one of
each figure the notebook shows from imgs/ (figure_<name>.png). It fails, naming them, if a
figure is missing from the page or did not load (a broken-image icon has natural width 0).
Not part of `make test`: CI has no browser.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from lab_server import LabServer  # scripts/, this script's folder

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"\]\((imgs/[^)\s]+)\)|src=\"(imgs/[^\"]+)\"")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--window-size=1400,1000", "--hide-scrollbars"]


def figures_in(notebook: Path) -> list[str]:
    """The imgs/ paths the notebook's Markdown shows, in order."""
    text = notebook.read_text()
    return list(dict.fromkeys(a or b for a, b in FIGURE.findall(text)))


def open_browser(chromium: str, chromedriver: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    # both paths given, so Selenium neither looks for nor downloads a browser or driver
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def scroll_to(browser, element) -> None:
    """Bring `element` to the top of the notebook and let the page settle."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
    time.sleep(1.5)


def check_figure(browser, path: str, out: Path, timeout: float) -> str | None:
    """Scroll to the figure showing `path` and screenshot it; a problem, or None if it shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    images = [image for image in browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedMarkdown img")
              if (image.get_attribute("src") or "").split("?")[0].endswith(path)]
    if not images:
        return f"{path}: not in the page"
    image = images[0]
    scroll_to(browser, image)
    WebDriverWait(browser, timeout).until(lambda _: image.get_property("complete"))
    width, height = image.get_property("naturalWidth"), image.get_property("naturalHeight")
    browser.save_screenshot(str(out / f"figure_{Path(path).stem}.png"))
    print(f"{path}: {width} x {height} px (natural size), shown at "
          f"{image.size['width']} x {image.size['height']}")
    return None if width and height else f"{path}: did not load (a broken-image icon)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the screenshots")
    parser.add_argument("--notebook", default="exercise.ipynb", help="relative to the repository")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the page")
    args = parser.parse_args(argv)
    for option, path in [("--chromium", args.chromium), ("--chromedriver", args.chromedriver)]:
        if not Path(path).is_file():
            sys.exit(f"{option} {path} does not exist; on Debian: "
                     "apt-get install -y chromium chromium-driver")
    if not (ROOT / args.notebook).is_file():
        sys.exit(f"--notebook {args.notebook}: no such file in {ROOT}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit("selenium is missing: pip install -e '.[dev]' (or pip install selenium)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    args.out.mkdir(parents=True, exist_ok=True)
    part_1 = (By.XPATH, "//div[contains(@class, 'jp-RenderedMarkdown')]"
                        "//h2[starts-with(normalize-space(.), 'Part 1')]")
    with tempfile.TemporaryDirectory(prefix="notebook-in-browser-") as scratch:
        scratch = Path(scratch)
        with LabServer(ROOT, scratch / "jupyter") as server:
            browser = open_browser(args.chromium, args.chromedriver, scratch / "chromium")
            try:
                browser.get(f"{server.url}/lab/tree/{args.notebook}?token={server.token}")
                heading = WebDriverWait(browser, args.timeout).until(
                    ready.presence_of_element_located(part_1))
                scroll_to(browser, heading)
                browser.save_screenshot(str(args.out / "part1_top.png"))
                print(f"Part 1's top: {args.out / 'part1_top.png'}")
                problems = [check_figure(browser, path, args.out, args.timeout)
                            for path in figures_in(ROOT / args.notebook)]
            finally:
                browser.quit()
    problems = [p for p in problems if p]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
