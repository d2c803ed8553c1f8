"""Whether a Host header or an Origin names this machine's loopback: the rule the admin server
applies without a token (DNS rebinding, cross-site pages) and the console's cookie follows."""

from __future__ import annotations

from urllib.parse import urlsplit

from pgcourier.settings import is_loopback


def loopback_authority(authority: str) -> bool:
    """Whether a Host header (or an origin's host[:port]) names this machine's loopback."""
    if authority.startswith("["):  # [::1] or [::1]:8787
        name, bracket, port = authority[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return False
        port = port[1:]
    else:
        name, _, port = authority.partition(":")
    return (not port or (port.isascii() and port.isdecimal())) and is_loopback(name)


def loopback_origin(origin: str) -> bool:
    # "null" (sandboxed frames, file: pages) and anything with user info are foreign.
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and "@" not in parts.netloc
        and parts.path == ""
        and loopback_authority(parts.netloc)
    )
