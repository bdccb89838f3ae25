"""Adapters that touch the OS for the core: data-plane backends, netlink, name lookup."""
