"""MappingTable: the WIP-11 conflict matrix, positional lookup, port allocation, the lease heap.

The table is pure: every test builds `Mapping` snapshots by hand and passes `now` explicitly.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igd.natcore.errors import (
    ConflictError,
    ConflictWithOtherMechanismError,
    IndexOutOfRangeError,
    MappingNotFoundError,
)
from igd.natcore.model import ADMIN, Client, IPProtocol, Mapping, MappingKey, Origin
from igd.natcore.table import MIN_ALLOCATED_PORT, MappingTable

TCP, UDP = IPProtocol.TCP, IPProtocol.UDP
WAN = uuid.UUID("6b1d2a8e-0c3f-4a57-9d2e-1f0a9b8c7d6e")
HOST = IPv4Address("198.18.0.10")
HOST2 = IPv4Address("198.18.0.11")
PEER = IPv4Address("198.19.0.9")
PEER2 = IPv4Address("198.19.0.77")
UPNP_HOST = Client(Origin.UPNP, HOST)
UPNP_HOST2 = Client(Origin.UPNP, HOST2)
NATPMP_HOST = Client(Origin.NATPMP, HOST)
PCP_HOST2 = Client(Origin.PCP, HOST2)


def mapping(
    port: int = 5000,
    protocol: IPProtocol = TCP,
    *,
    internal_client: IPv4Address = HOST,
    remote_host: IPv4Address | None = None,
    origin: Origin = Origin.UPNP,
    owner: IPv4Address | None = HOST,
    expires_at: float | None = None,
    internal_port: int | None = None,
) -> Mapping:
    return Mapping(
        protocol=protocol,
        external_port=port,
        internal_client=internal_client,
        internal_port=port if internal_port is None else internal_port,
        connection=WAN,
        remote_host=remote_host,
        expires_at=expires_at,
        origin=origin,
        owner=None if origin is Origin.ADMIN else owner,
    )


def table_of(*mappings: Mapping) -> MappingTable:
    table = MappingTable()
    for m in mappings:
        table.put(m)
    return table


def order(m: Mapping) -> tuple[int, int]:
    """Key order of the table: TCP before UDP, then external port."""
    return (0 if m.protocol is TCP else 1, m.external_port)


# -- WIP-11 conflict matrix ---------------------------------------------------------------------


def test_same_protocol_port_remote_host_and_client_overwrites() -> None:
    """WIP-11 / ST-27: same P+EP+RH+IC is an overwrite; resolve hands back the mapping replaced."""
    existing = mapping(remote_host=PEER)
    table = table_of(existing)
    key = MappingKey(TCP, 5000, PEER)
    assert table.resolve(key, HOST, UPNP_HOST) is existing
    replaced = table.put(replace(existing, internal_port=6000, description="new"))
    assert replaced is existing
    assert len(table) == 1
    assert table.at_port(TCP, 5000) == replace(existing, internal_port=6000, description="new")


def test_free_port_resolves_to_nothing() -> None:
    """WIP-11: any other combination (nothing on the port) succeeds as a new mapping."""
    table = table_of(mapping(5000))
    assert table.resolve(MappingKey(TCP, 5001), HOST, UPNP_HOST) is None
    assert table.resolve(MappingKey(UDP, 5000), HOST, UPNP_HOST) is None


@pytest.mark.parametrize(
    ("remote_host", "internal_client"),
    [
        pytest.param(None, HOST2, id="same-RH-different-IC"),
        pytest.param(PEER, HOST, id="different-RH-same-IC"),
        pytest.param(PEER, HOST2, id="different-RH-different-IC"),
        pytest.param(PEER2, HOST, id="other-specific-RH-same-IC"),
    ],
)
def test_same_mechanism_conflicts_are_plain_conflicts(
    remote_host: IPv4Address | None, internal_client: IPv4Address
) -> None:
    """WIP-11 / WIP-24 (718): a different IC or RH on a held (P, EP) is a ConflictError.

    Same P+EP+IC with a different RH is the vendor choice the project rejects (WIP-11 PROJECT).
    The existing mapping is a wildcard one, or (for PEER2) one for PEER.
    """
    existing_rh = PEER if remote_host == PEER2 else None
    table = table_of(mapping(remote_host=existing_rh))
    client = Client(Origin.UPNP, internal_client)
    with pytest.raises(ConflictError) as caught:
        table.resolve(MappingKey(TCP, 5000, remote_host), internal_client, client)
    assert type(caught.value) is ConflictError
    assert len(table) == 1


def test_specific_remote_host_against_wildcard_held_port_conflicts() -> None:
    """WIP-11: a wildcard request on a port held for a specific RH never shares the port."""
    table = table_of(mapping(remote_host=PEER))
    with pytest.raises(ConflictError) as caught:
        table.resolve(MappingKey(TCP, 5000, None), HOST, UPNP_HOST)
    assert type(caught.value) is ConflictError


def test_replace_false_turns_an_overwrite_into_a_conflict() -> None:
    """WIP-11: with replace=False even the exact same target is refused."""
    table = table_of(mapping())
    with pytest.raises(ConflictError) as caught:
        table.resolve(MappingKey(TCP, 5000), HOST, UPNP_HOST, replace=False)
    assert type(caught.value) is ConflictError


def test_same_target_by_a_client_that_may_not_manage_it_conflicts() -> None:
    """ST-23: .11 asking for .10's exact tuple does not take over .10's mapping."""
    table = table_of(mapping())
    with pytest.raises(ConflictError) as caught:
        table.resolve(MappingKey(TCP, 5000), HOST, UPNP_HOST2)
    assert type(caught.value) is ConflictError


def test_target_owner_may_overwrite_a_mapping_someone_else_created_for_it() -> None:
    """WIP-71: a client manages the mappings that point at its own address."""
    existing = mapping(owner=HOST2)  # created by .11 (secure mode off) for .10
    table = table_of(existing)
    assert table.resolve(MappingKey(TCP, 5000), HOST, UPNP_HOST) is existing


@pytest.mark.parametrize(
    ("existing_origin", "client", "internal_client"),
    [
        pytest.param(Origin.NATPMP, UPNP_HOST2, HOST2, id="natpmp-held-upnp-asks"),
        pytest.param(Origin.UPNP, PCP_HOST2, HOST2, id="upnp-held-pcp-asks"),
        pytest.param(Origin.PCP, UPNP_HOST, HOST2, id="pcp-held-other-target"),
        pytest.param(Origin.ADMIN, UPNP_HOST, HOST, id="admin-held-same-target"),
        pytest.param(Origin.ADMIN, UPNP_HOST2, HOST2, id="admin-held-other-target"),
        pytest.param(Origin.ADMIN, NATPMP_HOST, HOST, id="admin-held-natpmp-asks"),
        pytest.param(Origin.UPNP, ADMIN, HOST2, id="upnp-held-admin-other-target"),
    ],
)
def test_other_mechanism_or_admin_mapping_is_a_conflict_with_other_mechanism(
    existing_origin: Origin, client: Client, internal_client: IPv4Address
) -> None:
    """WIP-24 (729) / XP-03: another mechanism's mapping, or an administrator's, on the port."""
    table = table_of(mapping(origin=existing_origin))
    with pytest.raises(ConflictWithOtherMechanismError):
        table.resolve(MappingKey(TCP, 5000), internal_client, client)


def test_admin_against_admin_is_a_plain_conflict() -> None:
    """WIP-11: two administrator mappings on one port are the same mechanism (718, not 729)."""
    table = table_of(mapping(origin=Origin.ADMIN))
    with pytest.raises(ConflictError) as caught:
        table.resolve(MappingKey(TCP, 5000), HOST2, ADMIN)
    assert type(caught.value) is ConflictError
    with pytest.raises(ConflictError) as caught:
        table.resolve(MappingKey(TCP, 5000), HOST, ADMIN, replace=False)
    assert type(caught.value) is ConflictError


def test_admin_overwrites_a_protocol_mapping_with_the_same_target() -> None:
    """WIP-71: the administrator manages everything; same target is an overwrite."""
    existing = mapping(origin=Origin.NATPMP)
    table = table_of(existing)
    assert table.resolve(MappingKey(TCP, 5000), HOST, ADMIN) is existing


def test_admin_overwrites_its_own_mapping() -> None:
    existing = mapping(origin=Origin.ADMIN)
    table = table_of(existing)
    assert table.resolve(MappingKey(TCP, 5000), HOST, ADMIN) is existing


def test_may_manage() -> None:
    """WIP-71 / ST-23: owner or target manages; never an admin mapping; admin manages all."""
    own = mapping()
    for_host = mapping(owner=HOST2)
    admin_made = mapping(origin=Origin.ADMIN)
    assert MappingTable.may_manage(own, UPNP_HOST)
    assert MappingTable.may_manage(own, NATPMP_HOST)
    assert not MappingTable.may_manage(own, UPNP_HOST2)
    assert MappingTable.may_manage(for_host, UPNP_HOST)
    assert MappingTable.may_manage(for_host, UPNP_HOST2)
    assert not MappingTable.may_manage(admin_made, UPNP_HOST)
    assert not MappingTable.may_manage(own, Client(Origin.UPNP, None))
    for m in (own, for_host, admin_made):
        assert MappingTable.may_manage(m, ADMIN)


# -- keyed reads ----------------------------------------------------------------------------------


def test_get_needs_the_exact_remote_host() -> None:
    """WIP-10: lookups match the exact (P, EP, RH); "" only matches wildcard mappings."""
    specific = mapping(remote_host=PEER)
    table = table_of(specific)
    assert table.get(MappingKey(TCP, 5000, PEER)) is specific
    assert table.get(MappingKey(TCP, 5000)) is None
    assert table.get(MappingKey(TCP, 5000, PEER2)) is None
    assert table.at_port(TCP, 5000) is specific
    assert MappingKey(TCP, 5000, PEER) in table
    assert MappingKey(TCP, 5000) not in table
    assert (TCP, 5000) not in table
    with pytest.raises(MappingNotFoundError):
        table.remove(MappingKey(TCP, 5000))
    with pytest.raises(MappingNotFoundError):
        table.index_of(MappingKey(TCP, 5000))
    assert len(table) == 1


def test_remove_returns_the_mapping_and_frees_the_port() -> None:
    m = mapping()
    table = table_of(m)
    assert table.remove(m.key) is m
    assert len(table) == 0
    assert table.at_port(TCP, 5000) is None
    with pytest.raises(MappingNotFoundError):
        table.remove(m.key)


# -- positional lookup (WIP-29) -------------------------------------------------------------------


EDGE_PORTS = (0, 1, 2, 1023, 1024, 5000, 5001, 32767, 32768, 65534, 65535)


def test_positions_follow_key_order_across_protocols_and_edges() -> None:
    """WIP-29: indexes 0..n-1 in key order (TCP, then UDP; by port), contiguous."""
    mappings = [mapping(p, proto) for proto in (UDP, TCP) for p in reversed(EDGE_PORTS)]
    table = table_of(*mappings)
    expected = sorted(mappings, key=order)
    assert list(table) == expected
    assert [table.at_index(i) for i in range(len(table))] == expected
    for i, m in enumerate(expected):
        assert table.index_of(m.key) == i


def test_index_out_of_range() -> None:
    """WIP-29 (713): an index at or past the count, or negative, is IndexOutOfRangeError."""
    table = MappingTable()
    with pytest.raises(IndexOutOfRangeError):
        table.at_index(0)
    table = table_of(mapping(5000), mapping(5001), mapping(5002))
    for bad in (3, 4, -1, 65536 * 2):
        with pytest.raises(IndexOutOfRangeError):
            table.at_index(bad)
    assert issubclass(IndexOutOfRangeError, IndexError)


def test_array_compacts_on_delete() -> None:
    """WIP-28/29 (T-IGD-18): after deleting index 0, indexes 0..1 are valid and 2 is not."""
    a, b, c = mapping(40001), mapping(40002), mapping(40003)
    table = table_of(a, b, c)
    table.remove(table.at_index(0).key)
    assert [table.at_index(0), table.at_index(1)] == [b, c]
    with pytest.raises(IndexOutOfRangeError):
        table.at_index(2)


def test_in_range_bounds_are_inclusive_and_clamped() -> None:
    mappings = [mapping(p, proto) for proto in (TCP, UDP) for p in EDGE_PORTS]
    table = table_of(*mappings)

    def ports(start: int, end: int, protocol: IPProtocol | None = None) -> list[tuple[int, int]]:
        return [(m.protocol.value, m.external_port) for m in table.in_range(start, end, protocol)]

    assert ports(1023, 5000, TCP) == [(6, 1023), (6, 1024), (6, 5000)]
    assert ports(1023, 5000) == [
        (6, 1023),
        (6, 1024),
        (6, 5000),
        (17, 1023),
        (17, 1024),
        (17, 5000),
    ]
    assert ports(65535, 65535, UDP) == [(17, 65535)]
    assert ports(0, 0, TCP) == [(6, 0)]
    assert ports(-10, 1, TCP) == [(6, 0), (6, 1)]
    assert ports(65534, 70000, UDP) == [(17, 65534), (17, 65535)]
    assert ports(5001, 5000) == []
    assert ports(3, 1022) == []
    assert len(ports(0, 65535)) == len(mappings)


# -- owners --------------------------------------------------------------------------------------


def test_owner_counts_follow_puts_replacements_and_removes() -> None:
    table = table_of(mapping(5000), mapping(5001), mapping(5002, owner=HOST2))
    table.put(mapping(6000, origin=Origin.ADMIN))
    assert table.count_for_owner(HOST) == 2
    assert table.count_for_owner(HOST2) == 1
    assert [m.external_port for m in table.owned_by(HOST)] == [5000, 5001]
    table.put(mapping(5001, owner=HOST2))  # the port changes hands
    assert table.count_for_owner(HOST) == 1
    assert table.count_for_owner(HOST2) == 2
    table.put(mapping(5001, owner=HOST2))  # refresh: no double count
    assert table.count_for_owner(HOST2) == 2
    table.remove(MappingKey(TCP, 5000))
    assert table.count_for_owner(HOST) == 0
    assert table.owned_by(HOST) == []
    assert [m.external_port for m in table.owned_by(HOST2)] == [5001, 5002]
    assert table.count_for_owner(IPv4Address("198.18.0.99")) == 0


# -- port allocation (WIP-25/26) -----------------------------------------------------------------


def always(port: int) -> bool:
    return True


def test_find_free_port_takes_the_wanted_port_when_free() -> None:
    assert MappingTable().find_free_port(TCP, 40020, always) == 40020


def test_find_free_port_ties_go_to_the_higher_port() -> None:
    """WIP-25: the nearest free port; at equal distance the higher one."""
    table = table_of(mapping(40021))
    assert table.find_free_port(TCP, 40021, always) == 40022
    table.put(mapping(40022))
    assert table.find_free_port(TCP, 40021, always) == 40020
    table.put(mapping(40020))
    assert table.find_free_port(TCP, 40021, always) == 40023


def test_find_free_port_is_per_protocol() -> None:
    table = table_of(mapping(40021, UDP))
    assert table.find_free_port(TCP, 40021, always) == 40021
    assert table.find_free_port(UDP, 40021, always) == 40022


def test_find_free_port_never_hands_out_a_well_known_port() -> None:
    """WIP-26: allocation stays >= 1024 by default; a low wanted port starts the search there."""
    table = MappingTable()
    assert MIN_ALLOCATED_PORT == 1024
    assert table.find_free_port(TCP, 0, always) == 1024
    assert table.find_free_port(TCP, 80, always) == 1024
    table.put(mapping(1024))
    assert table.find_free_port(TCP, 80, always) == 1025


def test_find_free_port_respects_explicit_bounds() -> None:
    table = table_of(mapping(65535))
    assert table.find_free_port(TCP, 70000, always) == 65534
    assert table.find_free_port(TCP, 5000, always, low=6000, high=6002) == 6000
    assert table.find_free_port(TCP, 9000, always, low=6000, high=6002) == 6002
    table.put(mapping(6002))
    assert table.find_free_port(TCP, 9000, always, low=6000, high=6002) == 6001


def test_find_free_port_acceptable_predicate() -> None:
    table = MappingTable()
    assert table.find_free_port(TCP, 5001, lambda p: p % 2 == 0) == 5002
    assert table.find_free_port(TCP, 5001, lambda p: p % 10 == 0) == 5000
    assert table.find_free_port(TCP, 5001, lambda p: p == 60000) == 60000
    assert table.find_free_port(TCP, 5001, lambda p: p == 1024) == 1024


def test_find_free_port_full_range_is_none() -> None:
    """ST-24: the search is bounded and ends with None when nothing is free and acceptable."""
    table = table_of(*(mapping(p) for p in range(6000, 6011)))
    assert table.find_free_port(TCP, 6005, always, low=6000, high=6010) is None
    assert table.find_free_port(UDP, 6005, always, low=6000, high=6010) == 6005
    assert table.find_free_port(TCP, 40000, lambda p: False) is None
    assert table.find_free_port(TCP, 40000, lambda p: 6000 <= p <= 6010) is None


def test_find_free_port_matches_brute_force() -> None:
    table = table_of(*(mapping(p) for p in (2000, 2001, 2003, 1999, 1996)))

    def acceptable(port: int) -> bool:
        return port != 2002

    for wanted in range(1990, 2010):
        candidates = [
            p for p in range(1995, 2006) if table.at_port(TCP, p) is None and acceptable(p)
        ]
        best = min(candidates, key=lambda p: (abs(p - wanted), -p))
        assert table.find_free_port(TCP, wanted, acceptable, low=1995, high=2005) == best


# -- leases (WIP-14, ST-27) ----------------------------------------------------------------------


def test_no_lease_no_deadline() -> None:
    table = table_of(mapping(5000), mapping(5001, UDP))
    assert table.next_deadline() is None
    assert table.expire(1e12) == []
    assert len(table) == 2


def test_expire_removes_exactly_the_due_leases() -> None:
    """WIP-14: a lease ends at its deadline (inclusive); the others and permanent ones stay."""
    a = mapping(5000, expires_at=100.0)
    b = mapping(5001, expires_at=200.0)
    c = mapping(5002, UDP, expires_at=300.0)
    permanent = mapping(5003)
    table = table_of(c, permanent, b, a)
    assert table.next_deadline() == 100.0
    assert table.expire(99.999) == []
    assert table.expire(100.0) == [a]
    assert table.next_deadline() == 200.0
    assert table.expire(250.0) == [b]
    assert sorted(table, key=order) == [permanent, c]
    assert table.expire(1e9) == [c]
    assert list(table) == [permanent]
    assert table.next_deadline() is None


def test_expire_returns_simultaneous_leases_together() -> None:
    due = [mapping(p, expires_at=50.0) for p in (7000, 7001, 7002)]
    table = table_of(*due, mapping(7003, expires_at=51.0))
    assert sorted(table.expire(50.0), key=order) == due
    assert len(table) == 1


def test_refresh_moves_the_deadline() -> None:
    """ST-27: a refresh extends the lease; the old deadline no longer expires it."""
    table = table_of(mapping(5000, expires_at=100.0), mapping(5001, expires_at=150.0))
    table.put(mapping(5000, expires_at=500.0))
    assert table.next_deadline() == 150.0
    assert [m.external_port for m in table.expire(200.0)] == [5001]
    assert table.next_deadline() == 500.0
    table.put(mapping(5000, expires_at=50.0))  # a shorter lease moves it earlier too
    assert table.next_deadline() == 50.0
    assert [m.external_port for m in table.expire(60.0)] == [5000]
    assert len(table) == 0


def test_refresh_to_permanent_never_expires() -> None:
    table = table_of(mapping(5000, expires_at=100.0))
    table.put(mapping(5000))
    assert table.next_deadline() is None
    assert table.expire(1e9) == []
    assert len(table) == 1


def test_removed_lease_does_not_expire_its_successor() -> None:
    table = table_of(mapping(5000, expires_at=100.0))
    table.remove(MappingKey(TCP, 5000))
    successor = mapping(5000, owner=HOST2, internal_client=HOST2, expires_at=300.0)
    table.put(successor)
    assert table.next_deadline() == 300.0
    assert table.expire(200.0) == []
    assert table.expire(300.0) == [successor]


def test_re_put_with_the_same_deadline_expires_once() -> None:
    """Undo of a removal puts the same mapping back: it expires once, at its deadline."""
    m = mapping(5000, expires_at=100.0)
    table = table_of(m)
    table.remove(m.key)
    table.put(m)
    assert table.next_deadline() == 100.0
    assert table.expire(100.0) == [m]
    assert table.expire(100.0) == []
    assert table.next_deadline() is None


def test_compaction_keeps_expiry_correct() -> None:
    """Many refreshes leave stale heap entries; compaction must not lose a live deadline."""
    ports = range(9000, 9010)
    table = table_of(*(mapping(p, expires_at=1000.0 + p) for p in ports))
    for round_ in range(300):
        for p in ports:
            table.put(mapping(p, expires_at=2000.0 + round_ * 10 + (p - 9000)))
    final = {p: 2000.0 + 299 * 10 + (p - 9000) for p in ports}
    assert table.next_deadline() == min(final.values())
    assert table.expire(final[9004]) == [mapping(p, expires_at=final[p]) for p in range(9000, 9005)]
    assert table.next_deadline() == final[9005]
    assert [m.external_port for m in table.expire(1e9)] == list(range(9005, 9010))
    assert len(table) == 0


def test_lease_heap_stays_bounded_under_refreshes() -> None:
    """The lazily-deleted heap is compacted: O(n) entries, not O(number of refreshes)."""
    table = table_of(*(mapping(p, expires_at=100.0) for p in (5000, 5001)))
    for i in range(2000):
        table.put(mapping(5000, expires_at=200.0 + i))
    assert len(table._leases) <= 2 * len(table) + 64 + 1


def test_lease_heap_stays_bounded_when_a_lease_toggles_permanent() -> None:
    """The heap must stay O(n) however the leases change.

    Alternating a mapping between a lease and a permanent lease with the same deadline (a fixed
    clock, or the undo of a failed removal re-putting a leased mapping) pushes a new heap entry
    each time while the earlier one becomes live again; compaction keeps every live duplicate.
    """
    leased = mapping(5000, expires_at=100.0)
    table = table_of(leased)
    for _ in range(1000):
        table.put(mapping(5000))
        table.put(leased)
    assert len(table) == 1
    assert len(table._leases) <= 2 * len(table) + 64 + 1
    assert table.expire(100.0) == [leased]


# -- the table against a dict model (Hypothesis) ---------------------------------------------------

PORTS = st.one_of(st.sampled_from(EDGE_PORTS), st.integers(min_value=0, max_value=65535))
PROTOCOLS = st.sampled_from((TCP, UDP))
OWNERS = st.sampled_from((HOST, HOST2, None))
REMOTE_HOSTS = st.sampled_from((None, PEER))

PUT = st.tuples(
    st.just("put"), PROTOCOLS, PORTS, OWNERS, REMOTE_HOSTS, st.none() | st.integers(1, 50)
)
REMOVE = st.tuples(st.just("remove"), PROTOCOLS, PORTS, OWNERS, REMOTE_HOSTS, st.none())
EXPIRE = st.tuples(st.just("expire"), PROTOCOLS, PORTS, OWNERS, REMOTE_HOSTS, st.integers(0, 60))
OPS = st.lists(st.one_of(PUT, PUT, REMOVE, EXPIRE), max_size=60)


def check_against_model(table: MappingTable, model: dict[tuple[IPProtocol, int], Mapping]) -> None:
    expected = sorted(model.values(), key=order)
    assert len(table) == len(expected)
    assert list(table) == expected
    for i, m in enumerate(expected):
        assert table.at_index(i) == m
        assert table.index_of(m.key) == i
        assert m.key in table
    with pytest.raises(IndexOutOfRangeError):
        table.at_index(len(expected))
    for owner in (HOST, HOST2):
        owned = [m for m in expected if m.owner == owner]
        assert table.count_for_owner(owner) == len(owned)
        assert table.owned_by(owner) == owned
    deadlines = [m.expires_at for m in expected if m.expires_at is not None]
    assert table.next_deadline() == (min(deadlines) if deadlines else None)


@settings(max_examples=200, deadline=None)
@given(
    ops=OPS,
    ranges=st.lists(st.tuples(PORTS, PORTS, st.sampled_from((TCP, UDP, None))), max_size=5),
)
def test_table_matches_a_dict_model(
    ops: list[tuple[str, IPProtocol, int, IPv4Address | None, IPv4Address | None, int | None]],
    ranges: list[tuple[int, int, IPProtocol | None]],
) -> None:
    table = MappingTable()
    model: dict[tuple[IPProtocol, int], Mapping] = {}
    for verb, protocol, port, owner, remote_host, number in ops:
        if verb == "put":
            m = mapping(
                port,
                protocol,
                owner=owner,
                remote_host=remote_host,
                expires_at=None if number is None else float(number),
            )
            old = table.put(m)
            assert old == model.get((protocol, port))
            model[(protocol, port)] = m
        elif verb == "remove":
            key = MappingKey(protocol, port, remote_host)
            held = model.get((protocol, port))
            if held is not None and held.remote_host == remote_host:
                assert table.remove(key) == held
                del model[(protocol, port)]
            else:
                with pytest.raises(MappingNotFoundError):
                    table.remove(key)
        else:
            assert number is not None
            now = float(number)
            due = sorted(
                (m for m in model.values() if m.expires_at is not None and m.expires_at <= now),
                key=order,
            )
            assert sorted(table.expire(now), key=order) == due
            for m in due:
                del model[(m.protocol, m.external_port)]
        check_against_model(table, model)
    for start, end, only in ranges:
        expected = [
            m
            for m in sorted(model.values(), key=order)
            if start <= m.external_port <= end and only in (None, m.protocol)
        ]
        assert list(table.in_range(start, end, only)) == expected
