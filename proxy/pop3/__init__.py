"""POP3: the session a device talks to and the XOAUTH2 sign-in upstream."""

from .device import Pop3Session
from .upstream import Pop3UpstreamLogin

__all__ = ["Pop3Session", "Pop3UpstreamLogin"]
