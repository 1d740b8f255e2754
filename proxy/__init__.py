"""xoauth2-proxy: password logins from legacy mail clients, SASL XOAUTH2 to Microsoft 365."""

__version__ = "0.1.0"
