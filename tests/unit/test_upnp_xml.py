"""The hardened XML parser: architecture.md section 4, CTRL-12, ST-12 (XXE, entities, depth)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from igd.upnp.xml import MAX_XML_BYTES, MAX_XML_DEPTH, XmlError, parse_xml

SOAP = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
    b' s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
    b"<s:Body><u:GetExternalIPAddress"
    b' xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"/></s:Body></s:Envelope>'
)


def nested(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


def test_parses_a_soap_envelope() -> None:
    """CTRL-03: an ordinary SOAP request parses into its element tree."""
    root = parse_xml(SOAP)
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    action = root[0][0]
    assert action.tag == "{urn:schemas-upnp-org:service:WANIPConnection:2}GetExternalIPAddress"


def test_accepts_utf8_text_bom_and_predefined_entities() -> None:
    """GEN-07: UTF-8 (with or without BOM); the five predefined entities and char refs work."""
    root = parse_xml("\ufeff<a>é &amp; &lt; &#65; 日本</a>".encode())
    assert root.text == "é & < A 日本"


def test_xml_error_is_a_value_error() -> None:
    """Rule 5.4: a remote fault, catchable as ValueError, never an lxml type."""
    assert issubclass(XmlError, ValueError)
    assert not issubclass(XmlError, etree.LxmlError)


def test_external_entity_is_refused(tmp_path: Path) -> None:
    """ST-12 XXE: a SYSTEM entity pointing at a local file is refused, the file never read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    document = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]><r>&x;</r>'
    ).encode()
    with pytest.raises(XmlError, match="DOCTYPE") as caught:
        parse_xml(document)
    assert "TOP-SECRET" not in str(caught.value)


def test_external_dtd_is_refused() -> None:
    """ST-12: an external DTD (network fetch) is refused before parsing."""
    with pytest.raises(XmlError, match="DOCTYPE"):
        parse_xml(b'<!DOCTYPE r SYSTEM "http://198.18.0.10/evil.dtd"><r/>')


def test_billion_laughs_is_refused() -> None:
    """ST-12: the exponential entity expansion never starts."""
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))
    document = f"<!DOCTYPE r [{entities}]><r>&l9;</r>".encode()
    with pytest.raises(XmlError):
        parse_xml(document)


@pytest.mark.parametrize(
    "document",
    [
        b"<!DOCTYPE r><r/>",
        b"<!DOCTYPE r []><r/>",
        b'<?xml version="1.0"?>\n<!DOCTYPE r PUBLIC "-//x//y" "y.dtd"><r/>',
        b'<r><!ENTITY x "y"></r>',
        b"<r><![CDATA[<!DOCTYPE]]></r>",
    ],
)
def test_any_doctype_or_entity_declaration_is_refused(document: bytes) -> None:
    """Architecture 4: any <!DOCTYPE or <!ENTITY is refused, even where harmless."""
    with pytest.raises(XmlError, match="is not accepted"):
        parse_xml(document)


def test_another_encoding_cannot_hide_a_doctype() -> None:
    """ST-12: UTF-16 and UTF-7 could hide '<!DOCTYPE' from a byte scan; both are refused."""
    hidden = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'
    with pytest.raises(XmlError, match="UTF-8"):
        parse_xml(hidden.encode("utf-16"))
    utf7 = (
        b'<?xml version="1.0" encoding="UTF-7"?>'
        b"+ADwAIQ-DOCTYPE r +AFsAPAAh-ENTITY x +ACI-y+ACIAPgBd-+AD4-<r>&x;</r>"
    )
    with pytest.raises(XmlError):
        parse_xml(utf7)


def test_declared_encoding_is_ignored_for_utf8() -> None:
    """GEN-07: the bytes are decoded as UTF-8 whatever the declaration claims."""
    root = parse_xml('<?xml version="1.0" encoding="ISO-8859-1"?><a>é</a>'.encode())
    assert root.text == "é"


def test_nesting_depth_is_bounded() -> None:
    """ST-12: max_depth elements deep is accepted, one more is refused."""
    assert parse_xml(nested(MAX_XML_DEPTH)).tag == "a"
    with pytest.raises(XmlError, match="nested 33 deep"):
        parse_xml(nested(MAX_XML_DEPTH + 1))
    with pytest.raises(XmlError, match="nested"):
        parse_xml(nested(5), max_depth=4)
    assert parse_xml(nested(4), max_depth=4).tag == "a"


def test_very_deep_nesting_is_refused_without_recursion() -> None:
    """ST-12: a 100,000-deep document (within the size bound) is refused, no RecursionError."""
    with pytest.raises(XmlError):
        parse_xml(nested(100_000), max_bytes=1_000_000)


def test_depth_counts_elements_not_comments() -> None:
    """Depth is element nesting; comments and processing instructions do not add to it."""
    assert parse_xml(b"<a><!-- c --><?pi x?><b/></a>", max_depth=2).tag == "a"


def test_size_is_bounded() -> None:
    """GEN-10: documents over max_bytes are refused before parsing."""
    filler = b"<a>" + b"x" * (MAX_XML_BYTES - 7) + b"</a>"
    assert len(filler) == MAX_XML_BYTES
    assert parse_xml(filler).tag == "a"
    with pytest.raises(XmlError, match="exceeds"):
        parse_xml(filler + b" ")
    with pytest.raises(XmlError, match="exceeds 10"):
        parse_xml(b"<a>xxxxxxxx</a>", max_bytes=10)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"   ",
        b"\xff\xfe\x00<",
        b"<a>\xc3</a>",
        b"\x80\x81\x82",
        b"<a>\x00</a>",
        b"<a",
        b"<a><b></a>",
        SOAP[:-20],
        b"<a>&undefined;</a>",
        b"<a/><b/>",
        b"text",
        b"<!-- only a comment -->",
        b'<a xmlns:p="urn:x"><q:b/></a>',
        b'<a x="1" x="2"/>',
    ],
)
def test_malformed_input_raises_xml_error(document: bytes) -> None:
    """Rule 5.4: garbage, non-UTF-8, truncated or ill-formed input is an XmlError only."""
    with pytest.raises(XmlError):
        parse_xml(document)


def test_str_input_is_a_local_error() -> None:
    """Rule 5.4: passing text instead of bytes is our own bug, a TypeError."""
    with pytest.raises(TypeError):
        parse_xml("<a/>")  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_give_an_element_or_xml_error(data: bytes) -> None:
    """ST-12 fuzz: any bytes give an element or XmlError, never another exception."""
    try:
        root = parse_xml(data)
    except XmlError:
        return
    assert isinstance(root.tag, str)


XML_PIECES = st.sampled_from(
    [
        "<a>",
        "</a>",
        "<b x='1'>",
        "</b>",
        "<c/>",
        "&amp;",
        "&x;",
        "&#0;",
        "&#x41;",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<?xml version='1.0'?>",
        "<?pi?>",
        "<!DOCTYPE a>",
        "<!ENTITY e 'v'>",
        "xmlns='urn:x'",
        "<p:a xmlns:p='urn:p'>",
        "</p:a>",
        "\x00",
        "é",
        " ",
        ">",
        "<",
        '"',
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(XML_PIECES, max_size=40).map("".join))
def test_xml_like_text_gives_an_element_or_xml_error(text: str) -> None:
    """ST-12 fuzz: near-XML input reaches the parser's error paths, still only XmlError."""
    try:
        root = parse_xml(text.encode("utf-8"), max_depth=8)
    except XmlError:
        return
    assert isinstance(root.tag, str)
    assert "<!DOCTYPE" not in text
