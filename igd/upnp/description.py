"""Root device descriptions and SCPDs rendered from the device table (DESC-01..13).

Output is deterministic (same input, same bytes), so CONFIGID can be a hash of the documents
(``config_id_for``, SSDP-10/11). Strings are escaped by lxml; the operator-supplied device texts
are checked against DESC-05 and rejected with ValueError, never truncated.

Pure module: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from lxml import etree

from igd.upnp.device import Device, RootDevice, Service, format_udn

__all__ = [
    "CONFIG_ID_MAX",
    "CONTENT_TYPE",
    "DEVICE_NAMESPACE",
    "SERVICE_NAMESPACE",
    "SPEC_VERSION",
    "DeviceInfo",
    "Documents",
    "config_id_for",
    "render_documents",
    "render_root_description",
    "render_scpd",
]

DEVICE_NAMESPACE = "urn:schemas-upnp-org:device-1-0"
"""Namespace of ``<root>`` (DESC-02)."""

SERVICE_NAMESPACE = "urn:schemas-upnp-org:service-1-0"
"""Namespace of ``<scpd>`` (DESC-10)."""

SPEC_VERSION = (1, 1)
"""specVersion major/minor: UDA 1.1, matching ``UPnP/1.1`` in SERVER (DESC-02, SSDP-08)."""

CONFIG_ID_MAX = 16_777_215
"""Largest CONFIGID.UPNP.ORG value for vendor use (SSDP-10)."""

CONTENT_TYPE = 'text/xml; charset="utf-8"'
"""CONTENT-TYPE of every document rendered here (GEN-07, DESC-01)."""

XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'

_TEXT_LIMITS: Mapping[str, int] = types.MappingProxyType(
    {
        # DESC-05: each value SHOULD be shorter than this many characters.
        "friendly_name": 64,
        "manufacturer": 64,
        "model_description": 128,
        "model_name": 32,
        "model_number": 32,
        "serial_number": 64,
    }
)
_URL_LIMIT = 1024
"""Longest accepted presentation/manufacturer/model URL (PROJECT bound, rule 5.7)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_URL = re.compile(r"(?:https?://[!-~]+|/[!-~]*)")


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) >= _TEXT_LIMITS[name]:
        raise ValueError(f"{name} must be shorter than {_TEXT_LIMITS[name]} characters (DESC-05)")
    if _CONTROL.search(value):
        raise ValueError(f"{name} must not contain control characters")


def _check_url(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str")
    if len(value) > _URL_LIMIT or not _URL.fullmatch(value):
        raise ValueError(f"{name} must be an absolute path or an http(s) URL without spaces")


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Operator-supplied texts of the root device, checked against DESC-04/05 on construction."""

    friendly_name: str
    manufacturer: str
    model_name: str
    model_number: str | None = None
    presentation_url: str | None = None
    serial_number: str | None = None
    manufacturer_url: str | None = None
    model_description: str | None = None
    model_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("friendly_name", "manufacturer", "model_name"):
            _check_text(name, getattr(self, name))
        for name in ("model_number", "serial_number", "model_description"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value)
        for name in ("presentation_url", "manufacturer_url", "model_url"):
            value = getattr(self, name)
            if value is not None:
                _check_url(name, value)


def _check_config_id(config_id: int) -> None:
    if isinstance(config_id, bool) or not isinstance(config_id, int):
        raise TypeError("config_id must be an int")
    if not 0 <= config_id <= CONFIG_ID_MAX:
        raise ValueError(f"config_id must be in 0..{CONFIG_ID_MAX} (SSDP-10)")


def _text(parent: etree._Element, namespace: str, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{namespace}}}{tag}")
    element.text = text
    return element


def _document_element(namespace: str, tag: str, config_id: int) -> etree._Element:
    # lxml-stubs type nsmap as Mapping[str, str]; lxml takes a None key: the default namespace.
    nsmap: dict[str | None, str] = {None: namespace}
    return etree.Element(
        f"{{{namespace}}}{tag}",
        {"configId": str(config_id)},
        nsmap=nsmap,  # type: ignore[arg-type]
    )


def _document(root: etree._Element) -> bytes:
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8", xml_declaration=False)


def _spec_version(parent: etree._Element, namespace: str) -> None:
    spec = etree.SubElement(parent, f"{{{namespace}}}specVersion")
    _text(spec, namespace, "major", str(SPEC_VERSION[0]))
    _text(spec, namespace, "minor", str(SPEC_VERSION[1]))


def _device_element(
    parent: etree._Element, root: RootDevice, device: Device, info: DeviceInfo
) -> None:
    ns = DEVICE_NAMESPACE
    element = etree.SubElement(parent, f"{{{ns}}}device")
    is_root = device is root.tree
    _text(element, ns, "deviceType", device.device_type)
    _text(element, ns, "friendlyName", info.friendly_name if is_root else device.kind)
    _text(element, ns, "manufacturer", info.manufacturer)
    if info.manufacturer_url is not None:
        _text(element, ns, "manufacturerURL", info.manufacturer_url)
    if info.model_description is not None:
        _text(element, ns, "modelDescription", info.model_description)
    _text(element, ns, "modelName", info.model_name)
    if info.model_number is not None:
        _text(element, ns, "modelNumber", info.model_number)
    if info.model_url is not None:
        _text(element, ns, "modelURL", info.model_url)
    if info.serial_number is not None:
        _text(element, ns, "serialNumber", info.serial_number)
    _text(element, ns, "UDN", format_udn(root.udn_of(device)))
    endpoints = [e for e in root.services() if e.device is device]
    if endpoints:
        service_list = etree.SubElement(element, f"{{{ns}}}serviceList")
        for endpoint in endpoints:
            service = etree.SubElement(service_list, f"{{{ns}}}service")
            _text(service, ns, "serviceType", endpoint.service.service_type)
            _text(service, ns, "serviceId", endpoint.service.service_id)
            _text(service, ns, "SCPDURL", endpoint.scpd_path)
            _text(service, ns, "controlURL", endpoint.control_path)
            _text(service, ns, "eventSubURL", endpoint.event_path)
    if device.devices:  # DESC-06: deviceList only when there are embedded devices.
        device_list = etree.SubElement(element, f"{{{ns}}}deviceList")
        for embedded in device.devices:
            _device_element(device_list, root, embedded, info)
    if is_root and info.presentation_url is not None:
        _text(element, ns, "presentationURL", info.presentation_url)  # DESC-09


def _render_root(root: RootDevice, config_id: int, info: DeviceInfo) -> bytes:
    _check_config_id(config_id)
    element = _document_element(DEVICE_NAMESPACE, "root", config_id)
    _spec_version(element, DEVICE_NAMESPACE)
    _device_element(element, root, root.tree, info)  # no URLBase (DESC-03)
    return _document(element)


def render_root_description(
    root: RootDevice,
    *,
    config_id: int,
    friendly_name: str,
    manufacturer: str,
    model_name: str,
    model_number: str | None,
    presentation_url: str | None,
    serial_number: str | None = None,
    manufacturer_url: str | None = None,
    model_description: str | None = None,
    model_url: str | None = None,
) -> bytes:
    """The root description of ``root`` (DESC-02..09); ValueError on texts breaking DESC-05."""
    info = DeviceInfo(
        friendly_name=friendly_name,
        manufacturer=manufacturer,
        model_name=model_name,
        model_number=model_number,
        presentation_url=presentation_url,
        serial_number=serial_number,
        manufacturer_url=manufacturer_url,
        model_description=model_description,
        model_url=model_url,
    )
    return _render_root(root, config_id, info)


def render_scpd(service: Service, *, config_id: int) -> bytes:
    """The SCPD of ``service``: actions and state table in table order (DESC-10..12)."""
    _check_config_id(config_id)
    ns = SERVICE_NAMESPACE
    scpd = _document_element(ns, "scpd", config_id)
    _spec_version(scpd, ns)
    if service.actions:
        action_list = etree.SubElement(scpd, f"{{{ns}}}actionList")
        for action in service.actions:
            element = etree.SubElement(action_list, f"{{{ns}}}action")
            _text(element, ns, "name", action.name)
            if action.arguments:
                argument_list = etree.SubElement(element, f"{{{ns}}}argumentList")
                for argument in action.arguments:  # in before out, checked by Action (DESC-11)
                    arg = etree.SubElement(argument_list, f"{{{ns}}}argument")
                    _text(arg, ns, "name", argument.name)
                    _text(arg, ns, "direction", argument.direction)
                    _text(arg, ns, "relatedStateVariable", argument.state_variable)
    table = etree.SubElement(scpd, f"{{{ns}}}serviceStateTable")
    for variable in service.state_variables:
        events = "yes" if variable.send_events else "no"
        element = etree.SubElement(table, f"{{{ns}}}stateVariable", {"sendEvents": events})
        _text(element, ns, "name", variable.name)
        _text(element, ns, "dataType", variable.data_type)
        if variable.default is not None:
            _text(element, ns, "defaultValue", variable.default)
        if variable.allowed_values:
            values = etree.SubElement(element, f"{{{ns}}}allowedValueList")
            for value in variable.allowed_values:
                _text(values, ns, "allowedValue", value)
        if variable.allowed_range is not None:
            value_range = etree.SubElement(element, f"{{{ns}}}allowedValueRange")
            _text(value_range, ns, "minimum", str(variable.allowed_range[0]))
            _text(value_range, ns, "maximum", str(variable.allowed_range[1]))
    return _document(scpd)


def config_id_for(*documents: bytes) -> int:
    """A stable 24-bit hash of the documents, in 0..CONFIG_ID_MAX (SSDP-10); order matters."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(len(document).to_bytes(8, "big"))
        digest.update(document)
    return int.from_bytes(digest.digest()[:3], "big")


@dataclass(frozen=True, slots=True)
class Documents:
    """Everything one root serves by GET: ``by_path`` maps each path to its bytes (DESC-01/10)."""

    config_id: int
    by_path: Mapping[str, bytes] = field(hash=False)


def render_documents(root: RootDevice, info: DeviceInfo) -> Documents:
    """Root description and SCPDs of ``root``, all with one CONFIGID derived from them (SSDP-11).

    The CONFIGID hashes the documents rendered with configId 0, then they are rendered again with
    it, so it changes exactly when a description or SCPD changes (SSDP-10, SSDP-20).
    """

    def render(config_id: int) -> dict[str, bytes]:
        documents = {root.description_path: _render_root(root, config_id, info)}
        for endpoint in root.services():
            documents[endpoint.scpd_path] = render_scpd(endpoint.service, config_id=config_id)
        return documents

    config_id = config_id_for(*render(0).values())
    return Documents(config_id, types.MappingProxyType(render(config_id)))
