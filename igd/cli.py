"""Command line: arguments -> `Config` -> daemon; exit codes; no protocol logic lives here.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 for a runtime failure (a port in use),
2 for bad usage or configuration. Every failure is one line on stderr, never a traceback.
The operator commands (`igd status`, `igd mappings ...`) live in igd.clicmds; SIGHUP makes
`igd serve` load its --config file and flags again (igd.daemon applies what can change live).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Final, NoReturn

from igd import __version__, clicmds
from igd.config import BACKENDS, LOG_LEVELS, Config, ConfigError, load_config

PROG: Final = "igd"

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
EXIT_USAGE: Final = 2

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Flags of `igd serve` that map to config keys of the same name (dashes for underscores).
SERVE_KEYS: Final = (
    "lan",
    "wan",
    "external_ip",
    "backend",
    "http_port",
    "ssdp_port",
    "state_dir",
    "igd_version",
    "log_level",
    "allow_private_external",
    "natpmp",
    "pcp_port",
    "admin_socket",
    "admin_port",
    "admin_token_file",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that prints a one-line error, not the usage block, on bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for the ``igd`` command line."""
    parser = _Parser(
        prog=PROG,
        description="UPnP IGD and NAT-traversal daemon for Linux gateways.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve = commands.add_parser(
        "serve",
        help="run the daemon",
        description=(
            "Serve UPnP IGD (SSDP discovery, description, SOAP control) on the LAN interfaces. "
            "Without --wan, mappings live on a virtual public connection named 'wan'. "
            "Flags override the same keys of --config."
        ),
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML file with the same keys")
    serve.add_argument(
        "--lan",
        action="append",
        metavar="IFACE",
        help="LAN interface to serve (repeatable; default: lo)",
    )
    serve.add_argument("--wan", metavar="IFACE", help="WAN interface (default: a virtual one)")
    serve.add_argument("--external-ip", metavar="ADDR", help="external IPv4 address to report")
    serve.add_argument(
        "--backend", metavar="NAME", help=f"data plane: {', '.join(BACKENDS)} (default: auto)"
    )
    serve.add_argument(
        "--http-port", type=int, metavar="N", help="HTTP port on every LAN address (0: ephemeral)"
    )
    serve.add_argument("--ssdp-port", type=int, metavar="N", help=argparse.SUPPRESS)
    serve.add_argument("--state-dir", type=Path, metavar="DIR", help="state (default: ./state)")
    serve.add_argument(
        "--igd-version",
        type=int,
        choices=(1, 2),
        help="serve only IGD:1 or IGD:2 (default: both, at /igd1 and /igd2)",
    )
    serve.add_argument(
        "--log-level", metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (default: info)"
    )
    serve.add_argument(
        "--allow-private-external",
        action="store_const",
        const=True,
        help="report a private/reserved external address instead of an empty one (WIP-03)",
    )
    serve.add_argument(
        "--no-natpmp",
        dest="natpmp",
        action="store_const",
        const=False,
        help="serve PCP only on UDP 5351, not NAT-PMP",
    )
    serve.add_argument("--pcp-port", type=int, metavar="N", help=argparse.SUPPRESS)
    serve.add_argument(
        "--admin-socket",
        type=Path,
        metavar="PATH",
        help="the admin API's Unix socket, mode 0600 (default: STATE_DIR/igd.sock)",
    )
    serve.add_argument(
        "--admin-port",
        type=int,
        metavar="N",
        help="also serve the admin API on 127.0.0.1:N (needs --admin-token-file)",
    )
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the admin API's bearer token",
    )
    clicmds.add_subcommands(commands)
    return parser


class _RemoteFaultsOnce(logging.Filter):
    """aiohttp's protocol errors are bad bytes from the network: one line per kind, no traceback."""

    MAX_KINDS = 64

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        kind = (record.getMessage(), type(error).__name__ if error else "")
        if kind in self._seen or len(self._seen) >= self.MAX_KINDS:
            return False
        self._seen.add(kind)
        record.msg = f"{kind[0]}: {error or kind[1]} (remote fault; further ones not logged)"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr, force=True
    )
    if level != "debug":  # one line per HTTP request only when debugging
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_RemoteFaultsOnce())


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args_list = sys.argv[1:] if argv is None else argv
    try:
        args, rest = parser.parse_known_args(args_list)
    except SystemExit as exc:  # --help, --version and argparse errors end here
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if rest:
        kind = "option" if rest[0].startswith("-") else "argument"
        return _fail(EXIT_USAGE, f"unknown {kind} {rest[0]!r} (see '{PROG} --help')")
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    if clicmds.handles(args):
        return clicmds.run(args)
    config_path: Path | None = args.config
    overrides = {key: getattr(args, key) for key in SERVE_KEYS}
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc))
    _configure_logging(config.log_level)
    from igd.daemon import DaemonError, run  # here, so --help and bad flags stay fast

    def reload() -> Config:
        """The configuration again, from the same file and flags (SIGHUP)."""
        return load_config(config_path, overrides)

    try:
        run(config, reload=reload)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except DaemonError as exc:
        return _fail(EXIT_RUNTIME, str(exc))
    except KeyboardInterrupt:  # SIGINT before the daemon's own handler was installed
        return EXIT_OK
    return EXIT_OK
