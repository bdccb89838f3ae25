"""SIGHUP reloads the configuration (issue 6): live keys apply, mappings stay, bad files change
nothing, restart-only keys are named. As a subprocess on lo (no root), and in process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from integration.test_daemon import (
    Daemon,
    SoapFault,
    Spawner,
    add_mapping,
    get_mapping,
    http_get,
    in_process_config,
)

from igd.config import Config, ConfigError, load_config
from igd.daemon import Daemon as InProcessDaemon
from igd.daemon import serve

LOG_TIMEOUT_S = 10.0


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    try:
        yield spawner
    finally:
        spawner.cleanup()


def wait_for_log(daemon: Daemon, pattern: str, *, count: int = 1) -> list[str]:
    """The stderr lines matching `pattern`, once there are `count` of them (bounded wait)."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while True:
        lines = [line for line in daemon.stderr.splitlines() if re.search(pattern, line)]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern!r} in the log within {LOG_TIMEOUT_S} s: {daemon.stderr}")
        time.sleep(0.05)


def hangup(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGHUP)


def test_reload_applies_policy_to_new_requests_and_keeps_mappings(
    spawner: Spawner, tmp_path: Path
) -> None:
    path = tmp_path / "igd.toml"
    path.write_text('rules = ["allow 1024-65535 0.0.0.0/0 1024-65535"]\n')
    daemon = spawner.start("--config", str(path))
    url = daemon.urls[2]
    add_mapping(url, 40000)
    add_mapping(url, 40001)

    path.write_text('quota_per_client = 3\nrules = ["allow 1024-40005 0.0.0.0/0 1024-65535"]\n')
    hangup(daemon)
    (line,) = wait_for_log(daemon, r"reload: applied ")
    assert line.endswith("reload: applied rules, quota_per_client")
    assert "restart needed" not in daemon.stderr

    assert get_mapping(url, 40000)["NewInternalClient"] == "127.0.0.1"  # existing ones stay
    assert get_mapping(url, 40001)["NewInternalClient"] == "127.0.0.1"
    with pytest.raises(SoapFault):
        add_mapping(url, 40010)  # outside the new rule
    add_mapping(url, 40002)  # the third: within the new quota
    with pytest.raises(SoapFault) as caught:
        add_mapping(url, 40003)  # the fourth: over it
    assert caught.value.code == 728  # NoPortMapsAvailable
    assert daemon.process.poll() is None
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.stderr


def test_invalid_reload_logs_one_error_and_keeps_the_running_config(
    spawner: Spawner, tmp_path: Path
) -> None:
    path = tmp_path / "igd.toml"
    path.write_text("quota_per_client = 2\n")
    daemon = spawner.start("--config", str(path))
    url = daemon.urls[2]
    add_mapping(url, 40000)

    path.write_text("quota_per_client = 0\n")
    hangup(daemon)
    (line,) = wait_for_log(daemon, r" ERROR ")
    assert re.search(
        re.escape(f"reload: {path}: quota_per_client: 0 is not positive; ")
        + "the running configuration stays$",
        line,
    ), line
    path.write_text("quota_per_client = [")  # not TOML either
    hangup(daemon)
    wait_for_log(daemon, r" ERROR ", count=2)

    add_mapping(url, 40001)  # quota 2 still applies
    with pytest.raises(SoapFault):
        add_mapping(url, 40002)
    assert daemon.process.poll() is None
    errors = [line for line in daemon.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 2, errors
    assert "Traceback" not in daemon.stderr
    assert daemon.stop() == 0


def test_restart_only_change_is_named_and_not_applied(spawner: Spawner, tmp_path: Path) -> None:
    path = tmp_path / "igd.toml"
    path.write_text('friendly_name = "Before"\n')
    daemon = spawner.start("--config", str(path))
    path.write_text('friendly_name = "After"\nigd_version = 2\nmax_lease_s = 60\n')
    hangup(daemon)
    (line,) = wait_for_log(daemon, r"restart needed for: ")
    assert " WARNING " in line
    assert line.endswith("reload: restart needed for: igd_version, friendly_name")
    wait_for_log(daemon, r"reload: applied max_lease_s$")
    assert "<friendlyName>Before</friendlyName>" in http_get(daemon.urls[2])[2]

    path.write_text('friendly_name = "After"\nigd_version = 2\nmax_lease_s = 60\n')
    hangup(daemon)  # nothing new since: the same restart-only keys are named again
    wait_for_log(daemon, r"restart needed for: igd_version, friendly_name", count=2)
    assert daemon.stop() == 0


# ---- In process ----------------------------------------------------------------------------------


async def test_daemon_reload_in_process(tmp_path: Path) -> None:
    config = in_process_config(tmp_path)
    daemon = InProcessDaemon(config)
    level = logging.getLogger().level
    await daemon.start()
    try:
        core = daemon.core
        assert core is not None
        http_port = daemon.http_port
        assert daemon.reload(config) == ()
        changed = replace(
            config,
            quota_per_client=5,
            secure_mode=False,
            natpmp_max_lifetime_s=600,
            friendly_name="Other",
            ssdp_port=1,
            log_level="warning",
        )
        assert daemon.reload(changed) == ("ssdp_port", "friendly_name")
        assert core.policy.config.quota_per_client == 5
        assert core.policy.config.secure_mode is False
        assert daemon.natpmp is not None
        assert daemon.natpmp.max_lifetime_s == 600
        assert daemon.config.friendly_name == config.friendly_name  # not applied
        assert daemon.config.ssdp_port == config.ssdp_port
        reserved = core.policy.config.reserved_ports
        assert any(port == http_port for _, port in reserved)  # own ports still reserved
    finally:
        await daemon.stop()
        logging.getLogger().setLevel(level)


async def test_serve_reloads_on_sighup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "igd.toml"
    path.write_text("quota_per_client = 7\n")
    overrides = {"state_dir": tmp_path / "state", "ssdp_port": 0, "pcp_port": 0}
    stop = asyncio.Event()
    started = asyncio.Event()
    reloaded = asyncio.Event()
    daemons: list[InProcessDaemon] = []

    def ready(daemon: InProcessDaemon) -> None:
        daemons.append(daemon)
        started.set()

    def reload() -> Config:
        try:
            return load_config(path, overrides)
        finally:
            reloaded.set()

    async def hangup_and_wait() -> None:
        reloaded.clear()
        os.kill(os.getpid(), signal.SIGHUP)
        await reloaded.wait()
        await asyncio.sleep(0)  # the handler applies the configuration right after loading it

    async def drive() -> None:
        await started.wait()
        core = daemons[0].core
        assert core is not None
        assert core.policy.config.quota_per_client == 7
        path.write_text("quota_per_client = 4\n")
        await hangup_and_wait()
        assert core.policy.config.quota_per_client == 4
        path.write_text("quota_per_client = -1\n")
        await hangup_and_wait()
        assert core.policy.config.quota_per_client == 4
        stop.set()

    caplog.set_level("INFO", logger="igd.daemon")
    async with asyncio.timeout(30):
        await asyncio.gather(
            serve(load_config(path, overrides), on_ready=ready, stop=stop, reload=reload),
            drive(),
        )
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "quota_per_client: -1 is not positive; the running configuration stays" in (
        errors[0].getMessage()
    )
    with pytest.raises(ConfigError):
        load_config(path, overrides)
