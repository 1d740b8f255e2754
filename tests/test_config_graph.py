"""Configuration for sending through Microsoft Graph: upstream = "graph", graph_url,
max_message_mb, scopes per resource, and the one URL rule for authority and graph_url."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import APP_ONLY_SCOPE
from proxy.errors import ConfigError
from proxy.resources import GRAPH, GRAPH_APP_SCOPE, OUTLOOK, resource_of, scopes_for
from proxy.urls import secure_or_loopback
from tests.test_config import ACCOUNT, IMAP_SCOPE, LISTENER, load

GRAPH_LISTENER = """
[[listener]]
protocol = "smtp"
listen = "tcp:1587:interface=127.0.0.1"
upstream = "graph"
"""
SEND = "https://graph.microsoft.com/Mail.Send"
READ_WRITE = "https://graph.microsoft.com/Mail.ReadWrite"


def test_graph_listener_defaults(tmp_path: Path) -> None:
    """upstream = "graph" loads with Graph's worldwide URL and Exchange Online's 35 MB."""
    (listener,) = load(tmp_path, GRAPH_LISTENER).listeners
    assert listener.sends_through_graph and listener.resource == GRAPH
    assert listener.graph_url == "https://graph.microsoft.com"
    assert listener.max_message_mb == 35 and listener.max_message_size == 35 * 1024 * 1024


@pytest.mark.parametrize(("url", "expected"), [
    ("https://graph.microsoft.us/", "https://graph.microsoft.us"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://localhost:8080/", "http://localhost:8080"),
])
def test_graph_url_and_size_are_read(tmp_path: Path, url: str, expected: str) -> None:
    """graph_url (sovereign clouds, a local stand-in) and max_message_mb up to 150."""
    text = GRAPH_LISTENER + f'graph_url = "{url}"\nmax_message_mb = 150\n'
    (listener,) = load(tmp_path, text).listeners
    assert listener.graph_url == expected and listener.max_message_size == 157_286_400


@pytest.mark.parametrize(("text", "fragments"), [
    (GRAPH_LISTENER.replace('"smtp"', '"imap"'), ['upstream = "graph"', "only smtp listeners",
                                                   "imap needs tls:HOST:PORT"]),
    (LISTENER + 'graph_url = "https://graph.microsoft.com"\n', ['for upstream = "graph" only']),
    (LISTENER + "max_message_mb = 10\n", ["max_message_mb", 'upstream = "graph" only']),
    (GRAPH_LISTENER + 'graph_url = "http://127.0.0.1.evil.example"\n', ["graph_url", "https://"]),
    (GRAPH_LISTENER + 'graph_url = "http://graph.microsoft.com"\n', ["graph_url", "https://"]),
    (GRAPH_LISTENER + 'graph_url = "https://graph.microsoft.com/v1.0"\n', ["without a path"]),
    (GRAPH_LISTENER + "max_message_mb = 151\n", ["max_message_mb = 151", "1 to 150"]),
    (GRAPH_LISTENER + "max_message_mb = 0\n", ["max_message_mb = 0"]),
    (GRAPH_LISTENER + 'max_message_mb = "35"\n', ["max_message_mb = '35'"]),
])
def test_graph_settings_refused(tmp_path: Path, text: str, fragments: list[str]) -> None:
    """Graph on another protocol, Graph keys on a relaying listener, an unsafe or pathful
    graph_url and a size outside 1..150 MB: exit-2 errors naming the listener and the key."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = info.value.message
    assert "[[listener]] #1" in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(("authority", "accepted"), [
    ("https://login.microsoftonline.us", True),
    ("http://localhost:9999", True),
    ("http://127.0.0.1:9999", True),
    ("http://127.0.0.1.evil.example", False),
    ("http://localhost@evil.example", False),
    ("http://localhost.evil.example:80", False),
])
def test_authority_uses_the_same_url_rule(tmp_path: Path, authority: str, accepted: bool) -> None:
    """Plain http only to this machine, judged by the parsed host, not by how the text starts."""
    text = LISTENER + ACCOUNT + f'authority = "{authority}"\n'
    if accepted:
        assert load(tmp_path, text).account("alice@contoso.com").authority == authority
    else:
        with pytest.raises(ConfigError, match="authority"):
            load(tmp_path, text)
    assert secure_or_loopback(authority) is accepted


@pytest.mark.parametrize(("listeners", "flow", "expected"), [
    (LISTENER + GRAPH_LISTENER, "device_code", (IMAP_SCOPE, SEND, READ_WRITE, "offline_access")),
    (GRAPH_LISTENER, "auth_code", (SEND, READ_WRITE, "offline_access")),
    (LISTENER + GRAPH_LISTENER, "client_credentials", (APP_ONLY_SCOPE, GRAPH_APP_SCOPE)),
    (GRAPH_LISTENER, "client_credentials", (GRAPH_APP_SCOPE,)),
])
def test_default_scopes_cover_every_resource(tmp_path: Path, listeners: str, flow: str,
                                             expected: tuple[str, ...]) -> None:
    """Graph listeners add Mail.Send and Mail.ReadWrite (client credentials: Graph's
    .default) to what the relaying listeners need."""
    account = ACCOUNT.replace('"device_code"', f'"{flow}"')
    if flow == "client_credentials":
        account += 'client_secret = "x"\n'
    assert load(tmp_path, listeners + account).account("alice@contoso.com").scopes == expected


SEND_SHARED = "https://graph.microsoft.com/Mail.Send.Shared"
READ_WRITE_SHARED = "https://graph.microsoft.com/Mail.ReadWrite.Shared"


@pytest.mark.parametrize(("listeners", "flow", "mailbox", "expected"), [
    (GRAPH_LISTENER, "device_code", "shared@contoso.com",
     (SEND_SHARED, READ_WRITE_SHARED, "offline_access")),
    (LISTENER + GRAPH_LISTENER, "auth_code", "Shared@Contoso.com",
     (IMAP_SCOPE, SEND_SHARED, READ_WRITE_SHARED, "offline_access")),
    (GRAPH_LISTENER, "device_code", "Alice@Contoso.COM", (SEND, READ_WRITE, "offline_access")),
    (GRAPH_LISTENER, "client_credentials", "shared@contoso.com", (GRAPH_APP_SCOPE,)),
    (LISTENER, "device_code", "shared@contoso.com", (IMAP_SCOPE, "offline_access")),
])
def test_default_scopes_for_a_shared_mailbox(tmp_path: Path, listeners: str, flow: str,
                                             mailbox: str, expected: tuple[str, ...]) -> None:
    """A user signing in for a mailbox not the user's own (compared without case) gets Graph's
    Mail.Send.Shared and Mail.ReadWrite.Shared by default: Graph refuses a delegated Mail.Send
    for another mailbox. Client credentials keep .default; Exchange's scopes do not change."""
    account = ACCOUNT.replace('"device_code"', f'"{flow}"') + f'mailbox = "{mailbox}"\n'
    if flow == "client_credentials":
        account += 'client_secret = "x"\n'
    loaded = load(tmp_path, listeners + account).account("alice@contoso.com")
    assert loaded.scopes == expected
    shared = mailbox.lower() != "alice@contoso.com" and flow != "client_credentials"
    assert loaded.delegate == ("alice@contoso.com" if shared else None)


def test_explicit_scopes_stay_as_given_for_a_shared_mailbox(tmp_path: Path) -> None:
    """Scopes set in the config are used as they are, whatever the mailbox."""
    text = (GRAPH_LISTENER + ACCOUNT + 'mailbox = "shared@contoso.com"\n'
            f'scopes = ["{SEND}", "offline_access"]\n')
    assert load(tmp_path, text).account("alice@contoso.com").scopes == (SEND, "offline_access")


def test_explicit_scopes_must_name_graph_for_a_graph_listener(tmp_path: Path) -> None:
    """Scopes without a Graph scope on a config with a Graph listener: an error naming the
    service and a scope to add, instead of a failure at the first scan."""
    text = GRAPH_LISTENER + ACCOUNT + f'scopes = ["{IMAP_SCOPE}", "offline_access"]\n'
    with pytest.raises(ConfigError, match="nothing for Microsoft Graph.*Mail.Send"):
        load(tmp_path, text)


@pytest.mark.parametrize(("scope", "resource"), [
    (IMAP_SCOPE, OUTLOOK), (APP_ONLY_SCOPE, OUTLOOK), (SEND, GRAPH), (GRAPH_APP_SCOPE, GRAPH),
    ("Mail.Send", GRAPH), ("00000003-0000-0000-c000-000000000000/Mail.Send", GRAPH),
    ("https://graph.microsoft.us/Mail.Send", GRAPH),
    ("https://outlook.office365.us/IMAP.AccessAsUser.All", OUTLOOK),
    ("offline_access", None), ("openid", None),
])
def test_resource_of_a_scope(scope: str, resource: str | None) -> None:
    """Which token a scope belongs to, as Entra ID reads it (a bare name is Graph's)."""
    assert resource_of(scope) == resource


def test_one_token_request_names_one_resource() -> None:
    """The scopes sent for one resource: its own and offline_access, never the other's."""
    scopes = (IMAP_SCOPE, SEND, READ_WRITE, "offline_access")
    assert scopes_for(scopes, OUTLOOK) == (IMAP_SCOPE, "offline_access")
    assert scopes_for(scopes, GRAPH) == (SEND, READ_WRITE, "offline_access")
