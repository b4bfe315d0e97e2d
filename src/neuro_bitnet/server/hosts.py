"""Which ``Host`` headers the daemon answers: the defence against DNS rebinding.

A web page can make a browser send requests to ``127.0.0.1`` under a name the attacker
controls (``rebind.attacker.example`` resolving to loopback); the browser then lets the page
read the answers. The name still shows in the ``Host`` header, so the server refuses names it
was not told about:

* ``localhost`` and ``*.localhost`` (browsers resolve these to loopback themselves) and the
  names given with ``--allowed-host`` (``*`` accepts any) are always accepted;
* IP literals are accepted when they are loopback addresses; when the server is bound to a
  non-loopback address, any IP literal is (a rebinding attack needs a name);
* the bind address itself, when it is a name, is accepted.
"""

from __future__ import annotations

import ipaddress
from typing import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from neuro_bitnet.server.config import is_loopback
from neuro_bitnet.server.errors import APIError

WILDCARD_BINDS = {"", "0.0.0.0", "::"}


def host_name(header: str) -> str:
    """The name or address in a ``Host`` header, without port, brackets or trailing dot."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


class HostPolicy:
    """The rule above, for a server bound to ``bind_host`` with extra ``allowed`` names."""

    def __init__(self, bind_host: str, allowed: Sequence[str] = ()) -> None:
        names = [host_name(n) for n in allowed if n.strip()]
        self.any = "*" in names
        self.names = {n for n in names if n != "*"}
        self.loopback_bind = is_loopback(bind_host)
        if bind_host not in WILDCARD_BINDS and not self.loopback_bind:
            self.names.add(host_name(bind_host))

    def allows(self, header: str | None) -> bool:
        """True if a request with this ``Host`` header may be answered."""
        if self.any:
            return True
        if not header:
            return False
        name = host_name(header)
        if name in self.names or name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or not self.loopback_bind


class HostGuard:
    """ASGI middleware: 403 JSON for requests whose ``Host`` the policy refuses."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = Headers(scope=scope).get("host")
            if not self.policy.allows(header):
                shown = (header or "")[:100]
                error = APIError(403, f"Host {shown!r} is not allowed: this server answers to localhost and "
                                 "loopback addresses (start it with --allowed-host NAME to accept another name)",
                                 code="host_not_allowed")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
