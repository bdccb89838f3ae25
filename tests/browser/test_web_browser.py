"""The status page in a real browser (issue 6): Debian's headless Chromium driven by Playwright.

The live test mounts the page in the real UPnP HTTP app (`igd.soap.routes.build_app`, with its
LAN-source, Host and Origin gates) on 127.0.0.1, adds a mapping with a real SOAP AddPortMapping
and checks that its row appears without a reload, then removes it with DeletePortMapping and
checks that the row goes. Screenshots of that page (light, dark, narrow) are kept in
build/test-artefacts/. The admin test runs the page in an app of its own: the UPnP app's gate
refuses any request with an Origin header, which browsers send on every POST.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from xml.sax.saxutils import escape

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from igd.natcore import (
    ADMIN,
    Client,
    IPProtocol,
    MappingRequest,
    MemoryStore,
    Origin,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.soap.routes import UpnpHttpConfig, build_app
from igd.upnp import DeviceInfo, RootDevice
from igd.web.routes import StatusPage

pytest.importorskip("playwright.async_api", reason="playwright is not installed (the test extra)")
from playwright.async_api import BrowserContext, ConsoleMessage, Page, expect

TOKEN = "browser-test-admin-token-42"
CONTROL = "/igd2/WANIPConnection/control"
WANIP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>&amp;'
ROOT = RootDevice.create(2, uuid.UUID("6c4a3e8f-2f1d-4b8e-9a57-1d0c5e7b3a21"), "/igd2")


class Wan:
    """A WAN link moving a steady trickle of traffic, for the counters and rates on the page."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def counters(self) -> tuple[int, int, int, int]:
        elapsed = time.monotonic() - self.started
        return (
            3_214_000_000 + int(182_000 * elapsed),
            41_870_000_000 + int(2_430_000 * elapsed),
            9_120_000 + int(410 * elapsed),
            31_400_000 + int(1_730 * elapsed),
        )

    def link_up(self) -> bool:
        return True

    def max_bit_rates(self) -> tuple[int, int]:
        return (100_000_000, 1_000_000_000)


@pytest.fixture
async def lab_core() -> AsyncIterator[SharingManager]:
    """wan0 public; lan0 (the lab LAN) and lo (where the test's UPnP requests come from) private."""
    source = StaticConnectionSource(
        [
            make_connection("wan0", addresses=["198.19.0.1/24"]),
            make_connection("lan0", addresses=["198.18.0.1/24"]),
            make_connection("lo", addresses=["127.0.0.1/8"], loopback=True),
        ]
    )
    core = await SharingManager.open(backend=MemoryBackend(), store=MemoryStore(), source=source)
    try:
        wan0, lan0, lo = (core.find_connection(name=n) for n in ("wan0", "lan0", "lo"))
        await core.share(wan0, lan0)
        await core.enable_sharing(lo.guid, SharingConnectionType.PRIVATE)
        yield core
    finally:
        await core.aclose()


async def populate(core: SharingManager) -> None:
    """A few mappings as a home network makes them, from every mechanism."""
    lab = IPv4Address("198.18.0.10")
    console = IPv4Address("198.18.0.11")
    phone = IPv4Address("198.18.0.12")
    for request, client in [
        (
            MappingRequest(IPProtocol.TCP, 51413, lab, 51413, "Transmission at 51413", lease=7200),
            Client(Origin.UPNP, lab),
        ),
        (
            MappingRequest(IPProtocol.UDP, 51413, lab, 51413, "Transmission at 51413", lease=7200),
            Client(Origin.UPNP, lab),
        ),
        (
            MappingRequest(IPProtocol.UDP, 3074, console, 3074, lease=3500),
            Client(Origin.NATPMP, console),
        ),
        (MappingRequest(IPProtocol.UDP, 9987, phone, 9987, lease=45), Client(Origin.PCP, phone)),
        (
            MappingRequest(
                IPProtocol.TCP, 8443, IPv4Address("198.18.0.20"), 8443, "Home Assistant"
            ),
            ADMIN,
        ),
    ]:
        await core.add_mapping(request, client)


@asynccontextmanager
async def upnp_server(core: SharingManager, title: str = "igd") -> AsyncIterator[TestServer]:
    """The real UPnP HTTP app with the (read-only) status page in it, as the daemon serves it."""
    wan = Wan()
    page = StatusPage(core, wan_counters=wan.counters, admin_token=None, title=title)
    app = build_app(
        UpnpHttpConfig(
            core=core,
            roots=(ROOT,),
            device_info=DeviceInfo(
                friendly_name="igd browser test",
                manufacturer="igd",
                model_name="igd",
                model_number="0.1.0",
                presentation_url=f"{page.base_path}/",
            ),
            wan=wan,
            lan_networks=(IPv4Network("127.0.0.0/8"),),
            allowed_hosts=frozenset({"127.0.0.1"}),
            server="Linux/6.1 UPnP/1.1 igd/0.1.0",
            allow_private_external=True,
        )
    )
    page.install(app)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def page_server(page: StatusPage) -> AsyncIterator[TestServer]:
    """The status page alone in an app."""
    app = web.Application()
    page.install(app)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def soap(server: TestServer, action: str, args: str) -> int:
    """One SOAP call on WANIPConnection:2 from 127.0.0.1; the HTTP status."""
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action} xmlns:u="{WANIP2}">{args}</u:{action}></s:Body></s:Envelope>'
    )
    headers = {"SOAPAction": f'"{WANIP2}#{action}"', "Content-Type": 'text/xml; charset="utf-8"'}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(server.make_url(CONTROL), data=body.encode(), headers=headers) as response,
    ):
        return response.status


def add_args(port: int, description: str, lease: int = 3600) -> str:
    return (
        f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{port}</NewExternalPort>"
        f"<NewProtocol>TCP</NewProtocol><NewInternalPort>{port}</NewInternalPort>"
        "<NewInternalClient>127.0.0.1</NewInternalClient><NewEnabled>1</NewEnabled>"
        f"<NewPortMappingDescription>{escape(description)}</NewPortMappingDescription>"
        f"<NewLeaseDuration>{lease}</NewLeaseDuration>"
    )


def delete_args(port: int) -> str:
    return (
        f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{port}</NewExternalPort>"
        "<NewProtocol>TCP</NewProtocol>"
    )


class Watched:
    """A page and what it did: page loads (documents fetched) and console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.documents = 0
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _request(self, request: object) -> None:
        if getattr(request, "resource_type", None) == "document":
            self.documents += 1

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


async def open_status(browser: BrowserContext, url: str) -> Watched:
    """Open the page and wait until its live stream is up."""
    page = await browser.new_page()
    watched = Watched(page)
    await page.goto(url)
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")
    await page.evaluate("window.__sameDocument = true")
    return watched


async def assert_not_reloaded(watched: Watched) -> None:
    assert watched.documents == 1
    assert await watched.page.evaluate("window.__sameDocument === true")


async def screenshot(page: Page, path: Path) -> None:
    await page.screenshot(path=str(path), full_page=True, animations="disabled")
    print(f"status page screenshot: {path}")


async def test_mapping_added_over_upnp_appears_live_and_goes_when_deleted(
    browser: BrowserContext, lab_core: SharingManager, artefacts: Path
) -> None:
    await populate(lab_core)
    async with upnp_server(lab_core, title="Home gateway") as server:
        watched = await open_status(browser, str(server.make_url("/status/")))
        page = watched.page
        rows = page.locator("#mapping-rows tr")
        await expect(rows).to_have_count(5)
        await expect(page.locator("#external-address")).to_have_text("198.19.0.1")
        await expect(page.locator("#admin-toggle")).to_have_text("Read-only")
        await expect(page.locator("#admin-toggle")).to_be_disabled()
        await expect(page.locator("#mapping-rows button")).to_have_count(0)

        assert await soap(server, "AddPortMapping", add_args(40000, "Game server")) == 200
        row = page.locator('#mapping-rows tr[data-id="TCP/40000"]')
        await expect(row).to_be_visible()
        await expect(rows).to_have_count(6)
        await expect(row.locator("td.description")).to_have_text("Game server")
        await expect(row.locator("td.target")).to_have_text("127.0.0.1:40000")
        await expect(row).to_contain_text("UPnP")
        await expect(page.locator("#mapping-count")).to_have_text("6")
        await assert_not_reloaded(watched)

        # The lease counts down in place; the traffic rates appear from the counter updates.
        time_cell = row.locator("td.time")
        first = await time_cell.text_content()
        await expect(time_cell).not_to_have_text(first or "", timeout=4000)
        await expect(page.locator("#rate-received")).to_contain_text("/s", timeout=8000)

        await screenshot(page, artefacts / "status-page.png")
        await page.emulate_media(color_scheme="dark")
        await screenshot(page, artefacts / "status-page-dark.png")
        await page.emulate_media(color_scheme="light")
        await page.set_viewport_size({"width": 390, "height": 844})
        await screenshot(page, artefacts / "status-page-narrow.png")
        await page.set_viewport_size({"width": 1280, "height": 900})

        # Sorting by a column reorders the rows in place.
        await page.locator('th[data-sort="external_port"] button').click()
        await expect(page.locator('th[data-sort="external_port"]')).to_have_attribute(
            "aria-sort", "descending"
        )
        await expect(rows.first).to_have_attribute("data-id", "TCP/51413")

        assert await soap(server, "DeletePortMapping", delete_args(40000)) == 200
        await expect(row).to_have_count(0)
        await expect(rows).to_have_count(5)
        await expect(page.locator("#mapping-count")).to_have_text("5")
        await assert_not_reloaded(watched)
        assert watched.errors == []


async def test_hostile_description_is_shown_as_text(
    browser: BrowserContext, lab_core: SharingManager
) -> None:
    async with upnp_server(lab_core) as server:
        watched = await open_status(browser, str(server.make_url("/status/")))
        page = watched.page
        assert await soap(server, "AddPortMapping", add_args(40001, HOSTILE)) == 200
        cell = page.locator('#mapping-rows tr[data-id="TCP/40001"] td.description')
        await expect(cell).to_have_text(HOSTILE)
        await expect(page.locator("#mapping-rows img, #mapping-rows script")).to_have_count(0)
        assert await page.evaluate("window.__pwned === undefined")
        await page.locator("#filter").fill("onerror")
        await expect(page.locator("#mapping-rows tr")).to_have_count(1)
        await page.locator("#filter").fill("nothing matches this")
        await expect(page.locator("#mapping-rows tr")).to_have_count(0)
        await expect(page.locator("#mappings-empty")).to_contain_text("matches the filter")
        assert watched.errors == []


async def test_admin_deletes_a_mapping_from_the_page(
    browser: BrowserContext, lab_core: SharingManager, artefacts: Path
) -> None:
    host = IPv4Address("198.18.0.10")
    await lab_core.add_mapping(
        MappingRequest(IPProtocol.TCP, 40002, host, 40002, "to delete", lease=600),
        Client(Origin.UPNP, host),
    )
    async with page_server(StatusPage(lab_core, admin_token=TOKEN)) as server:
        watched = await open_status(browser, str(server.make_url("/status/")))
        page = watched.page
        row = page.locator('#mapping-rows tr[data-id="TCP/40002"]')
        await expect(row).to_be_visible()
        await expect(row.locator("button")).to_have_count(0)

        toggle = page.locator("#admin-toggle")
        await expect(toggle).to_have_text("Unlock")
        await toggle.click()
        await page.locator("#admin-token").fill("not-the-token-not-the-token")
        await page.locator("#admin-form button[type=submit]").click()
        await expect(page.locator("#admin-hint")).to_have_text("That token was not accepted.")
        await expect(row.locator("button")).to_have_count(0)

        await page.locator("#admin-token").fill(TOKEN)
        await page.locator("#admin-form button[type=submit]").click()
        await expect(toggle).to_have_text("Admin")
        assert await page.evaluate("sessionStorage.getItem('igd.adminToken')") == TOKEN
        await expect(page.locator(".sharing-form select")).to_have_count(3)
        await screenshot(page, artefacts / "status-page-admin.png")
        delete = row.get_by_role("button", name="Delete")
        await delete.click()
        await expect(row.get_by_role("button", name="Confirm")).to_be_visible()
        assert lab_core.mapping_count == 1  # the first click only arms the button
        await row.get_by_role("button", name="Confirm").click()
        await expect(row).to_have_count(0)
        assert lab_core.mapping_count == 0
        await expect(page.locator("#toasts")).to_contain_text("Deleted TCP 40002")
        await assert_not_reloaded(watched)
        # Only the refused unlock attempt logged a failed request.
        assert all("401" in error for error in watched.errors), watched.errors
