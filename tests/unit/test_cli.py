"""The command line: exit codes and one-line errors; the daemon itself is replaced by a fake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from igd import __version__, daemon
from igd.cli import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, main
from igd.config import Config, ConfigError

Captured = pytest.CaptureFixture[str]


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace the daemon's run with a recorder; the list holds each Config it was given."""
    seen: list[Config] = []

    def fake_run(config: Config, **kwargs: object) -> None:
        seen.append(config)

    monkeypatch.setattr(daemon, "run", fake_run)
    return seen


def one_error_line(capsys: Captured) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("igd: error: "), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def test_version(capsys: Captured) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"igd {__version__}"


def test_help(capsys: Captured) -> None:
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "usage: igd" in out
    for command in ("serve", "status", "connections", "sharing", "firewall", "mappings", "events"):
        assert command in out
    assert "check-config" in out


def test_serve_help_lists_the_flags_and_hides_ssdp_port(capsys: Captured) -> None:
    assert main(["serve", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for flag in (
        "--config",
        "--lan",
        "--wan",
        "--external-ip",
        "--backend",
        "--http-port",
        "--state-dir",
        "--igd-version",
        "--log-level",
        "--allow-private-external",
        "--no-natpmp",
        "--admin-socket",
        "--admin-port",
        "--admin-token-file",
    ):
        assert flag in out
    assert "--ssdp-port" not in out
    assert "--pcp-port" not in out


def test_no_command_prints_help(capsys: Captured) -> None:
    assert main([]) == EXIT_OK
    assert "usage: igd" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["serve", "--bogus"], "unknown option '--bogus'"),
        (["serve", "extra"], "unknown argument 'extra'"),
        (["serve", "--http-port", "eighty"], "argument --http-port: invalid int value"),
        (["serve", "--ssdp-port", "x"], "argument --ssdp-port: invalid int value"),
        (["serve", "--igd-version", "3"], "argument --igd-version: invalid choice: 3"),
        (["serve", "--lan"], "argument --lan: expected one argument"),
        (
            ["serve", "--backend", "bogus"],
            "--backend: 'bogus' is not one of auto, memory, nftables, userspace",
        ),
        (["serve", "--http-port", "70000"], "--http-port: port 70000 is not in 0..65535"),
        (["serve", "--external-ip", "1.2.3"], "--external-ip: '1.2.3' is not an IPv4 address"),
        (["serve", "--log-level", "loud"], "--log-level: 'loud' is not one of"),
        (["serve", "--lan", "lo", "--lan", "lo"], "--lan: interface lo is listed twice"),
        (["serve", "--lan", "eth0", "--wan", "eth0"], "wan: eth0 is also a LAN interface"),
        (["serve", "--pcp-port", "x"], "argument --pcp-port: invalid int value"),
        (["serve", "--pcp-port", "-1"], "--pcp-port: port -1 is not in 0..65535"),
        (["serve", "--admin-port", "0"], "--admin-port: port 0 is not in 1..65535"),
        (["serve", "--admin-port", "8631"], "admin_token_file: needed with admin_port"),
        (["status", "--bogus"], "unknown option '--bogus'"),
        (["mappings", "add", "tcp"], "the following arguments are required"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: Captured, runs: list[Config], argv: list[str], fragment: str
) -> None:
    assert main(argv) == EXIT_USAGE
    assert fragment in one_error_line(capsys)
    assert runs == []


def test_bad_config_file_cases(tmp_path: Path, capsys: Captured, runs: list[Config]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["serve", "--config", str(missing)]) == EXIT_USAGE
    assert one_error_line(capsys) == (
        f"igd: error: config: cannot read {missing}: No such file or directory"
    )

    bad = tmp_path / "bad.toml"
    bad.write_text("lan = [", encoding="utf-8")
    assert main(["serve", "--config", str(bad)]) == EXIT_USAGE
    assert f"config: {bad} is not valid TOML" in one_error_line(capsys)

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("lna = ['lo']\n", encoding="utf-8")
    assert main(["serve", "--config", str(unknown)]) == EXIT_USAGE
    assert one_error_line(capsys) == (
        f"igd: error: {unknown}: lna: unknown key (did you mean 'lan'?)"
    )

    wrong = tmp_path / "wrong.toml"
    wrong.write_text("http_port = 'eighty'\n", encoding="utf-8")
    assert main(["serve", "--config", str(wrong)]) == EXIT_USAGE
    assert f"{wrong}: http_port: expected a port number" in one_error_line(capsys)
    assert runs == []


def test_serve_builds_config_from_file_and_flags(tmp_path: Path, runs: list[Config]) -> None:
    path = tmp_path / "igd.toml"
    path.write_text('http_port = 5000\nfriendly_name = "Lab"\nlan = ["eth9"]\n', encoding="utf-8")
    argv = ["serve", "--config", str(path), "--lan", "lo", "--ssdp-port", "41900"]
    argv += ["--external-ip", "198.19.0.1", "--allow-private-external", "--igd-version", "2"]
    argv += ["--state-dir", str(tmp_path / "state"), "--log-level", "warning"]
    assert main(argv) == EXIT_OK
    (config,) = runs
    assert config.lan == ("lo",)
    assert config.http_port == 5000
    assert config.ssdp_port == 41900
    assert config.friendly_name == "Lab"
    assert str(config.external_ip) == "198.19.0.1"
    assert config.allow_private_external is True
    assert config.igd_version == 2
    assert config.state_dir == tmp_path / "state"
    assert config.log_level == "warning"


def test_serve_defaults(runs: list[Config]) -> None:
    assert main(["serve"]) == EXIT_OK
    assert runs == [Config()]


def test_serve_new_flags(tmp_path: Path, runs: list[Config]) -> None:
    token = tmp_path / "token"
    argv = ["serve", "--no-natpmp", "--pcp-port", "0", "--admin-socket", str(tmp_path / "s")]
    argv += ["--admin-port", "8631", "--admin-token-file", str(token)]
    assert main(argv) == EXIT_OK
    (config,) = runs
    assert config.natpmp is False
    assert config.pcp_port == 0
    assert config.admin_socket == tmp_path / "s"
    assert config.admin_port == 8631
    assert config.admin_token_file == token


def test_serve_passes_a_reload_that_reads_the_file_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reloads: list[Callable[[], Config]] = []

    def fake_run(config: Config, *, reload: Callable[[], Config]) -> None:
        reloads.append(reload)

    monkeypatch.setattr(daemon, "run", fake_run)
    path = tmp_path / "igd.toml"
    path.write_text("quota_per_client = 5\n", encoding="utf-8")
    assert main(["serve", "--config", str(path), "--http-port", "1234"]) == EXIT_OK
    (reload,) = reloads
    path.write_text("quota_per_client = 9\nhttp_port = 80\n", encoding="utf-8")
    config = reload()
    assert config.quota_per_client == 9
    assert config.http_port == 1234  # the flags still win
    path.write_text("quota_per_client = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="quota_per_client"):
        reload()


def test_operator_commands_are_dispatched_to_clicmds(
    monkeypatch: pytest.MonkeyPatch, runs: list[Config]
) -> None:
    from igd import clicmds

    seen: list[str] = []

    def fake_run(args: object) -> int:
        seen.append(str(getattr(args, "command", "")))
        return 3

    monkeypatch.setattr(clicmds, "run", fake_run)
    assert main(["status", "--socket", "/nonexistent/igd.sock"]) == 3
    assert main(["mappings", "list", "--json"]) == 3
    assert seen == ["status", "mappings"]
    assert runs == []


def test_status_without_a_daemon_is_one_line(tmp_path: Path, capsys: Captured) -> None:
    assert main(["status", "--socket", str(tmp_path / "igd.sock")]) == 3
    assert "igd: error: " in one_error_line(capsys)


def test_check_config(tmp_path: Path, capsys: Captured) -> None:
    good = tmp_path / "good.toml"
    good.write_text("natpmp = false\npcp_port = 5351\n", encoding="utf-8")
    assert main(["check-config", str(good)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"{good}: ok"
    bad = tmp_path / "bad.toml"
    bad.write_text("admin_port = 8631\n", encoding="utf-8")
    assert main(["check-config", str(bad)]) == 1
    assert "admin_token_file: needed with admin_port" in one_error_line(capsys)


def test_runtime_failure_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: Captured
) -> None:
    def fail(config: Config, **kwargs: object) -> None:
        raise daemon.DaemonError("http_port: cannot listen on 127.0.0.1:80: address in use")

    monkeypatch.setattr(daemon, "run", fail)
    assert main(["serve", "--log-level", "error"]) == EXIT_RUNTIME
    assert one_error_line(capsys) == (
        "igd: error: http_port: cannot listen on 127.0.0.1:80: address in use"
    )


def test_config_failure_found_at_start_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: Captured
) -> None:
    def fail(config: Config, **kwargs: object) -> None:
        raise ConfigError("lan", "interface nosuch0 does not exist")

    monkeypatch.setattr(daemon, "run", fail)
    assert main(["serve", "--lan", "nosuch0", "--log-level", "error"]) == EXIT_USAGE
    assert one_error_line(capsys) == "igd: error: lan: interface nosuch0 does not exist"


def test_interrupt_before_the_daemon_handles_signals_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: Captured
) -> None:
    def interrupted(config: Config, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(daemon, "run", interrupted)
    assert main(["serve", "--log-level", "error"]) == EXIT_OK
    assert capsys.readouterr().err == ""


def test_python_dash_m_runs_the_cli() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "igd", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"igd {__version__}"
