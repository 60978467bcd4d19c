"""Scrape: per-page time of the pooled browser fetcher vs a new Chromium per URL, in one run.

Both read the same pages from loopback (an article whose text a script writes, so the browser
has real work) with Debian's headless Chromium through ``/usr/bin/chromedriver``:

* **pooled**: ``service.steps.browser.BrowserFetcher``, what ``MAILGATE_FETCHER=browser`` runs:
  one Chromium that lives as long as the fetcher, every request through the guarded proxy,
  parked on ``about:blank`` after each page. Timed per page after one warm-up page that starts
  the browser (its start is shown apart).
* **per URL**: what the example Mailgate grew from did, ``webdriver.Chrome()`` started, one
  ``get`` and ``page_source``, then ``quit()`` for every URL (the same headless flags as the
  tests' browser).

The text is extracted the same way for both, and checked to be the same.

Usage: ``python -m bench.scrape [--pages 20]`` (~1 min with the default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browsers import headless_chromium  # noqa: E402  (tests/: Debian's Chromium, throwaway profile)
from support import PageServer  # noqa: E402

from service.steps.browser import BrowserFetcher  # noqa: E402
from service.steps.fetch import extract_text  # noqa: E402

PAGE = """<!doctype html><html><head><title>Tide pools {n}</title></head><body>
<nav>Home | About</nav><main id="app"></main>
<script>
  const text = ["Tide pools are rocky hollows that keep sea water when the tide goes out.",
    "They shelter anemones, sea stars and small fish, which must survive heat and salt.",
    "Visitors should step only on bare rock and never lift animals out of the water."];
  for (const line of text) {{
    const p = document.createElement("p");
    p.textContent = line + " (page {n})";
    document.getElementById("app").appendChild(p);
  }}
</script></body></html>"""


@dataclass
class Result:
    pages: int
    pooled_first_s: float
    pooled_s: list[float]
    per_url_s: list[float]

    @property
    def pooled_median_s(self) -> float:
        return statistics.median(self.pooled_s)

    @property
    def per_url_median_s(self) -> float:
        return statistics.median(self.per_url_s)

    @property
    def ratio(self) -> float:
        """How many times faster a page is with the pooled browser."""
        return self.per_url_median_s / self.pooled_median_s


def per_url(url: str) -> str:
    """The example's way: a new browser for this one URL."""
    with headless_chromium() as driver:
        driver.get(url)
        return extract_text(driver.page_source)


async def run(pages: int = 20) -> Result:
    server = PageServer()
    server.start()
    urls = [server.add(f"/page/{n}", PAGE.format(n=n)) for n in range(pages + 1)]
    fetcher = BrowserFetcher(allow_private=True, max_bytes=1_000_000, timeout_s=20, attempts=1)
    try:
        started = time.perf_counter()
        expected = [await fetcher.fetch(urls[0])]
        first_s = time.perf_counter() - started
        pooled = []
        for url in urls[1:]:
            started = time.perf_counter()
            expected.append(await fetcher.fetch(url))
            pooled.append(time.perf_counter() - started)
        fresh = []
        for n, url in enumerate(urls[1:], start=1):
            started = time.perf_counter()
            text = await asyncio.to_thread(per_url, url)
            fresh.append(time.perf_counter() - started)
            assert text == expected[n], (text, expected[n])
    finally:
        await fetcher.close()
        server.stop()
    return Result(pages, first_s, pooled, fresh)


def report(result: Result) -> None:
    print(f"{result.pages} pages from loopback, text written by JavaScript, one at a time")
    print("| measurement | result | target |\n|---|---:|---:|")
    first_ms = result.pooled_first_s * 1000
    print(f"| pooled browser, first page (starts Chromium), ms | {first_ms:.0f} | |")
    print(f"| pooled browser, per page p50, ms | {result.pooled_median_s * 1000:.0f} | |")
    print(f"| new Chromium per URL, per page p50, ms | {result.per_url_median_s * 1000:.0f} | |")
    print(f"| **ratio per URL / pooled** | **{result.ratio:.1f}** | ≥ 3 |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20)
    report(asyncio.run(run(parser.parse_args().pages)))
