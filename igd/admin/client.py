"""A small client of the admin API, over the daemon's Unix socket or loopback TCP with a token.

What the operator commands (igd.clicmds) use. Two failures, kept apart: `AdminError` when the
daemon answered with an error (its code and message), `AdminUnreachable` when there was no
usable answer at all (no socket, refused, timed out, cut off, not the admin API).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "DEFAULT_STATE_DIR",
    "DEFAULT_TIMEOUT_S",
    "AdminClient",
    "AdminError",
    "AdminUnreachable",
    "default_socket_path",
]

DEFAULT_STATE_DIR: Final = Path("state")
"""`igd serve`'s default --state-dir."""
DEFAULT_SOCKET_NAME: Final = "igd.sock"
"""The admin socket's name inside the daemon's state directory."""
DEFAULT_TIMEOUT_S: Final = 10.0
STREAM_READ_TIMEOUT_S: Final = 60.0
"""An event stream silent this long is dead: the daemon sends a heartbeat every 15 s."""
MAX_STREAM_LINE_BYTES: Final = 1024 * 1024

Params = Sequence[tuple[str, str]]


def default_socket_path(state_dir: Path | None = None) -> Path:
    """`<state_dir>/igd.sock`, the daemon's default admin socket."""
    return (DEFAULT_STATE_DIR if state_dir is None else state_dir) / DEFAULT_SOCKET_NAME


class AdminError(Exception):
    """The daemon refused the request: HTTP status, error code and its one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}, "status": self.status}


class AdminUnreachable(Exception):
    """No usable answer from the daemon; the message says where and why."""


class AdminClient:
    """`async with AdminClient(socket_path=...) as client: await client.get("/v1/status")`."""

    def __init__(
        self,
        *,
        socket_path: Path | str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path and url")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"the admin URL must look like http://127.0.0.1:PORT, not {url!r}")
            self.base_url = f"http://{parts.netloc}"
            self.where = url
        else:
            self.base_url = "http://localhost"
            self.where = os.fspath(socket_path or "")
        self.socket_path = None if socket_path is None else os.fspath(socket_path)
        self.token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        connector: aiohttp.BaseConnector
        if self.socket_path is not None:
            connector = aiohttp.UnixConnector(path=self.socket_path)
        else:
            connector = aiohttp.TCPConnector()
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        self._session = aiohttp.ClientSession(
            base_url=self.base_url,
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            read_bufsize=MAX_STREAM_LINE_BYTES,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client in `async with`")
        return self._session

    # -- requests --------------------------------------------------------------------------------

    async def get(self, path: str, params: Params | Mapping[str, str] | None = None) -> Any:
        """GET a JSON document."""
        return await self.request("GET", path, params=params)

    async def post(
        self,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Params | Mapping[str, str] | None = None,
    ) -> Any:
        """POST a JSON body (none when `body` is None) and return the JSON answer."""
        return await self.request("POST", path, params=params, body=body)

    async def delete(self, path: str, params: Params | Mapping[str, str] | None = None) -> Any:
        return await self.request("DELETE", path, params=params)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer, or AdminError / AdminUnreachable."""
        try:
            async with self.session.request(
                method, path, params=_params(params), json=body
            ) as response:
                return await self._decode(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminUnreachable(self._why(exc)) from None

    async def text(self, path: str) -> str:
        """GET a text document (the metrics)."""
        try:
            async with self.session.get(path) as response:
                if response.status >= 400:
                    await self._decode(response)
                return await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminUnreachable(self._why(exc)) from None

    async def stream(
        self, path: str, params: Params | Mapping[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The objects of a newline-delimited JSON stream, as they arrive."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s, sock_read=STREAM_READ_TIMEOUT_S
        )
        try:
            async with self.session.get(path, params=_params(params), timeout=timeout) as response:
                if response.status >= 400:
                    await self._decode(response)
                async for raw in response.content:
                    line = raw.strip()
                    if not line:
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise AdminUnreachable(
                            f"{self.where} sent a line that is not JSON"
                        ) from None
                    if isinstance(item, dict):
                        yield item
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminUnreachable(self._why(exc)) from None

    # -- answers ---------------------------------------------------------------------------------

    async def _decode(self, response: aiohttp.ClientResponse) -> Any:
        body = await response.read()
        if response.status >= 400:
            code, message = f"http_{response.status}", f"HTTP {response.status} {response.reason}"
            try:
                error = json.loads(body)["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                pass
            raise AdminError(response.status, code, " ".join(message.split()))
        try:
            return json.loads(body)
        except ValueError:
            raise AdminUnreachable(
                f"{self.where} answered with something other than JSON: is it igd's admin API?"
            ) from None

    def _why(self, exc: BaseException) -> str:
        """One line: where the daemon was looked for and what went wrong."""
        where = self.where
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return f"the daemon at {where} did not answer within {self.timeout_s:g} s"
        if isinstance(exc, aiohttp.ClientConnectorError):
            os_error = exc.os_error
            if isinstance(os_error, FileNotFoundError):
                return f"no daemon socket at {where}: is `igd serve` running? (see --socket)"
            if isinstance(os_error, PermissionError):
                return f"permission denied on {where}: run as the daemon's user"
            if isinstance(os_error, ConnectionRefusedError):
                return f"nothing listens at {where}: is `igd serve` running?"
            reason = os_error.strerror or str(os_error)
            return f"cannot reach the daemon at {where}: {reason}"
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return f"the daemon at {where} closed the connection"
        return f"cannot talk to the daemon at {where}: {exc}"


def _params(params: Params | Mapping[str, str] | None) -> list[tuple[str, str]] | None:
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(key), str(value)) for key, value in items]
