"""`xoauth2-proxy demo`: try the proxy without a Microsoft account.

The servers in this package (proxy.demo.authority, imap_server, pop3_server, smtp_server) are
small stand-ins for Microsoft's Entra ID token endpoint and Office 365's mail services, written
for this demonstration only; the proxy between them is the real one, run unchanged.
"""

from __future__ import annotations

from .runner import run_demo

__all__ = ["run_demo"]
