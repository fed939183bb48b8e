"""The analytics page in a real headless Chromium: the charts draw the seeded usage."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from django.conf import settings
from django.test import Client

from tests.analytics.conftest import Seeded
from tests.browser import Browser

pytestmark = pytest.mark.django_db(transaction=True)

# How many pixels of a chart's canvas are painted (not transparent), and how many carry the
# first series' colour (#4e79a7): bars drawn from data, not just axes and a legend.
PAINTED = """(() => {
  const out = {};
  for (const canvas of document.querySelectorAll('canvas')) {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0, first = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] > 0) painted++;
      if (Math.abs(pixels[i] - 0x4e) < 8 && Math.abs(pixels[i + 1] - 0x79) < 8
          && Math.abs(pixels[i + 2] - 0xa7) < 8 && pixels[i + 3] > 200) first++;
    }
    out[canvas.id] = {painted, first};
  }
  return out;
})()"""

SERIES = """Object.fromEntries(Object.entries(window.hepggCharts).map(([id, chart]) => [id,
  chart.data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + (b || 0), 0)])]))"""


def test_the_analytics_page_draws_its_charts_from_the_rollups(
    hepgg_server, staff, member, seeded: Seeded
) -> None:
    client = Client()
    client.force_login(staff)
    session = client.cookies["sessionid"].value
    server = hepgg_server()
    artifacts = settings.DATA_DIR / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / "analytics-dashboard.png"

    async def look() -> tuple[dict, dict, str]:
        async with Browser() as browser:
            page = await browser.page()
            await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=2700,
                            deviceScaleFactor=1, mobile=False)  # fmt: skip
            await page.call(
                "Network.setCookie", name="sessionid", value=session, url=server.base_url
            )
            await page.goto(
                f"{server.base_url}/admin/analytics/?account={member.account.public_id}"
            )
            await page.wait_for("document.body.dataset.chartsDrawn === '8'")
            series = await page.js(SERIES)
            painted = await page.js(PAINTED)
            text = await page.js("document.querySelector('#analytics').innerText")
            shot = await page.call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return series, painted, text

    series, painted, text = asyncio.run(look())
    print(f"\nscreenshot of the analytics page: {screenshot}")

    tokens = dict(series["chart-tokens-model"])
    # Day d (1..6): model n (1..3) used 1000*n*d in, 500*d out, 20000*n cache reads.
    assert tokens["claude-sonnet-5-5"] == sum(1000 * d + 500 * d + 20_000 for d in range(1, 7))
    assert set(tokens) == {"claude-sonnet-5-5", "claude-opus-4-8", "claude-haiku-5-5",
                           "cf-gpt-oss-20b"}  # fmt: skip
    assert dict(series["chart-tokens-machine"]).keys() == {"ada-laptop"}
    assert [label for label, _ in series["chart-cost-key"]] == ["ci · cf-gpt-oss-20b"]
    assert dict(series["chart-requests"])["requests"] == 24
    for chart in ("chart-tokens-model", "chart-cost-model", "chart-tokens-machine",
                  "chart-requests", "chart-latency"):  # fmt: skip
        assert painted[chart]["painted"] > 2000, (chart, painted[chart])
        assert painted[chart]["first"] > 50, (chart, painted[chart])
    assert "ada-laptop" in text and "42.0 %" in text and "session-0" in text
    assert json.dumps(series)  # the page's data is plain JSON
