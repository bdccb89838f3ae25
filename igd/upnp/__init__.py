"""UPnP device knowledge as data: the IGD device table, its descriptions, hardened XML parsing.

``device``: the declarative table (devices, services, actions, state variables) and ``RootDevice``
(UDNs, URL paths, the SSDP advertisement set). ``description``: rootDesc and SCPD rendering and
CONFIGID. ``xml``: the one XML parser for bytes from the network.

Pure package: no asyncio, aiohttp, socket, subprocess, time or random (architecture.md 3.5).
"""

from igd.upnp.description import (
    CONFIG_ID_MAX,
    CONTENT_TYPE,
    DeviceInfo,
    Documents,
    config_id_for,
    render_documents,
    render_root_description,
    render_scpd,
)
from igd.upnp.device import (
    GATEWAY_PROFILES,
    SERVICE_ID_L3F,
    SERVICE_ID_WANCIC,
    SERVICE_ID_WANIPC,
    Action,
    AdvertisedType,
    Advertisement,
    Argument,
    Device,
    RootDevice,
    Service,
    ServiceEndpoint,
    StateVariable,
    device_urn,
    format_udn,
    igd_device_tree,
    service_urn,
)
from igd.upnp.xml import MAX_XML_BYTES, MAX_XML_DEPTH, XmlError, parse_xml

__all__ = [
    "CONFIG_ID_MAX",
    "CONTENT_TYPE",
    "GATEWAY_PROFILES",
    "MAX_XML_BYTES",
    "MAX_XML_DEPTH",
    "SERVICE_ID_L3F",
    "SERVICE_ID_WANCIC",
    "SERVICE_ID_WANIPC",
    "Action",
    "AdvertisedType",
    "Advertisement",
    "Argument",
    "Device",
    "DeviceInfo",
    "Documents",
    "RootDevice",
    "Service",
    "ServiceEndpoint",
    "StateVariable",
    "XmlError",
    "config_id_for",
    "device_urn",
    "format_udn",
    "igd_device_tree",
    "parse_xml",
    "render_documents",
    "render_root_description",
    "render_scpd",
    "service_urn",
]
