"""SMTP submission: the front session a legacy client talks to, and the XOAUTH2 upstream login."""

from .session import SmtpSession
from .upstream import SmtpUpstreamLogin

__all__ = ["SmtpSession", "SmtpUpstreamLogin"]
