"""The operator commands without a daemon: parsing, usage errors, check-config, text output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NoReturn

import pytest

from igd import clicmds
from igd.admin.client import AdminClient

MAPPING = {
    "protocol": "TCP",
    "external_port": 8080,
    "remote_host": None,
    "internal_client": "198.18.0.10",
    "internal_port": 80,
    "target_name": None,
    "connection": "wan0",
    "origin": "admin",
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = clicmds.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["reboot"], "invalid choice: 'reboot'"),
        (["mappings"], "required: ACTION"),
        (["sharing", "enable", "wan0"], "one of the arguments --public --private is required"),
        (["sharing", "enable", "wan0", "--public", "--private"], "not allowed with argument"),
        (["sharing", "enable"], "required: CONN"),
        (["firewall", "toggle", "wan0"], "invalid choice: 'toggle'"),
        (["mappings", "add", "sctp", "80", "198.18.0.10"], "protocol must be tcp or udp"),
        (["mappings", "add", "tcp", "0", "198.18.0.10"], "port must be an integer in 1..65535"),
        (["mappings", "add", "tcp", "65536", "198.18.0.10"], "port must be an integer"),
        (["mappings", "add", "tcp", "80", "198.18.0.10", "http"], "port must be an integer"),
        (["mappings", "add", "tcp", "80"], "required: TARGET"),
        (["mappings", "add", "tcp", "80", "h", "--lease", "-5"], "expected a positive integer"),
        (["mappings", "add", "tcp", "80", "h", "--lease", "0"], "expected a positive integer"),
        (["mappings", "remove", "tcp"], "required: PORT"),
        (["mappings", "enable", "udp", "x"], "port must be an integer"),
        (["mappings", "list", "--origin", "windows"], "invalid choice: 'windows'"),
        (["mappings", "list", "--enabled", "--disabled"], "not allowed with argument"),
        (["events", "--count", "0"], "expected a positive integer"),
        (["events", "--kind", "everything"], "invalid choice: 'everything'"),
        (["status", "--socket", "a.sock", "--url", "http://127.0.0.1:1"], "not allowed with"),
        (["status", "--timeout", "0"], "expected seconds in (0, 3600]"),
        (["status", "--timeout", "soon"], "expected seconds"),
        (["status", "extra"], "unrecognized arguments: extra"),
        (["check-config"], "required: FILE"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == clicmds.EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("igd: error: ")
    assert fragment in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["mappings", "add", "--help"], capsys)
    assert code == 0
    assert "INTERNAL_PORT" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["status", "--url", "ftp://127.0.0.1:1"], "the admin URL must look like"),
        (["status", "--url", "http://127.0.0.1:1/api"], "the admin URL must look like"),
        (["connections", "--token-file", "/nonexistent/token"], "--token-file: cannot read"),
    ],
)
def test_bad_client_options_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == clicmds.EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1
    assert fragment in err


def test_empty_token_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    code, _, err = run(["status", "--token-file", str(token)], capsys)
    assert code == clicmds.EXIT_USAGE
    assert "holds no token" in err


def _client_for(argv: list[str]) -> AdminClient:
    args = clicmds.build_parser().parse_args(argv)
    return clicmds._client(args)


def test_where_the_daemon_is_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clicmds.ENV_SOCKET, raising=False)
    monkeypatch.delenv(clicmds.ENV_URL, raising=False)
    monkeypatch.delenv(clicmds.ENV_TOKEN, raising=False)
    assert _client_for(["status"]).socket_path == "state/igd.sock"
    assert _client_for(["status", "--state-dir", "/var/lib/igd"]).socket_path == (
        "/var/lib/igd/igd.sock"
    )
    assert _client_for(["status", "--socket", "/run/igd.sock"]).socket_path == "/run/igd.sock"
    monkeypatch.setenv(clicmds.ENV_SOCKET, "/env/igd.sock")
    assert _client_for(["status"]).socket_path == "/env/igd.sock"
    assert _client_for(["status", "--state-dir", "s"]).socket_path == "s/igd.sock"
    monkeypatch.setenv(clicmds.ENV_URL, "http://127.0.0.1:8950")
    monkeypatch.setenv(clicmds.ENV_TOKEN, "from-env")
    client = _client_for(["status"])
    assert client.socket_path is None
    assert client.base_url == "http://127.0.0.1:8950"
    assert client.token == "from-env"
    token = tmp_path / "token"
    token.write_text("from-file\nignored\n")
    assert _client_for(["status", "--token-file", str(token)]).token == "from-file"
    assert _client_for(["status", "--socket", "x.sock"]).socket_path == "x.sock"


def test_subcommands_join_igds_parser() -> None:
    """What igd.cli does: its own subparsers, `serve` next to the operator commands."""

    class OneLine(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            self.exit(2, f"igd: error: {message}\n")

    parser = OneLine(prog="igd")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLine)
    commands.add_parser("serve")
    clicmds.add_subcommands(commands)
    serve = parser.parse_args(["serve"])
    assert not clicmds.handles(serve)
    for argv in (
        ["status", "--json"],
        ["connections"],
        ["sharing", "disable", "lan0"],
        ["firewall", "enable", "wan0"],
        ["mappings", "list"],
        ["events"],
        ["check-config", "igd.toml"],
    ):
        args = parser.parse_args(argv)
        assert clicmds.handles(args)
        assert args.command in clicmds.COMMANDS
    assert clicmds.run(argparse.Namespace()) == clicmds.EXIT_USAGE


# ---- check-config --------------------------------------------------------------------------------


def test_check_config_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "igd.toml"
    path.write_text(
        'lan = ["lan0"]\nwan = "wan0"\nexternal_ip = "198.19.0.1"\nhttp_port = 5000\n'
        'reserved_ports = ["tcp/22", "udp/53"]\n'
        'rules = ["allow 1024-65535 198.18.0.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535"]\n'
    )
    code, out, err = run(["check-config", str(path)], capsys)
    assert (code, out, err) == (0, f"{path}: ok\n", "")
    code, out, err = run(["check-config", str(path), "--json"], capsys)
    assert code == 0
    assert err == ""
    report = json.loads(out)
    assert report["valid"] is True
    assert report["file"] == str(path)
    config = report["config"]
    assert config["lan"] == ["lan0"]
    assert config["external_ip"] == "198.19.0.1"
    assert config["http_port"] == 5000
    assert config["reserved_ports"] == ["tcp/22", "udp/53"]
    assert config["rules"] == [
        "allow 1024-65535 198.18.0.0/24 1024-65535",
        "deny 0-65535 0.0.0.0/0 0-65535",
    ]
    assert config["state_dir"] == "state"
    assert config["igd_version"] is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("http_port = 70000\n", "http_port:"),
        ("htp_port = 1\n", "htp_port: unknown key (did you mean 'http_port'?)"),
        ("lan = [\n", "is not valid TOML"),
        ('wan = "lo"\n', "wan: lo is also a LAN interface"),
    ],
)
def test_check_config_invalid_exits_1(
    text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "igd.toml"
    path.write_text(text)
    code, out, err = run(["check-config", str(path)], capsys)
    assert code == clicmds.EXIT_REFUSED
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"igd: error: {path}")
    assert fragment in err
    code, out, _ = run(["check-config", "--json", str(path)], capsys)
    assert code == clicmds.EXIT_REFUSED
    report = json.loads(out)
    assert report["valid"] is False
    assert fragment in report["error"]["message"]


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    code, _, err = run(["check-config", str(path)], capsys)
    assert code == clicmds.EXIT_REFUSED
    assert err == f"igd: error: {path}: config: cannot read {path}: No such file or directory\n"


# ---- text output ---------------------------------------------------------------------------------


def test_table_and_duration() -> None:
    table = clicmds._table(("A", "LONGER"), [("xyz", "1"), ("", "")])
    assert table == "A    LONGER\nxyz  1\n"  # blanks stripped, the empty row stays a line
    assert clicmds._duration(3725.9) == "1:02:05"
    assert clicmds._duration(2 * 86400 + 59) == "2d 0:00:59"


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (
            {"type": "mapping_added", "mapping": MAPPING},
            "mapping added: TCP 8080 -> 198.18.0.10:80 on wan0 (admin)",
        ),
        (
            {
                "type": "mapping_changed",
                "reason": "disabled",
                "old": MAPPING,
                "new": {**MAPPING, "target_name": "lanhost"},
            },
            "mapping disabled: TCP 8080 -> lanhost:80 on wan0",
        ),
        (
            {
                "type": "mapping_removed",
                "reason": "expired",
                "mapping": {**MAPPING, "remote_host": "198.19.0.100", "connection": None},
            },
            "mapping removed (expired): TCP 8080 from 198.19.0.100 -> 198.18.0.10:80",
        ),
        ({"type": "number_of_entries_changed", "count": 3}, "mappings: 3"),
        (
            {
                "type": "external_address_changed",
                "connection": "wan0",
                "old": None,
                "new": "198.19.0.1",
            },
            "external address: - -> 198.19.0.1",
        ),
        (
            {"type": "sharing_changed", "connection": "lan1", "role": None, "cause": "displaced"},
            "sharing: lan1 not shared (displaced)",
        ),
        (
            {
                "type": "firewall_changed",
                "connection": None,
                "interface_enabled": True,
                "effective_enabled": False,
            },
            "firewall: global on (effective off)",
        ),
        (
            {"type": "connection_added", "connection": {"name": "lan2", "status": "connected"}},
            "connection added: lan2 (connected)",
        ),
        (
            {
                "type": "connection_changed",
                "old": {},
                "new": {"name": "lan2", "status": "media_disconnected"},
            },
            "connection changed: lan2 (media_disconnected)",
        ),
        ({"type": "events_dropped", "count": 7}, "7 events dropped: this reader fell behind"),
        ({"type": "something_new"}, "something_new"),
    ],
)
def test_event_lines(event: dict[str, object], text: str) -> None:
    line = clicmds._event_text({**event, "time": 1_800_000_000.0})
    clock, _, summary = line.partition("  ")
    assert len(clock) == 8
    assert clock.count(":") == 2
    assert summary == text


def test_choices_match_the_api() -> None:
    """The CLI's own copies of the API's enumerations (it does not load the server side)."""
    from igd.admin import routes
    from igd.natcore import Origin

    assert tuple(routes.EVENT_KINDS) == clicmds.EVENT_KINDS
    assert tuple(origin.value for origin in Origin) == clicmds.ORIGINS
