"""Fixtures of the network-namespace suite (root only): `lab` per test, `module_lab` per module.

Every test in tests/netns gets the `netns` marker and is skipped, with the reason, when the
machine cannot build a lab (not root, no iproute2); it never passes silently. See lab.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from netns.lab import Lab, lab_skip_reason

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder `netns` (select or deselect with -m netns)."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(scope="session", autouse=True)
def _netns_requirements() -> None:
    """Skip the whole folder, before any lab fixture runs, when no lab can be built here."""
    reason = lab_skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab for one test; torn down afterwards whatever happened."""
    with Lab() as built:
        yield built


@pytest.fixture(scope="module")
def module_lab() -> Iterator[Lab]:
    """One lab shared by the tests of a module (cheaper; tests must not depend on each other)."""
    with Lab() as built:
        yield built
