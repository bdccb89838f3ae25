"""PCP front-end (RFC 6887): pure codec (`wire`), semantics (`handler`), UDP 5351 (`endpoint`).

The endpoint serves NAT-PMP and PCP on the same port and demultiplexes on the version byte; every
mapping decision is the core's (`igd.natcore`).
"""

from __future__ import annotations

from igd.pcp.endpoint import DatagramHandler, EndpointCounters, PortMappingEndpoint
from igd.pcp.handler import PcpHandler, PcpStats
from igd.pcp.wire import (
    FilterOption,
    MapPayload,
    Opcode,
    OptionCode,
    PcpBuildError,
    PcpError,
    PcpOption,
    PcpParseError,
    PcpRequest,
    PcpResponse,
    PeerPayload,
    PreferFailureOption,
    RawOption,
    ResultCode,
    ThirdPartyOption,
    pull_request,
    pull_response,
    push_request,
    push_response,
)

__all__ = [
    "DatagramHandler",
    "EndpointCounters",
    "FilterOption",
    "MapPayload",
    "Opcode",
    "OptionCode",
    "PcpBuildError",
    "PcpError",
    "PcpHandler",
    "PcpOption",
    "PcpParseError",
    "PcpRequest",
    "PcpResponse",
    "PcpStats",
    "PeerPayload",
    "PortMappingEndpoint",
    "PreferFailureOption",
    "RawOption",
    "ResultCode",
    "ThirdPartyOption",
    "pull_request",
    "pull_response",
    "push_request",
    "push_response",
]
