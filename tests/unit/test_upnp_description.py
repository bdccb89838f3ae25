"""Root descriptions and SCPDs (DESC-*, SSDP-10/11), checked by our parser and a real client."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from async_upnp_client.client import UpnpDevice, UpnpRequester
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.const import HttpRequest, HttpResponse
from async_upnp_client.exceptions import UpnpError
from async_upnp_client.profiles.igd import IgdDevice
from lxml import etree

from igd.upnp.description import (
    CONFIG_ID_MAX,
    CONTENT_TYPE,
    DeviceInfo,
    config_id_for,
    render_documents,
    render_root_description,
    render_scpd,
)
from igd.upnp.device import GATEWAY_PROFILES, RootDevice, Service
from igd.upnp.xml import parse_xml

BASE = uuid.UUID("5f0c7d1e-8a4b-4c2d-9e3f-a1b2c3d4e5f6")
DEVICE_NS = "urn:schemas-upnp-org:device-1-0"
SERVICE_NS = "urn:schemas-upnp-org:service-1-0"
D = {"d": DEVICE_NS}
S = {"s": SERVICE_NS}
BASE_URL = "http://198.18.0.1:5000"
INFO = DeviceInfo(
    friendly_name="Lab gateway",
    manufacturer="igd project",
    model_name="igd",
    model_number="0.1",
    presentation_url="/",
)


def root_for(version: int) -> RootDevice:
    return RootDevice.create(version, BASE, f"/igd{version}")


def describe(root: RootDevice, *, config_id: int = 42, **changes: str | None) -> bytes:
    fields: dict[str, str | None] = {
        "friendly_name": INFO.friendly_name,
        "manufacturer": INFO.manufacturer,
        "model_name": INFO.model_name,
        "model_number": INFO.model_number,
        "presentation_url": INFO.presentation_url,
    } | changes
    return render_root_description(
        root,
        config_id=config_id,
        friendly_name=fields["friendly_name"] or "",
        manufacturer=fields["manufacturer"] or "",
        model_name=fields["model_name"] or "",
        model_number=fields["model_number"],
        presentation_url=fields["presentation_url"],
        serial_number=fields.get("serial_number"),
    )


def text(element: etree._Element, path: str, ns: Mapping[str, str] = D) -> str | None:
    return element.findtext(path, namespaces=ns)


@pytest.fixture(params=GATEWAY_PROFILES)
def root(request: pytest.FixtureRequest) -> RootDevice:
    return root_for(request.param)


# ---- root description ---------------------------------------------------------------------------


def test_root_description_header(root: RootDevice) -> None:
    """DESC-02/03, SSDP-11: UTF-8 declaration, <root configId>, specVersion 1.1, no URLBase."""
    document = describe(root, config_id=1234)
    assert document.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<root xmlns="')
    element = parse_xml(document)
    assert element.tag == f"{{{DEVICE_NS}}}root"
    assert element.get("configId") == "1234"
    assert (text(element, "d:specVersion/d:major"), text(element, "d:specVersion/d:minor")) == (
        "1",
        "1",
    )
    assert element.find("d:URLBase", D) is None
    assert CONTENT_TYPE == 'text/xml; charset="utf-8"'


def test_root_description_lists_every_device_and_service(root: RootDevice) -> None:
    """DESC-04/06/07/08, IGD-02: each device with its UDN, each service with type, id and paths."""
    element = parse_xml(describe(root))
    devices = element.findall(".//d:device", D)
    assert [text(d, "d:deviceType") for d in devices] == [d.device_type for d in root.tree.walk()]
    assert [text(d, "d:UDN") for d in devices] == [
        f"uuid:{root.udn_of(d)}" for d in root.tree.walk()
    ]
    for device in devices:
        for tag in ("friendlyName", "manufacturer", "modelName"):
            assert text(device, f"d:{tag}"), tag
    services = element.findall(".//d:service", D)
    assert [
        (
            text(s, "d:serviceType"),
            text(s, "d:serviceId"),
            text(s, "d:SCPDURL"),
            text(s, "d:controlURL"),
            text(s, "d:eventSubURL"),
        )
        for s in services
    ] == [
        (
            e.service.service_type,
            e.service.service_id,
            e.scpd_path,
            e.control_path,
            e.event_path,
        )
        for e in root.services()
    ]
    # DESC-06: deviceList only where there are embedded devices (not in WANConnectionDevice).
    assert len(element.findall(".//d:deviceList", D)) == 2
    assert b"WANPPPConnection" not in describe(root)
    assert b"LANDevice" not in describe(root)


def test_presentation_url_only_on_the_root_and_only_when_given(root: RootDevice) -> None:
    """DESC-09: presentationURL in the root device when configured, absent otherwise."""
    element = parse_xml(describe(root, presentation_url="http://198.18.0.1/"))
    assert [p.text for p in element.iterfind(".//d:presentationURL", D)] == ["http://198.18.0.1/"]
    assert text(element, "d:device/d:presentationURL") == "http://198.18.0.1/"
    assert parse_xml(describe(root, presentation_url=None)).find(".//d:presentationURL", D) is None


def test_optional_fields(root: RootDevice) -> None:
    """DESC-04: serialNumber and modelNumber appear only when given."""
    element = parse_xml(describe(root, serial_number="SN-1", model_number=None))
    assert text(element, "d:device/d:serialNumber") == "SN-1"
    assert element.find(".//d:modelNumber", D) is None


def test_texts_are_escaped() -> None:
    """CTRL-12: operator texts are XML-escaped, never able to inject markup."""
    document = describe(root_for(2), friendly_name="A & B <x/>", manufacturer="]]> \"'")
    element = parse_xml(document)
    assert text(element, "d:device/d:friendlyName") == "A & B <x/>"
    assert text(element, "d:device/d:manufacturer") == "]]> \"'"
    assert b"<x/>" not in document


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("friendly_name", 64),
        ("manufacturer", 64),
        ("model_name", 32),
        ("model_number", 32),
        ("serial_number", 64),
    ],
)
def test_length_limits(field: str, limit: int) -> None:
    """DESC-05: each text must be shorter than its limit; longer ones raise ValueError."""
    longest = replace(INFO, **{field: "x" * (limit - 1)})
    assert (
        b"x" * (limit - 1) in render_documents(root_for(1), longest).by_path["/igd1/rootDesc.xml"]
    )
    with pytest.raises(ValueError, match="DESC-05"):
        replace(INFO, **{field: "x" * limit})


def test_model_description_limit() -> None:
    """DESC-05: modelDescription shorter than 128 characters."""
    DeviceInfo("a", "b", "c", model_description="d" * 127)
    with pytest.raises(ValueError, match="DESC-05"):
        DeviceInfo("a", "b", "c", model_description="d" * 128)


@pytest.mark.parametrize("value", ["", "   ", "a\nb", "a\x00b", "a\x7fb", "\ud800"])
def test_bad_texts_are_refused(value: str) -> None:
    """DESC-04: required texts are non-empty, without control characters."""
    with pytest.raises(ValueError, match="friendly_name"):
        describe(root_for(2), friendly_name=value)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x/", "http://a b/", "x", "/\n"])
def test_bad_urls_are_refused(url: str) -> None:
    """DESC-09: presentationURL is an absolute path or an http(s) URL."""
    with pytest.raises(ValueError, match="presentation_url"):
        describe(root_for(2), presentation_url=url)


@pytest.mark.parametrize("config_id", [-1, CONFIG_ID_MAX + 1])
def test_config_id_range(config_id: int) -> None:
    """SSDP-10: configId in 0..16777215."""
    with pytest.raises(ValueError, match="SSDP-10"):
        describe(root_for(2), config_id=config_id)
    service = root_for(2).services()[0].service
    with pytest.raises(ValueError, match="SSDP-10"):
        render_scpd(service, config_id=config_id)
    describe(root_for(2), config_id=CONFIG_ID_MAX)


# ---- SCPD ---------------------------------------------------------------------------------------


ALL_SERVICES = [
    pytest.param(e.service, id=f"{e.service.kind}:{e.service.version}")
    for version in GATEWAY_PROFILES
    for e in root_for(version).services()
]


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_scpd_lists_every_action_and_argument(service: Service) -> None:
    """DESC-10/11: every action, its arguments in order (in before out), with their variables."""
    element = parse_xml(render_scpd(service, config_id=7))
    assert element.tag == f"{{{SERVICE_NS}}}scpd"
    assert element.get("configId") == "7"
    assert text(element, "s:specVersion/s:minor", S) == "1"
    actions = element.findall("s:actionList/s:action", S)
    assert [text(a, "s:name", S) for a in actions] == [a.name for a in service.actions]
    for action_element, action in zip(actions, service.actions, strict=True):
        arguments = [
            (
                text(a, "s:name", S),
                text(a, "s:direction", S),
                text(a, "s:relatedStateVariable", S),
            )
            for a in action_element.iterfind("s:argumentList/s:argument", S)
        ]
        assert arguments == [(a.name, a.direction, a.state_variable) for a in action.arguments]
        if not action.arguments:
            assert action_element.find("s:argumentList", S) is None


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_scpd_state_table(service: Service) -> None:
    """DESC-10/12: sendEvents, dataType, defaultValue, allowedValueList/Range for each variable."""
    element = parse_xml(render_scpd(service, config_id=7))
    variables = element.findall("s:serviceStateTable/s:stateVariable", S)
    assert len(variables) == len(service.state_variables)
    for variable_element, variable in zip(variables, service.state_variables, strict=True):
        assert text(variable_element, "s:name", S) == variable.name
        assert text(variable_element, "s:dataType", S) == variable.data_type
        assert variable_element.get("sendEvents") == ("yes" if variable.send_events else "no")
        if variable.name.startswith("A_ARG_TYPE_"):
            assert variable_element.get("sendEvents") == "no"
        assert text(variable_element, "s:defaultValue", S) == variable.default
        values = [v.text for v in variable_element.iterfind("s:allowedValueList/s:allowedValue", S)]
        assert tuple(values) == variable.allowed_values
        low = text(variable_element, "s:allowedValueRange/s:minimum", S)
        high = text(variable_element, "s:allowedValueRange/s:maximum", S)
        expected = variable.allowed_range
        assert (low, high) == ((None, None) if expected is None else tuple(map(str, expected)))


def test_v1_scpd_has_no_igd2_actions() -> None:
    """DESC-16: the IGD:1 WANIPConnection SCPD lists none of the IGD2-only actions."""
    document = render_scpd(root_for(1).services()[-1].service, config_id=0)
    for name in (b"AddAnyPortMapping", b"DeletePortMappingRange", b"GetListOfPortMappings"):
        assert name not in document
    assert b"SystemUpdateID" not in document
    assert b"<name>AddAnyPortMapping</name>" in render_scpd(
        root_for(2).services()[-1].service, config_id=0
    )


# ---- determinism and CONFIGID -------------------------------------------------------------------


def test_rendering_is_deterministic(root: RootDevice) -> None:
    """SSDP-10: same input, same bytes, so CONFIGID can be a hash of the documents."""
    again = RootDevice.create(root.version, BASE, root.url_prefix)
    assert describe(root) == describe(again)
    for mine, theirs in zip(root.services(), again.services(), strict=True):
        assert render_scpd(mine.service, config_id=3) == render_scpd(theirs.service, config_id=3)


def test_config_id_for_is_a_stable_24_bit_hash() -> None:
    """SSDP-10: CONFIGID in 0..16777215; stable; changes with content and with document order."""
    assert config_id_for(b"a", b"b") == config_id_for(b"a", b"b")
    assert 0 <= config_id_for(b"a", b"b") <= CONFIG_ID_MAX
    assert config_id_for(b"a", b"b") != config_id_for(b"b", b"a")
    assert config_id_for(b"ab") != config_id_for(b"a", b"b")
    assert config_id_for(b"") != config_id_for()
    # Pinned: SHA-256 over length-prefixed documents, first 24 bits; no per-process salt.
    digest = hashlib.sha256((3).to_bytes(8, "big") + b"igd").digest()
    assert config_id_for(b"igd") == int.from_bytes(digest[:3], "big")


def test_render_documents_carries_one_config_id(root: RootDevice) -> None:
    """SSDP-11: root description and every SCPD carry the same configId, derived from them."""
    documents = render_documents(root, INFO)
    assert set(documents.by_path) == {root.description_path} | {
        e.scpd_path for e in root.services()
    }
    for document in documents.by_path.values():
        assert parse_xml(document).get("configId") == str(documents.config_id)
    assert render_documents(root, INFO) == documents
    renamed = render_documents(root, DeviceInfo("Other name", "igd project", "igd", "0.1", "/"))
    assert renamed.config_id != documents.config_id
    unnumbered = [describe(root, config_id=0)] + [
        render_scpd(e.service, config_id=0) for e in root.services()
    ]
    assert documents.config_id == config_id_for(*unnumbered)


def test_igd1_and_igd2_have_different_config_ids() -> None:
    """SSDP-10: different descriptions, different CONFIGIDs (with overwhelming probability)."""
    assert render_documents(root_for(1), INFO).config_id != (
        render_documents(root_for(2), INFO).config_id
    )


def test_documents_fit_the_parser_limits(root: RootDevice) -> None:
    """GEN-10: our own documents stay well inside the hardened parser's default limits."""
    for document in render_documents(root, INFO).by_path.values():
        assert len(document) < 16384
        parse_xml(document, max_depth=9)


# ---- a real control point: async-upnp-client ----------------------------------------------------


class MemoryRequester(UpnpRequester):
    """Serves rendered documents at BASE_URL; records every request; 404 for anything else."""

    def __init__(self, documents: Mapping[str, bytes]) -> None:
        self.documents = documents
        self.requests: list[HttpRequest] = []

    async def async_http_request(self, http_request: HttpRequest) -> HttpResponse:
        self.requests.append(http_request)
        url = urlsplit(http_request.url)
        document = self.documents.get(url.path)
        if http_request.method != "GET" or url.netloc != "198.18.0.1:5000" or document is None:
            return HttpResponse(404, {}, "")
        return HttpResponse(200, {"Content-Type": CONTENT_TYPE}, document.decode("utf-8"))


async def build_client_device(root: RootDevice) -> tuple[UpnpDevice, MemoryRequester]:
    requester = MemoryRequester(render_documents(root, INFO).by_path)
    device = await UpnpFactory(requester).async_create_device(BASE_URL + root.description_path)
    return device, requester


async def test_async_upnp_client_builds_the_device(root: RootDevice) -> None:
    """DESC-01/10, landscape 5.1 C5: a strict real client reads the description and every SCPD."""
    device, requester = await build_client_device(root)
    assert [r.url for r in requester.requests] == [BASE_URL + root.description_path] + [
        BASE_URL + e.scpd_path for e in root.services()
    ]
    assert device.device_type == root.tree.device_type
    assert device.udn == f"uuid:{root.udn}"
    assert device.friendly_name == "Lab gateway"
    assert [d.device_type for d in device.all_devices] == [d.device_type for d in root.tree.walk()]
    for endpoint in root.services():
        service = device.find_service(endpoint.service.service_type)
        assert service is not None
        assert service.service_id == endpoint.service.service_id
        assert service.control_url == BASE_URL + endpoint.control_path
        assert service.event_sub_url == BASE_URL + endpoint.event_path
        assert set(service.actions) == {a.name for a in endpoint.service.actions}
        assert set(service.state_variables) == {v.name for v in endpoint.service.state_variables}


async def test_async_upnp_client_accepts_it_as_an_igd(root: RootDevice) -> None:
    """IGD-01, 4b: IgdDevice recognises both roots and finds WANIPConnection:v and its actions."""
    device, _ = await build_client_device(root)
    assert IgdDevice.is_profile_device(device)
    igd = IgdDevice(device, None)
    assert igd.device_type == f"urn:schemas-upnp-org:device:InternetGatewayDevice:{root.version}"
    wanip = igd.profile_device.find_service(
        f"urn:schemas-upnp-org:service:WANIPConnection:{root.version}"
    )
    assert wanip is not None
    expected = {
        "AddPortMapping",
        "DeletePortMapping",
        "GetExternalIPAddress",
        "GetGenericPortMappingEntry",
        "GetSpecificPortMappingEntry",
        "GetStatusInfo",
        "GetNATRSIPStatus",
        "GetConnectionTypeInfo",
        "RequestConnection",
        "ForceTermination",
    }
    igd2_only = {"AddAnyPortMapping", "DeletePortMappingRange", "GetListOfPortMappings"}
    assert expected <= set(wanip.actions)
    if root.version == 2:
        assert igd2_only <= set(wanip.actions)
    else:
        assert igd2_only.isdisjoint(wanip.actions)
    for service_type in (
        "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
        "urn:schemas-upnp-org:service:Layer3Forwarding:1",
    ):
        assert igd.profile_device.find_service(service_type) is not None


async def test_client_validation_follows_our_scpd() -> None:
    """WIP-12/17: the client enforces our v2 ranges (lease 0..604800, InternalPort >= 1)."""
    device, _ = await build_client_device(root_for(2))
    wanip = device.find_service("urn:schemas-upnp-org:service:WANIPConnection:2")
    assert wanip is not None
    add = wanip.action("AddPortMapping")
    arguments: dict[str, object] = {
        "NewRemoteHost": "",
        "NewExternalPort": 40000,
        "NewProtocol": "UDP",
        "NewInternalPort": 40000,
        "NewInternalClient": "198.18.0.10",
        "NewEnabled": True,
        "NewPortMappingDescription": "test",
        "NewLeaseDuration": 0,
    }
    add.validate_arguments(**arguments)
    for name, bad in (("NewInternalPort", 0), ("NewLeaseDuration", 604801), ("NewProtocol", "x")):
        with pytest.raises((UpnpError, ValueError)):
            add.validate_arguments(**(arguments | {name: bad}))


async def test_client_soap_requests_parse_with_our_parser(root: RootDevice) -> None:
    """CTRL-03, CTRL-12: the SOAP body a real client sends is accepted by our hardened parser."""
    device, _ = await build_client_device(root)
    wanip = device.find_service(f"urn:schemas-upnp-org:service:WANIPConnection:{root.version}")
    assert wanip is not None
    request = wanip.action("DeletePortMapping").create_request(
        NewRemoteHost="", NewExternalPort=40000, NewProtocol="TCP"
    )
    assert request.body is not None
    envelope = parse_xml(request.body.encode("utf-8"))
    soap = "http://schemas.xmlsoap.org/soap/envelope/"
    body = envelope.find(f"{{{soap}}}Body")
    assert body is not None
    (call,) = body
    assert call.tag == f"{{{wanip.service_type}}}DeletePortMapping"
    assert [child.tag for child in call] == ["NewRemoteHost", "NewExternalPort", "NewProtocol"]
    assert request.headers["SOAPAction"] == f'"{wanip.service_type}#DeletePortMapping"'
