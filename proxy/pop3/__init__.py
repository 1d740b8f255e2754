"""POP3: the front session a legacy client talks to and the XOAUTH2 sign-in upstream."""

from .session import Pop3Session
from .upstream import Pop3UpstreamLogin

__all__ = ["Pop3Session", "Pop3UpstreamLogin"]
