"""NOTIFY plans and BOOTID/CONFIGID rules: order, counts, headers, timings with an injected draw."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from igd.ssdp.matching import AdvertisedRoot, Advertisement, Reply
from igd.ssdp.messages import (
    BOOT_ID_MAX,
    CONFIG_ID_MAX,
    SSDP_HOST_V6_LINK,
    Notify,
    parse_datagram,
    parse_search_response,
)
from igd.ssdp.schedule import (
    ALIVE_REPEATS,
    DEFAULT_MAX_AGE_S,
    FIRST_SET_JITTER_MAX_S,
    SET_GAP_S,
    BootState,
    NotifyPlan,
    ScheduledDatagram,
    config_id_for,
    next_boot_id,
    next_readvertise_delay,
)

URN = "urn:schemas-upnp-org"
SERVER = "Linux/6.1 UPnP/1.1 igd/0.1.0"


def igd_root(version: int, location: str) -> AdvertisedRoot:
    """specs.md 1.2 advertisement set with UUIDs derived from the version."""
    root, wan, conn = (f"uuid:00000000-0000-4000-8000-0000000000{version}{i}" for i in range(3))
    v = version
    entries = [
        ("upnp:rootdevice", root),
        (root, root),
        (f"{URN}:device:InternetGatewayDevice:{v}", root),
        (wan, wan),
        (f"{URN}:device:WANDevice:{v}", wan),
        (conn, conn),
        (f"{URN}:device:WANConnectionDevice:{v}", conn),
        (f"{URN}:service:Layer3Forwarding:1", root),
        (f"{URN}:service:WANCommonInterfaceConfig:1", wan),
        (f"{URN}:service:WANIPConnection:{v}", conn),
    ]
    if version == 2:
        entries.append((f"{URN}:service:WANIPv6FirewallControl:1", conn))
    return AdvertisedRoot.from_advertisements(
        location,
        [Advertisement(nt, udn if nt == udn else f"{udn}::{nt}") for nt, udn in entries],
    )


LOC1 = "http://198.18.0.1:5000/igd1/rootDesc.xml"
LOC2 = "http://198.18.0.1:5000/igd2/rootDesc.xml"
ROOTS = (igd_root(1, LOC1), igd_root(2, LOC2))
MEMBERS = {(ad.nt, ad.usn) for root in ROOTS for ad in root.advertisements}
PLAN = NotifyPlan.of(ROOTS, BootState(boot_id=41, config_id=1337), SERVER)


class RecordingDraw:
    def __init__(self, fraction: float = 0.5) -> None:
        self.calls: list[tuple[float, float]] = []
        self.fraction = fraction

    def __call__(self, low: float, high: float) -> float:
        self.calls.append((low, high))
        return low + (high - low) * self.fraction


def notifies(messages: list[ScheduledDatagram]) -> list[tuple[float, Notify]]:
    parsed = []
    for delay, data in messages:
        assert len(data) < 1024
        message = parse_datagram(data)
        assert isinstance(message, Notify)
        parsed.append((delay, message))
    return parsed


# ---- BOOTID / CONFIGID --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "floor", "expected"),
    [
        (None, 0, 1),
        (0, 0, 1),
        (41, 0, 42),
        (41, 1_700_000_000, 1_700_000_000),
        (1_700_000_005, 1_700_000_000, 1_700_000_006),
        (BOOT_ID_MAX - 1, 0, BOOT_ID_MAX),
        (BOOT_ID_MAX, 0, 1),
        (None, BOOT_ID_MAX + 5, 1),
    ],
)
def test_next_boot_id(previous: int | None, floor: int, expected: int) -> None:
    """SSDP-09: increases on every start, stays 31-bit."""
    assert next_boot_id(previous, floor=floor) == expected


@given(st.none() | st.integers(min_value=0, max_value=BOOT_ID_MAX - 1))
def test_next_boot_id_increases(previous: int | None) -> None:
    value = next_boot_id(previous)
    assert 0 < value <= BOOT_ID_MAX
    assert previous is None or value > previous


@pytest.mark.parametrize(
    ("boot_id", "config_id"), [(-1, 0), (BOOT_ID_MAX + 1, 0), (0, -1), (0, CONFIG_ID_MAX + 1)]
)
def test_boot_state_validation(boot_id: int, config_id: int) -> None:
    with pytest.raises(ValueError, match="SSDP-"):
        BootState(boot_id=boot_id, config_id=config_id)


def test_config_id_for() -> None:
    """SSDP-10: same descriptions -> same CONFIGID; any change -> another, in 0..16777215."""
    docs = [b"<root>igd1</root>", b"<root>igd2</root>", b"<scpd/>"]
    value = config_id_for(docs)
    assert 0 <= value <= CONFIG_ID_MAX
    assert config_id_for(list(docs)) == value
    assert config_id_for([*docs[:2], b"<scpd />"]) != value
    assert config_id_for([b"ab", b"c"]) != config_id_for([b"a", b"bc"])
    assert config_id_for([]) == config_id_for(iter([]))


# ---- Start-up, periodic, shutdown ---------------------------------------------------------------


def test_startup_byebye_set_then_alive_sets() -> None:
    """SSDP-13/14/16, T-SSDP-17: whole byebye set before the first alive; alive sent twice."""
    draw = RecordingDraw(fraction=0.5)
    messages = PLAN.startup_messages(draw)
    assert draw.calls == [(0.0, FIRST_SET_JITTER_MAX_S)]
    parsed = notifies(messages)
    kinds = [message.nts for _, message in parsed]
    assert kinds == ["ssdp:byebye"] * 21 + ["ssdp:alive"] * 21 * ALIVE_REPEATS
    delays = [delay for delay, _ in parsed]
    assert delays == sorted(delays)
    start = FIRST_SET_JITTER_MAX_S / 2
    assert set(delays[:21]) == {start}
    for repeat in range(ALIVE_REPEATS):
        chunk = delays[21 * (repeat + 1) : 21 * (repeat + 2)]
        assert chunk == pytest.approx([start + (repeat + 1) * SET_GAP_S] * 21)
    for index in range(1 + ALIVE_REPEATS):
        one_set = parsed[21 * index : 21 * (index + 1)]
        assert {(message.nt, message.usn) for _, message in one_set} == MEMBERS


def test_alive_headers() -> None:
    """SSDP-05/06/09/10, T-SSDP-17 headers."""
    for _, message in notifies(PLAN.readvertise_messages()):
        assert message.header("HOST") == "239.255.255.250:1900"
        assert message.header("CACHE-CONTROL") == f"max-age={DEFAULT_MAX_AGE_S}"
        assert message.header("LOCATION") in (LOC1, LOC2)
        assert message.header("SERVER") == SERVER
        assert message.header("BOOTID.UPNP.ORG") == "41"
        assert message.header("CONFIGID.UPNP.ORG") == "1337"
        udn = (message.usn or "").split("::")[0]
        own = next(r for r in ROOTS if udn in {ad.usn.split("::")[0] for ad in r.advertisements})
        assert message.header("LOCATION") == own.location


def test_readvertise_messages_timing() -> None:
    messages = PLAN.readvertise_messages(start_s=2.0)
    assert len(messages) == 21 * ALIVE_REPEATS
    assert {delay for delay, _ in messages} == {2.0 + i * SET_GAP_S for i in range(ALIVE_REPEATS)}


@pytest.mark.parametrize("value", [-1.0, 5.0, math.nan])
def test_startup_jitter_is_clamped(value: float) -> None:
    messages = PLAN.startup_messages(lambda low, high: value)
    assert 0.0 <= messages[0].delay_s <= FIRST_SET_JITTER_MAX_S


def test_shutdown_is_the_byebye_set_with_running_bootid() -> None:
    """SSDP-17/18, T-SSDP-19."""
    parsed = notifies(PLAN.shutdown_messages())
    assert {(message.nt, message.usn) for _, message in parsed} == MEMBERS
    assert len(parsed) == 21
    for delay, message in parsed:
        assert delay == 0.0
        assert message.nts == "ssdp:byebye"
        assert message.header("BOOTID.UPNP.ORG") == "41"
        assert message.header("LOCATION") is None
        assert message.header("CACHE-CONTROL") is None


@given(
    max_age_s=st.integers(min_value=1, max_value=86_400),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_next_readvertise_delay_is_below_half_max_age(max_age_s: int, fraction: float) -> None:
    """SSDP-15: randomly distributed and below max-age / 2."""
    draw = RecordingDraw(fraction)
    delay = next_readvertise_delay(max_age_s, draw)
    assert max_age_s / 4 <= delay < max_age_s / 2
    assert draw.calls == [(max_age_s / 4, max_age_s / 2)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -5.0, 1e9])
def test_next_readvertise_delay_clamps_bad_draws(value: float) -> None:
    delay = next_readvertise_delay(1800, lambda low, high: value)
    assert 450.0 <= delay < 900.0


@pytest.mark.parametrize("max_age_s", [0, -1, math.nan])
def test_next_readvertise_delay_needs_positive_max_age(max_age_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        next_readvertise_delay(max_age_s, RecordingDraw())


# ---- Address change (SSDP-19/22) ----------------------------------------------------------------


def test_address_change_update_then_alive_with_new_bootid() -> None:
    new_roots = (
        igd_root(1, LOC1.replace("198.18.0.1", "198.18.0.2")),
        igd_root(2, LOC2.replace("198.18.0.1", "198.18.0.2")),
    )
    new = NotifyPlan.of(new_roots, BootState(boot_id=42, config_id=1337), SERVER)
    draw = RecordingDraw(fraction=0.0)
    parsed = notifies(PLAN.address_change_messages(new, draw))
    assert draw.calls == [(0.0, FIRST_SET_JITTER_MAX_S)]
    updates, alives = parsed[:21], parsed[21:]
    assert len(alives) == 21 * ALIVE_REPEATS
    for delay, message in updates:
        assert delay == 0.0
        assert message.nts == "ssdp:update"
        assert message.header("BOOTID.UPNP.ORG") == "41"
        assert message.header("NEXTBOOTID.UPNP.ORG") == "42"
        assert message.header("LOCATION") in (LOC1, LOC2)
    assert {(m.nt, m.usn) for _, m in updates} == MEMBERS
    for delay, message in alives:
        assert delay >= SET_GAP_S
        assert message.nts == "ssdp:alive"
        assert message.header("BOOTID.UPNP.ORG") == "42"
        assert "198.18.0.2" in (message.header("LOCATION") or "")


def test_address_change_needs_a_greater_bootid() -> None:
    same = NotifyPlan.of(ROOTS, BootState(boot_id=41, config_id=1), SERVER)
    with pytest.raises(ValueError, match="SSDP-19"):
        PLAN.address_change_messages(same, RecordingDraw())


# ---- Search responses from the plan, IPv6, limits -----------------------------------------------


def test_search_response_carries_plan_state() -> None:
    """SSDP-09: BOOTID/CONFIGID in responses equal those in NOTIFYs."""
    reply = Reply(
        st="upnp:rootdevice", usn=ROOTS[0].advertisements[0].usn, location=LOC1, delay_s=0
    )
    response = parse_search_response(
        PLAN.search_response(reply, date="Thu, 01 Jan 1970 00:00:00 GMT")
    )
    assert response.header("BOOTID.UPNP.ORG") == "41"
    assert response.header("CONFIGID.UPNP.ORG") == "1337"
    assert response.header("CACHE-CONTROL") == "max-age=1800"
    assert (response.st, response.location) == ("upnp:rootdevice", LOC1)


def test_ipv6_plan_and_nls() -> None:
    roots = (igd_root(2, "http://[fe80::1]:5000/igd2/rootDesc.xml"),)
    plan = NotifyPlan.of(
        roots, BootState(BOOT_ID_MAX, CONFIG_ID_MAX), "S" * 128, host=SSDP_HOST_V6_LINK, nls=True
    )
    for _, message in notifies(plan.startup_messages(RecordingDraw()) + plan.shutdown_messages()):
        assert message.header("HOST") == "[FF02::C]:1900"
        assert message.header("01-NLS") == str(BOOT_ID_MAX)


def test_plan_of_accepts_any_sequence() -> None:
    plan = NotifyPlan.of(list(ROOTS), PLAN.boot, SERVER)
    assert plan == PLAN
    assert isinstance(plan.roots, tuple)
