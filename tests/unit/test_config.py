"""Config: every key from a TOML file and from flags, valid and invalid; errors name the key."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from igd.config import (
    BACKENDS,
    DEFAULT_PCP_PORT,
    DEFAULT_SSDP_PORT,
    KEYS,
    LIVE_KEYS,
    Config,
    ConfigError,
    changed_keys,
    flag_for,
    load_config,
)
from igd.natcore import DEFAULT_RULES, IPProtocol, PermissionRule


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "igd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_run_on_loopback_without_root() -> None:
    config = load_config()
    assert config == Config()
    assert config.lan == ("lo",)
    assert config.wan is None
    assert config.http_port == 0
    assert config.ssdp_port == DEFAULT_SSDP_PORT == 1900
    assert config.state_dir == Path("state")
    assert config.igd_version is None
    assert config.backend == "auto"
    assert config.rules == DEFAULT_RULES
    assert config.reserved_ports == frozenset()
    assert config.allow_private_external is False
    assert config.natpmp is True
    assert config.pcp_port == DEFAULT_PCP_PORT == 5351
    assert config.natpmp_max_lifetime_s == 86400
    assert config.admin_socket is None  # <state_dir>/igd.sock
    assert config.admin_port is None
    assert config.admin_token_file is None


# (key, TOML literal, expected converted value)
VALID: list[tuple[str, str, object]] = [
    ("lan", '["lo"]', ("lo",)),
    ("lan", '"eth1"', ("eth1",)),
    ("lan", '["br-lan", "eth2"]', ("br-lan", "eth2")),
    ("wan", '"eth0"', "eth0"),
    ("external_ip", '"198.19.0.1"', IPv4Address("198.19.0.1")),
    ("backend", '"memory"', "memory"),
    ("backend", '"auto"', "auto"),
    ("http_port", "0", 0),
    ("http_port", "5000", 5000),
    ("http_port", "65535", 65535),
    ("ssdp_port", "1900", 1900),
    ("ssdp_port", "0", 0),
    ("state_dir", '"/var/lib/igd"', Path("/var/lib/igd")),
    ("igd_version", "1", 1),
    ("igd_version", "2", 2),
    ("log_level", '"DEBUG"', "debug"),
    ("log_level", '"warning"', "warning"),
    ("allow_private_external", "true", True),
    ("secure_mode", "false", False),
    (
        "rules",
        '["allow 1024-65535 198.18.0.0/24 1024-65535"]',
        (PermissionRule.parse("allow 1024-65535 198.18.0.0/24 1024-65535"),),
    ),
    ("rules", "[]", ()),
    ("quota_per_client", "16", 16),
    ("max_mappings", "100", 100),
    (
        "reserved_ports",
        '["tcp/22", "UDP/53"]',
        frozenset({(IPProtocol.TCP, 22), (IPProtocol.UDP, 53)}),
    ),
    ("max_lease_s", "3600", 3600),
    ("friendly_name", '"Home gateway"', "Home gateway"),
    ("nft_table", '"igd_lab2"', "igd_lab2"),
    ("natpmp", "false", False),
    ("natpmp", "true", True),
    ("pcp_port", "5351", 5351),
    ("pcp_port", "0", 0),
    ("natpmp_max_lifetime_s", "3600", 3600),
    ("natpmp_max_lifetime_s", "4294967295", 2**32 - 1),
    ("portmap_rate_per_s", "200", 200),
    ("portmap_burst", "1000", 1000),
    ("admin_socket", '"/run/igd/igd.sock"', Path("/run/igd/igd.sock")),
    ("admin_port", '8631\nadmin_token_file = "/etc/igd/admin-token"', 8631),
    ("admin_token_file", '"/etc/igd/admin-token"', Path("/etc/igd/admin-token")),
]


@pytest.mark.parametrize(("key", "literal", "expected"), VALID)
def test_valid_value_from_file(tmp_path: Path, key: str, literal: str, expected: object) -> None:
    config = load_config(write(tmp_path, f"{key} = {literal}\n"))
    assert getattr(config, key) == expected


# (key, TOML literal, a fragment of the message)
INVALID: list[tuple[str, str, str]] = [
    ("lan", "[]", "at least one"),
    ("lan", "[1]", "list of strings"),
    ("lan", '["lo", "lo"]', "listed twice"),
    ("lan", '["way-too-long-name0"]', "not a valid interface name"),
    ("lan", '["a/b"]', "not a valid interface name"),
    ("lan", '["a b"]', "not a valid interface name"),
    ("wan", "5", "interface name"),
    ("wan", '""', "not a valid interface name"),
    ("external_ip", '"300.1.1.1"', "not an IPv4 address"),
    ("external_ip", '"::1"', "not an IPv4 address"),
    ("external_ip", '"224.0.0.1"', "cannot be"),
    ("external_ip", '"0.0.0.0"', "cannot be"),
    ("external_ip", "7", "IPv4 address"),
    ("backend", '"bogus"', "not one of auto, memory, nftables, userspace"),
    ("http_port", "-1", "not in 0..65535"),
    ("http_port", "65536", "not in 0..65535"),
    ("http_port", '"80"', "port number"),
    ("http_port", "true", "port number"),
    ("http_port", "80.0", "port number"),
    ("ssdp_port", "70000", "not in 0..65535"),
    ("state_dir", "3", "directory path"),
    ("state_dir", '""', "directory path"),
    ("igd_version", "3", "not 1 or 2"),
    ("igd_version", '"2"', "not 1 or 2"),
    ("igd_version", "true", "not 1 or 2"),
    ("log_level", '"verbose"', "not one of"),
    ("allow_private_external", '"yes"', "true or false"),
    ("secure_mode", "1", "true or false"),
    ("rules", '["permit all"]', "bad permission rule"),
    ("rules", '["allow 1-2 999.0.0.0/8 1-2"]', "bad address"),
    ("rules", "[5]", "list of strings"),
    ("quota_per_client", "0", "not positive"),
    ("quota_per_client", "true", "positive integer"),
    ("max_mappings", "1000000", "more than"),
    ("reserved_ports", '["ssh"]', "not like 'tcp/22'"),
    ("reserved_ports", '["tcp/0"]', "not in 1..65535"),
    ("reserved_ports", '["sctp/5"]', "not like 'tcp/22'"),
    ("max_lease_s", "-5", "not positive"),
    ("friendly_name", '""', "non-empty"),
    ("friendly_name", f'"{"x" * 64}"', "longer than 63"),
    ("friendly_name", '"a\\u0007b"', "control characters"),
    ("nft_table", '"igd; flush ruleset"', "not a table name"),
    ("nft_table", '""', "not a table name"),
    ("natpmp", '"no"', "true or false"),
    ("pcp_port", "65536", "not in 0..65535"),
    ("pcp_port", '"5351"', "port number"),
    ("natpmp_max_lifetime_s", "0", "not positive"),
    ("natpmp_max_lifetime_s", "4294967296", "more than"),
    ("portmap_rate_per_s", "0", "not positive"),
    ("portmap_burst", "100001", "more than"),
    ("admin_socket", "5", "socket path"),
    ("admin_socket", '""', "socket path"),
    ("admin_socket", f'"/{"s" * 107}"', "longer than 107 bytes"),
    ("admin_port", "0", "not in 1..65535"),
    ("admin_port", "true", "port number"),
    ("admin_token_file", "[]", "file path"),
    ("admin_token_file", '""', "file path"),
]


@pytest.mark.parametrize(("key", "literal", "fragment"), INVALID)
def test_invalid_value_from_file_names_file_and_key(
    tmp_path: Path, key: str, literal: str, fragment: str
) -> None:
    path = write(tmp_path, f"{key} = {literal}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message
    assert caught.value.key == key
    assert "\n" not in message


# (key, flag value as argparse produces it, expected)
FLAG_VALID: list[tuple[str, object, object]] = [
    ("lan", ["lo", "eth1"], ("lo", "eth1")),
    ("wan", "eth0", "eth0"),
    ("external_ip", "198.19.0.1", IPv4Address("198.19.0.1")),
    ("backend", "memory", "memory"),
    ("http_port", 0, 0),
    ("ssdp_port", 41900, 41900),
    ("state_dir", Path("/tmp/x"), Path("/tmp/x")),
    ("igd_version", 1, 1),
    ("log_level", "ERROR", "error"),
    ("allow_private_external", True, True),
    ("natpmp", False, False),
    ("pcp_port", 0, 0),
    ("admin_socket", Path("/tmp/igd.sock"), Path("/tmp/igd.sock")),
    ("admin_token_file", Path("/tmp/token"), Path("/tmp/token")),
]


@pytest.mark.parametrize(("key", "value", "expected"), FLAG_VALID)
def test_valid_value_from_flags(key: str, value: object, expected: object) -> None:
    assert getattr(load_config(None, {key: value}), key) == expected


FLAG_INVALID: list[tuple[str, object, str]] = [
    ("lan", ["lo", "lo"], "listed twice"),
    ("lan", ["x" * 16], "not a valid interface name"),
    ("wan", "bad name", "not a valid interface name"),
    ("external_ip", "198.19.0", "not an IPv4 address"),
    ("backend", "bogus", "not one of"),
    ("http_port", 99999, "not in 0..65535"),
    ("ssdp_port", -3, "not in 0..65535"),
    ("igd_version", 3, "not 1 or 2"),
    ("log_level", "loud", "not one of"),
    ("pcp_port", 70000, "not in 0..65535"),
    ("admin_port", 0, "not in 1..65535"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), FLAG_INVALID)
def test_invalid_value_from_flags_names_the_flag(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {key: value})
    message = str(caught.value)
    assert message.startswith(f"{flag_for(key)}: "), message
    assert fragment in message


def test_every_key_has_a_valid_and_an_invalid_case() -> None:
    keys = {name for name in Config.__dataclass_fields__}
    assert {key for key, _, _ in VALID} == keys
    assert {key for key, _, _ in INVALID} == keys


def test_unknown_key_in_file_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "http-port = 80\n")
    with pytest.raises(ConfigError, match=r"http-port: unknown key \(did you mean 'http_port'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r": colour: unknown key$"):
        load_config(write(tmp_path, "colour = 'blue'\n"))


def test_unknown_key_in_a_table_is_the_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": igd: unknown key"):
        load_config(write(tmp_path, "[igd]\nlan = ['lo']\n"))


def test_unknown_override_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^--colour: unknown key"):
        load_config(None, {"colour": "blue"})


def test_flags_override_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'lan = ["eth1", "eth2"]\nhttp_port = 5000\nlog_level = "debug"\nsecure_mode = false\n',
    )
    config = load_config(path, {"lan": ["lo"], "http_port": 0, "log_level": None})
    assert config.lan == ("lo",)
    assert config.http_port == 0
    assert config.log_level == "debug"  # None means "flag not given"
    assert config.secure_mode is False  # keys without a flag come from the file


def test_flag_errors_win_over_a_valid_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "http_port = 5000\n")
    with pytest.raises(ConfigError, match=r"^--http-port: port 70000"):
        load_config(path, {"http_port": 70000})


def test_missing_file_is_one_line_naming_config(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"config: cannot read {path}: No such file or directory"


def test_directory_as_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: cannot read .*: Is a directory"):
        load_config(tmp_path)


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "lan = [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"config: {path} is not valid TOML: ")
    assert "\n" not in message


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b'friendly_name = "\xff"\n')
    with pytest.raises(ConfigError, match=r"^config: .* is not valid TOML"):
        load_config(path)


def test_wan_cannot_be_a_lan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^wan: eth0 is also a LAN interface"):
        load_config(None, {"lan": ["eth0"], "wan": "eth0"})


def test_lan_named_like_the_virtual_wan_needs_wan() -> None:
    with pytest.raises(ConfigError, match=r"^lan: 'wan' names the virtual public connection"):
        load_config(None, {"lan": ["wan"]})
    assert load_config(None, {"lan": ["lan0"], "wan": "wan"}).wan == "wan"


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.http_port = 5  # type: ignore[misc]


def test_backends_listed() -> None:
    assert BACKENDS == ("auto", "memory", "nftables", "userspace")


def test_admin_port_needs_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^admin_token_file: needed with admin_port") as caught:
        load_config(write(tmp_path, "admin_port = 8631\n"))
    assert caught.value.key == "admin_token_file"
    with pytest.raises(ConfigError, match=r"^admin_token_file: needed with admin_port"):
        load_config(None, {"admin_port": 8631})
    config = load_config(None, {"admin_port": 8631, "admin_token_file": tmp_path / "token"})
    assert config.admin_port == 8631


def test_live_keys_and_changed_keys() -> None:
    assert set(KEYS) >= LIVE_KEYS
    assert {"secure_mode", "rules", "quota_per_client", "log_level"} <= LIVE_KEYS
    assert not {"lan", "wan", "backend", "http_port", "state_dir", "friendly_name"} & LIVE_KEYS
    old = Config()
    assert changed_keys(old, Config()) == ()
    new = Config(quota_per_client=3, lan=("eth1",), friendly_name="x")
    assert changed_keys(old, new) == ("lan", "quota_per_client", "friendly_name")
