"""SMTP submission: the session a device talks to, and the XOAUTH2 sign-in upstream."""

from .device import SmtpSession
from .upstream import SmtpUpstreamLogin

__all__ = ["SmtpSession", "SmtpUpstreamLogin"]
