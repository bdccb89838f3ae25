"""Hardened XML parsing for bytes from the network (architecture.md section 4, ST-12).

Every failure is an ``XmlError``; no lxml exception escapes. The input must be UTF-8 (GEN-07) and
is decoded as UTF-8 whatever its XML declaration says, so no other encoding (UTF-7, UTF-16, ...)
can hide a ``<!DOCTYPE`` from the check below. DTDs and entity declarations are refused before
parsing; entities are never resolved, nothing is fetched, size and nesting depth are bounded.

Pure module: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["MAX_XML_BYTES", "MAX_XML_DEPTH", "XmlError", "parse_xml"]

MAX_XML_BYTES = 65536
"""Default bound on a document's size, the SOAP body limit of GEN-10 (64 KiB)."""

MAX_XML_DEPTH = 32
"""Default bound on element nesting; a SOAP request needs 4 levels, a port listing 5 (ST-12)."""

_FORBIDDEN_MARKUP = ("<!DOCTYPE", "<!ENTITY")


class XmlError(ValueError):
    """Bytes from the network that are not an acceptable XML document (a remote fault)."""


def _new_parser() -> etree.XMLParser:
    # A fresh parser per document: lxml parsers keep state and are not shareable across threads.
    return etree.XMLParser(
        encoding="utf-8",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )


def parse_xml(
    data: bytes, *, max_bytes: int = MAX_XML_BYTES, max_depth: int = MAX_XML_DEPTH
) -> etree._Element:
    """Root element of ``data``; XmlError if oversize, not UTF-8, with a DTD, malformed or deep."""
    if not isinstance(data, bytes):
        raise TypeError(f"parse_xml takes bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise XmlError(f"document of {len(data)} bytes exceeds {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlError(f"document is not UTF-8 (byte {exc.start})") from None
    for markup in _FORBIDDEN_MARKUP:
        if markup in text:
            raise XmlError(f"{markup} is not accepted")
    try:
        root = etree.fromstring(data, _new_parser())
    except (etree.LxmlError, ValueError) as exc:
        raise XmlError(f"malformed XML: {exc}") from None
    if root is None:
        raise XmlError("no root element")
    depth = _depth(root)
    if depth > max_depth:
        raise XmlError(f"elements nested {depth} deep, more than {max_depth}")
    return root


def _depth(root: etree._Element) -> int:
    """Greatest element nesting depth under ``root`` (root alone: 1), without recursion."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in element if isinstance(child.tag, str))
    return deepest
