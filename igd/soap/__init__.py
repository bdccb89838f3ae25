"""igd.soap: the UPnP control front-end (SOAP 1.1 over HTTP, specs.md 1.5 CTRL-01..14).

- `envelope`: pure codec. SOAPACTION header and body bytes -> `ActionCall`; outputs -> response or
  fault bytes. Bad bytes from the network raise `SoapParseError` (HTTP 400 / fault 401 / fault 402).
- `errors`: the `UPnPError` tree (wire codes on the classes) and `upnp_error_for`, the one table
  turning core errors (`igd.natcore.NatError`) into the fault for a service version and action.
- `types`: typed argument codecs for the UPnP data types IGD uses (CTRL-11).

This file imports nothing, so importing the pure `envelope` does not pull in the core.
"""
