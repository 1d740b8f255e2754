"""What `xoauth2-proxy demo` writes: its config.toml, and the instructions it prints."""

from __future__ import annotations

from pathlib import Path

LOOPBACK = "127.0.0.1"


def config_text(
    ports: dict[str, int], upstream: dict[str, int], ca: str, user: str, tenant: str,
    client_id: str, client_secret: str,
) -> str:
    """A config file like a user's, pointed at the demo's stand-ins (paths relative to it)."""
    schemes = {"imap": "tls", "pop3": "tls", "smtp": "tcp"}  # tcp: for SMTP means STARTTLS
    listeners = "".join(
        f'\n[[listener]]\nprotocol = "{name}"\nlisten = "tcp:{ports[name]}:interface={LOOPBACK}"\n'
        f'upstream = "{schemes[name]}:{LOOPBACK}:{upstream[name]}"\nupstream_ca = "{ca}"\n'
        for name in ("imap", "pop3", "smtp")
    )
    # Scan to e-mail through Microsoft Graph, for tenants with SMTP AUTH switched off; the demo's
    # stand-in takes what fits one sendMail request.
    listeners += (
        f'\n[[listener]]\nprotocol = "smtp"\nlisten = "tcp:{ports["graph"]}:interface={LOOPBACK}"\n'
        f'upstream = "graph"\ngraph_url = "http://{LOOPBACK}:{upstream["graph"]}"\n'
        "max_message_mb = 2\n"
    )
    return (
        "# Written by `xoauth2-proxy demo`; removed when the demo stops.\n"
        f'[store]\npath = "store"\n{listeners}\n'
        f'[[account]]\nusername = "{user}"\ntenant = "{tenant}"\nclient_id = "{client_id}"\n'
        f'flow = "client_credentials"\nclient_secret = "{client_secret}"\n'
        f'authority = "http://{LOOPBACK}:{upstream["authority"]}"\n'
    )


def instructions(
    ports: dict[str, int], upstream: dict[str, int], folder: Path, user: str, password: str,
) -> str:
    login = f"--user {user}:{password}"
    rows = [
        ("", "Incoming (IMAP)", "Incoming (POP3)", "Outgoing (SMTP)"),
        ("Server", LOOPBACK, LOOPBACK, LOOPBACK),
        ("Port", str(ports["imap"]), str(ports["pop3"]), str(ports["smtp"])),
        ("Connection security", "None", "None", "None"),
        ("Authentication", "Normal password", "Normal password", "Normal password"),
        ("User name", user, user, user),
        ("Password", password, password, password),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    table = "\n".join(
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return f"""
xoauth2-proxy demo is running. Everything is on this machine; nothing talks to Microsoft.

  The proxy            IMAP {LOOPBACK}:{ports['imap']}   POP3 {LOOPBACK}:{ports['pop3']}   SMTP {LOOPBACK}:{ports['smtp']}
  Stand-in Entra ID    http://{LOOPBACK}:{upstream['authority']} (token endpoint, client credentials)
  Stand-in Office 365  IMAP {upstream['imap']} (TLS), POP3 {upstream['pop3']} (TLS), SMTP {upstream['smtp']} (STARTTLS), all verified against a throwaway CA
  Scan to e-mail       SMTP {LOOPBACK}:{ports['graph']}: the proxy takes the message and sends it through a stand-in Microsoft Graph, http://{LOOPBACK}:{upstream['graph']} (sendMail, up to 2 MB)

Demo folder: {folder}
  (config.toml, the encrypted store, the CA; removed when the demo stops)

Set up a mail program (for example Thunderbird's manual configuration) like this:

{table}

Or try it from a shell:

  curl imap://{LOOPBACK}:{ports['imap']}/ {login}
  curl 'imap://{LOOPBACK}:{ports['imap']}/INBOX;UID=1' {login}
  curl pop3://{LOOPBACK}:{ports['pop3']}/1 {login}
  printf 'Subject: hello\\r\\n\\r\\nSent through the proxy.\\r\\n' | curl smtp://{LOOPBACK}:{ports['smtp']} {login} --mail-from {user} --mail-rcpt {user} -T -
  printf 'Subject: a scan\\r\\n\\r\\nSent through Graph.\\r\\n' | curl smtp://{LOOPBACK}:{ports['graph']} {login} --mail-from {user} --mail-rcpt {user} -T -

Mail sent to {user} appears in the demo INBOX. A wrong password is refused, as it would be
with Microsoft 365. Press Ctrl-C to stop."""
