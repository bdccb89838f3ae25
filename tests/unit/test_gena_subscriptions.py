"""GENA rules without sockets: headers, CALLBACK, TIMEOUT, SID table, SEQ (EVT-01..18, ST-09/10).

Time is a plain number passed in and SIDs come from a counter, so every case is deterministic.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingOf
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from igd.gena.notifier import (
    ENTRY_VARIABLES,
    EVENT_NS,
    build_propertyset,
    forced_variables,
)
from igd.gena.subscriptions import (
    DEFAULT_SETTINGS,
    MAX_CALLBACK_ENTRIES,
    MAX_CALLBACK_URL_BYTES,
    SEQ_MAX,
    Cancellation,
    GenaSettings,
    NewSubscription,
    Refusal,
    Renewal,
    Subscription,
    SubscriptionTable,
    following_seq,
    format_timeout,
    parse_callback_header,
    parse_request,
    parse_timeout,
    valid_callback_url,
)
from igd.natcore import (
    EventsDropped,
    ExternalAddressChanged,
    IPProtocol,
    Mapping,
    MappingAdded,
    MappingChanged,
    MappingRemoved,
    NumberOfEntriesChanged,
    RemovalReason,
    is_reportable_external,
)

A = IPv4Address("198.18.0.10")
B = IPv4Address("198.18.0.11")
CB_A = "http://198.18.0.10:5000/cb"
CB_B = "http://198.18.0.11:5000/cb"
KEY = "/igd2/WANIPConnection/event"
OTHER_KEY = "/igd2/Layer3Forwarding/event"


def counter_sids(start: int = 1) -> Callable[[], uuid.UUID]:
    """uuid 00000000-...-000000000001, ...: deterministic SIDs."""
    numbers = itertools.count(start)
    return lambda: uuid.UUID(int=next(numbers))


def sid(n: int) -> str:
    return f"uuid:{uuid.UUID(int=n)}"


def headers(**values: str | Sequence[str]) -> MappingOf[str, Sequence[str]]:
    return {k: (v,) if isinstance(v, str) else tuple(v) for k, v in values.items()}


def subscribed(result: Subscription | Refusal) -> Subscription:
    assert isinstance(result, Subscription), result
    return result


# ---- parse_request (EVT-04..07) -----------------------------------------------------------------


def test_new_subscription_parsed() -> None:
    """CALLBACK + NT + TIMEOUT (EVT-01); STATEVAR is ignored (EVT-17)."""
    parsed = parse_request(
        "SUBSCRIBE",
        headers(NT="upnp:event", CALLBACK=f"<{CB_A}><{CB_B}>", TIMEOUT="Second-1800"),
    )
    assert parsed == NewSubscription((CB_A, CB_B), 1800)
    assert parse_request(
        "SUBSCRIBE", headers(NT=" upnp:event ", CALLBACK=f"<{CB_A}>", STATEVAR="Foo")
    ) == NewSubscription((CB_A,), None)


@pytest.mark.parametrize(
    ("method", "given_headers", "refusal"),
    [
        ("SUBSCRIBE", {"CALLBACK": f"<{CB_A}>"}, Refusal.BAD_NT),  # EVT-04
        ("SUBSCRIBE", {"CALLBACK": f"<{CB_A}>", "NT": "upnp:foo"}, Refusal.BAD_NT),
        ("SUBSCRIBE", {"NT": "upnp:event"}, Refusal.NO_CALLBACK),
        ("SUBSCRIBE", {"NT": "upnp:event", "CALLBACK": CB_A}, Refusal.NO_VALID_CALLBACK),
        ("SUBSCRIBE", {"NT": "upnp:event", "CALLBACK": ""}, Refusal.NO_VALID_CALLBACK),
        ("SUBSCRIBE", {"SID": sid(1), "NT": "upnp:event"}, Refusal.SID_WITH_NT_OR_CALLBACK),
        ("SUBSCRIBE", {"SID": sid(1), "CALLBACK": f"<{CB_A}>"}, Refusal.SID_WITH_NT_OR_CALLBACK),
        ("SUBSCRIBE", {"SID": ""}, Refusal.MISSING_SID),  # EVT-06
        ("SUBSCRIBE", {"SID": "  "}, Refusal.MISSING_SID),
        ("UNSUBSCRIBE", {}, Refusal.MISSING_SID),  # EVT-07
        ("UNSUBSCRIBE", {"SID": ""}, Refusal.MISSING_SID),
        ("UNSUBSCRIBE", {"SID": sid(1), "NT": "upnp:event"}, Refusal.SID_WITH_NT_OR_CALLBACK),
        ("UNSUBSCRIBE", {"SID": sid(1), "CALLBACK": f"<{CB_A}>"}, Refusal.SID_WITH_NT_OR_CALLBACK),
        ("UNSUBSCRIBE", {"NT": "upnp:event"}, Refusal.SID_WITH_NT_OR_CALLBACK),
        ("SUBSCRIBE", {"SID": [sid(1), sid(2)]}, Refusal.DUPLICATE_HEADER),
        (
            "SUBSCRIBE",
            {"NT": "upnp:event", "CALLBACK": [f"<{CB_A}>", f"<{CB_A}>"]},
            Refusal.DUPLICATE_HEADER,
        ),
    ],
)
def test_request_refusals(
    method: str, given_headers: dict[str, str | list[str]], refusal: Refusal
) -> None:
    """Each malformed request gets its refusal (EVT-04..07)."""
    assert parse_request(method, headers(**given_headers)) is refusal


def test_renewal_and_cancellation_parsed() -> None:
    """SID alone (+ TIMEOUT) is a renewal; UNSUBSCRIBE with SID a cancellation (EVT-06/07)."""
    assert parse_request("SUBSCRIBE", headers(SID=sid(1), TIMEOUT="Second-300")) == Renewal(
        sid(1), 300
    )
    assert parse_request("SUBSCRIBE", headers(SID=f" {sid(1)} ")) == Renewal(sid(1), None)
    assert parse_request("UNSUBSCRIBE", headers(SID=sid(1))) == Cancellation(sid(1))


def test_parse_request_rejects_other_methods() -> None:
    """Only GENA methods reach the parser: anything else is a bug of ours."""
    with pytest.raises(ValueError, match="GENA"):
        parse_request("NOTIFY", {})


def test_refusal_statuses() -> None:
    """400 for SID+NT/CALLBACK, 503 when full, 412 for everything else (EVT-04..07, ST-10)."""
    statuses = {refusal: refusal.status for refusal in Refusal}
    assert statuses == {
        Refusal.SID_WITH_NT_OR_CALLBACK: 400,
        Refusal.DUPLICATE_HEADER: 400,
        Refusal.BAD_NT: 412,
        Refusal.NO_CALLBACK: 412,
        Refusal.NO_VALID_CALLBACK: 412,
        Refusal.MISSING_SID: 412,
        Refusal.UNKNOWN_SID: 412,
        Refusal.CLIENT_LIMIT: 412,
        Refusal.TABLE_FULL: 503,
    }


# ---- TIMEOUT (EVT-02/03) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Second-1800", 1800),
        ("second-60", 60),
        ("SECOND-0", 0),
        (" Second-7200 ", 7200),
        ("Second-00300", 300),
        ("Second-infinite", None),
        ("Second-INFINITE", None),
        (None, None),
        ("", None),
        ("Second-", None),
        ("Second--5", None),
        ("Second-1.5", None),
        ("1800", None),
        ("Second-12345678901234567890", 10**10),
        ("Second-" + "9" * 5000, 10**10),
    ],
)
def test_parse_timeout(value: str | None, seconds: int | None) -> None:
    """`Second-n`; infinite, absent or unreadable ask for the default (EVT-03)."""
    assert parse_timeout(value) == seconds


def test_format_timeout_is_never_infinite() -> None:
    """TIMEOUT answers are numeric (EVT-02)."""
    assert format_timeout(1800) == "Second-1800"


@pytest.mark.parametrize(
    ("requested", "granted"),
    [(None, 1800), (0, 1800), (60, 1800), (1800, 1800), (3600, 3600), (10**10, 7200)],
)
def test_timeout_clamped(requested: int | None, granted: int) -> None:
    """Clamped to [1800, 7200]; none asked is 1800 (EVT-03, ST-10)."""
    table = SubscriptionTable()
    assert table.grant_timeout(requested) == granted
    result = subscribed(table.subscribe(KEY, [CB_A], A, requested, 100.0, counter_sids()))
    assert (result.timeout_s, result.expires_at) == (granted, 100.0 + granted)


# ---- CALLBACK (EVT-01/12/13, ST-09) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "urls"),
    [
        (f"<{CB_A}>", (CB_A,)),
        (f"<{CB_A}><{CB_B}>", (CB_A, CB_B)),
        (f" <{CB_A}>\t<{CB_B}> ", (CB_A, CB_B)),
        ("<>", ("",)),
        (CB_A, ()),
        (f"<{CB_A}", ()),
        (f"<{CB_A}>x<{CB_B}>", ()),
        (f"<{CB_A}>,<{CB_B}>", ()),
        (f"<<{CB_A}>>", ()),
        ("", ()),
        ("<a>" * MAX_CALLBACK_ENTRIES, ("a",) * MAX_CALLBACK_ENTRIES),
        ("<a>" * (MAX_CALLBACK_ENTRIES + 1), ()),
    ],
)
def test_parse_callback_header(value: str, urls: tuple[str, ...]) -> None:
    """`<url1><url2>...` (EVT-01); anything else, or too many entries, gives nothing."""
    assert parse_callback_header(value) == urls


def _url_of_length(length: int) -> str:
    prefix = "http://198.18.0.10:5000/"
    return prefix + "a" * (length - len(prefix))


@pytest.mark.parametrize(
    "url",
    [
        CB_A,
        "http://198.18.0.10",
        "http://198.18.0.10/",
        "http://198.18.0.10:1/",
        "http://198.18.0.10:65535/x?y=1&z=%20",
        "HTTP://198.18.0.10:5000/cb",
        _url_of_length(MAX_CALLBACK_URL_BYTES),
    ],
)
def test_valid_callback_urls(url: str) -> None:
    """http + the subscriber's own IPv4 literal (EVT-13), <= 256 bytes (ST-09)."""
    assert valid_callback_url(url, A)


@pytest.mark.parametrize(
    "url",
    [
        CB_B,  # another LAN host (EVT-13)
        "http://203.0.113.5/x",  # the Internet (ST-09, CallStranger)
        "http://8.8.8.8/cb",
        "http://198.19.0.100/x",  # the WAN side (EVT-12)
        "https://198.18.0.10:5000/cb",
        "ftp://198.18.0.10/x",
        "file:///etc/passwd",
        "file://198.18.0.10/x",
        "http://host.example/cb",
        "http://localhost:5000/cb",
        "http://198.18.0.10.nip.io/cb",
        "http://user@198.18.0.10/cb",
        "http://198.18.0.10@203.0.113.5/cb",
        "http://[::ffff:198.18.0.10]/cb",
        "http://0xc6.18.0.10/cb",
        "http://3323068426/cb",
        "http://198.18.010/cb",
        "http://198.018.0.10/cb",
        "http://198.18.0.10:0/cb",
        "http://198.18.0.10:70000/cb",
        "http://198.18.0.10:/cb",
        "http://198.18.0.10:5000/c b",
        "http://198.18.0.10:5000/cb#frag",
        "http://198.18.0.10:5000/c\u00e9",
        "http://198.18.0.10:5000\\cb",
        "http:/198.18.0.10/cb",
        "//198.18.0.10/cb",
        "",
        _url_of_length(MAX_CALLBACK_URL_BYTES + 1),
    ],
)
def test_invalid_callback_urls(url: str) -> None:
    """Everything else is skipped (EVT-12/13, ST-09)."""
    assert not valid_callback_url(url, A)


@given(st.text(max_size=300))
def test_callback_rules_never_raise(text: str) -> None:
    """Arbitrary header text never raises (rule 5.4: remote faults are answers, not crashes)."""
    for url in parse_callback_header(text):
        valid_callback_url(url, A)
    valid_callback_url(text, A)


@given(
    st.sampled_from(["SUBSCRIBE", "UNSUBSCRIBE"]),
    st.dictionaries(
        st.sampled_from(["SID", "NT", "CALLBACK", "TIMEOUT", "STATEVAR"]),
        st.lists(st.text(max_size=80), min_size=1, max_size=2),
    ),
)
def test_parse_request_never_raises(method: str, given_headers: dict[str, list[str]]) -> None:
    """Any header combination is a request or a refusal."""
    result = parse_request(method, given_headers)
    assert isinstance(result, NewSubscription | Renewal | Cancellation | Refusal)


# ---- the table (ST-09/10, EVT-06/07/10/11) -----------------------------------------------------


def test_subscribe_keeps_only_valid_urls_in_order() -> None:
    """Only the subscriber's own URLs, order kept (EVT-11/13, ST-09 last case)."""
    table = SubscriptionTable()
    urls = ["http://203.0.113.5/x", CB_B, CB_A, "https://198.18.0.10/x", CB_A + "2"]
    result = subscribed(table.subscribe(KEY, urls, A, None, 0.0, counter_sids()))
    assert result.callbacks == (CB_A, CB_A + "2")
    assert result.sid == sid(1)
    assert (result.service_key, result.subscriber) == (KEY, A)
    assert table.get(result.sid) == result
    assert result.sid in table
    assert len(table) == 1


def test_subscribe_without_a_valid_url_is_refused() -> None:
    """No valid URL: 412, nothing stored (EVT-04/13)."""
    table = SubscriptionTable()
    urls = ["http://203.0.113.5/x", CB_B]
    assert table.subscribe(KEY, urls, A, None, 0.0, counter_sids()) is Refusal.NO_VALID_CALLBACK
    assert table.subscribe(KEY, [], A, None, 0.0, counter_sids()) is Refusal.NO_VALID_CALLBACK
    assert len(table) == 0


def test_subscribe_keeps_at_most_max_callbacks() -> None:
    """A long list of valid URLs is cut to max_callbacks (rule 5.7)."""
    table = SubscriptionTable(GenaSettings(max_callbacks=2))
    urls = [f"{CB_A}{i}" for i in range(5)]
    result = subscribed(table.subscribe(KEY, urls, A, None, 0.0, counter_sids()))
    assert result.callbacks == (f"{CB_A}0", f"{CB_A}1")


def test_per_client_limit_is_412_and_global_limit_503() -> None:
    """8 per client then 412; the table full is 503 for everyone (ST-10, EVT-15)."""
    table = SubscriptionTable(GenaSettings(max_total=10, max_per_client=8))
    sids = counter_sids()
    for _ in range(8):
        subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, sids))
    assert table.subscribe(OTHER_KEY, [CB_A], A, None, 0.0, sids) is Refusal.CLIENT_LIMIT
    assert table.count_for(A) == 8
    subscribed(table.subscribe(KEY, [CB_B], B, None, 0.0, sids))
    subscribed(table.subscribe(KEY, [CB_B], B, None, 0.0, sids))
    assert table.subscribe(KEY, [CB_B], B, None, 0.0, sids) is Refusal.TABLE_FULL
    assert len(table) == 10
    first = table.subscriptions()[0]
    table.remove(first.sid)
    subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, sids))


def test_sid_collisions_are_retried() -> None:
    """A SID already in use is drawn again; a broken generator is our bug."""
    table = SubscriptionTable()
    first = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, lambda: uuid.UUID(int=7)))
    draws = iter([uuid.UUID(int=7), uuid.UUID(int=8)])
    second = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, lambda: next(draws)))
    assert (first.sid, second.sid) == (sid(7), sid(8))
    with pytest.raises(RuntimeError):
        table.subscribe(KEY, [CB_A], A, None, 0.0, lambda: uuid.UUID(int=7))


def test_renewal_keeps_sid_and_seq() -> None:
    """Same SID, new timeout from `now`, SEQ continues (EVT-06)."""
    table = SubscriptionTable()
    first = subscribed(table.subscribe(KEY, [CB_A], A, 3600, 0.0, counter_sids()))
    assert [table.next_seq(first.sid) for _ in range(3)] == [0, 1, 2]
    renewed = subscribed(table.renew(first.sid, 1800, 1000.0, service_key=KEY, subscriber=A))
    assert (renewed.sid, renewed.timeout_s, renewed.expires_at) == (first.sid, 1800, 2800.0)
    assert renewed.callbacks == first.callbacks
    assert table.get(first.sid) == renewed
    assert table.next_seq(first.sid) == 3


@pytest.mark.parametrize(
    ("which", "key", "subscriber", "now"),
    [
        ("unknown", KEY, A, 10.0),
        ("known", OTHER_KEY, A, 10.0),  # the SID of another event URL
        ("known", KEY, B, 10.0),  # another host holding the SID
        ("known", KEY, A, 1800.0),  # expired exactly now
        ("known", KEY, A, 5000.0),  # expired, not yet purged
    ],
)
def test_renew_and_unsubscribe_refuse_unknown_sids(
    which: str, key: str, subscriber: IPv4Address, now: float
) -> None:
    """Unknown, expired, foreign-host or other-service SIDs are 412 (EVT-06/07)."""
    table = SubscriptionTable()
    held = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, counter_sids()))
    target = held.sid if which == "known" else sid(99)
    assert table.renew(target, None, now, service_key=key, subscriber=subscriber) is (
        Refusal.UNKNOWN_SID
    )
    assert table.unsubscribe(target, now, service_key=key, subscriber=subscriber) is (
        Refusal.UNKNOWN_SID
    )
    assert table.get(held.sid) == held


def test_unsubscribe_removes_once() -> None:
    """200 once, then 412 (EVT-07); the SEQ counter goes too."""
    table = SubscriptionTable()
    held = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, counter_sids()))
    assert table.unsubscribe(held.sid, 1.0, service_key=KEY, subscriber=A) == held
    assert table.unsubscribe(held.sid, 1.0, service_key=KEY, subscriber=A) is (Refusal.UNKNOWN_SID)
    assert len(table) == 0
    with pytest.raises(KeyError):
        table.next_seq(held.sid)
    assert table.remove(held.sid) is None


def test_expire_and_next_deadline() -> None:
    """Expired subscriptions are purged in one call; the deadline is the earliest (ST-10)."""
    table = SubscriptionTable()
    assert table.next_deadline() is None
    assert table.expire(10**9) == ()
    sids = counter_sids()
    short = subscribed(table.subscribe(KEY, [CB_A], A, 1800, 0.0, sids))
    long = subscribed(table.subscribe(KEY, [CB_A], A, 3600, 0.0, sids))
    later = subscribed(table.subscribe(OTHER_KEY, [CB_B], B, 1800, 100.0, sids))
    assert table.next_deadline() == 1800.0
    assert table.subscriptions(KEY) == (short, long)
    assert table.expire(1799.9) == ()
    assert table.expire(1800.0) == (short,)
    assert table.next_deadline() == 1900.0
    assert table.expire(5000.0) == (long, later)
    assert len(table) == 0
    assert table.next_deadline() is None


def test_seq_starts_at_zero_and_wraps_to_one() -> None:
    """0, 1, 2, ... and 4294967295 -> 1, never 0 again (EVT-10, T-GENA-18)."""
    table = SubscriptionTable()
    held = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, counter_sids()))
    assert [table.next_seq(held.sid) for _ in range(4)] == [0, 1, 2, 3]
    assert following_seq(0) == 1
    assert following_seq(SEQ_MAX - 1) == SEQ_MAX
    assert following_seq(SEQ_MAX) == 1


def test_sequences_are_per_subscription() -> None:
    """Each SID has its own SEQ (EVT-10)."""
    table = SubscriptionTable()
    sids = counter_sids()
    one = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, sids))
    two = subscribed(table.subscribe(KEY, [CB_A], A, None, 0.0, sids))
    assert [table.next_seq(one.sid) for _ in range(3)] == [0, 1, 2]
    assert table.next_seq(two.sid) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_total": 0},
        {"max_per_client": 0},
        {"max_callbacks": 0},
        {"min_timeout_s": 0},
        {"min_timeout_s": 3600, "max_timeout_s": 1800},
        {"attempt_timeout_s": 10.0},  # 4 URLs x 10 s > 30 s (EVT-15)
        {"attempt_timeout_s": 0.0},
        {"moderation_s": -1.0},
        {"max_failures": 0},
        {"poll_interval_s": 0.0},
    ],
)
def test_settings_reject_nonsense(kwargs: dict[str, float]) -> None:
    """Limits are checked once, at construction."""
    with pytest.raises(ValueError):  # noqa: PT011
        GenaSettings(**kwargs)  # type: ignore[arg-type]


def test_default_settings() -> None:
    """The documented defaults: 256 / 8, 1800..7200 s, 5 s per attempt (ST-10, EVT-03/15)."""
    s = DEFAULT_SETTINGS
    assert (s.max_total, s.max_per_client, s.min_timeout_s, s.max_timeout_s) == (256, 8, 1800, 7200)
    assert s.attempt_timeout_s * s.max_callbacks <= 30


# ---- the event body (EVT-09, EVT-16) ------------------------------------------------------------


def test_propertyset_one_property_per_variable() -> None:
    """`<e:propertyset>` with one `<e:property>` each, values escaped (EVT-09)."""
    body = build_propertyset([("ExternalIPAddress", "198.19.0.1"), ("Odd", "<a&b>")])
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<e:propertyset ')
    root = etree.fromstring(body)
    assert root.tag == f"{{{EVENT_NS}}}propertyset"
    properties = root.findall(f"{{{EVENT_NS}}}property")
    assert [(p[0].tag, p[0].text) for p in properties] == [
        ("ExternalIPAddress", "198.19.0.1"),
        ("Odd", "<a&b>"),
    ]
    assert all(len(p) == 1 for p in properties)
    assert b"&lt;a&amp;b&gt;" in body


def test_entry_events_force_count_and_update_id() -> None:
    """Mapping added/removed and count changes force both entry variables (WIP-61/62, EVT-16)."""
    assert forced_variables(NumberOfEntriesChanged(1)) == ENTRY_VARIABLES
    assert {"PortMappingNumberOfEntries", "SystemUpdateID"} == ENTRY_VARIABLES
    mapping = Mapping(IPProtocol.TCP, 5000, A, 5000, uuid.UUID(int=1))
    assert forced_variables(MappingAdded(mapping)) == ENTRY_VARIABLES
    assert forced_variables(MappingRemoved(mapping, RemovalReason.EXPIRED)) == ENTRY_VARIABLES
    assert forced_variables(EventsDropped(3)) == ENTRY_VARIABLES
    # a refresh or an edit bumps SystemUpdateID; the value comparison events it (WIP-62)
    assert forced_variables(MappingChanged(mapping, mapping, "refreshed")) == frozenset()
    assert forced_variables(ExternalAddressChanged(None, None, A)) == frozenset()


@pytest.mark.parametrize(
    ("address", "private_allowed", "shown"),
    [
        ("203.0.113.7", False, False),  # TEST-NET-3: documentation, not global
        ("8.8.8.8", False, True),
        ("198.19.0.1", False, False),  # benchmarking range (WIP-03)
        ("198.19.0.1", True, True),
        ("100.64.0.1", False, False),  # CGN shared space (WIP-03)
        ("192.168.1.1", False, False),
        ("240.0.0.1", False, False),
        ("224.0.0.1", False, False),
    ],
)
def test_external_address_hiding(address: str, private_allowed: bool, shown: bool) -> None:
    """ExternalIPAddress hides private/reserved addresses unless allowed (WIP-02/03)."""
    assert is_reportable_external(IPv4Address(address), allow_private=private_allowed) is shown
