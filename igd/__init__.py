"""igd: a UPnP Internet Gateway Device and NAT-traversal daemon for Linux, in asyncio.

The front-ends (SSDP, SOAP, GENA; later NAT-PMP and PCP) all end as calls into ``igd.natcore``,
the NAT/firewall core that re-expresses the Windows ICS/ICF sharing model.
"""

__version__ = "0.1.0"
