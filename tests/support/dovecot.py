"""A real Dovecot 2.3 on 127.0.0.1 that accepts SASL XOAUTH2 with locally minted HS256 JWTs.

It plays Office 365's part in integration tests: IMAPS, POP3S and submission (STARTTLS) all speak
XOAUTH2, and submission relays what it is given to an SmtpSink. Config, logs and TLS files live
in the work folder the caller gives; what unprivileged Dovecot processes must reach (sockets,
mail homes, the JWT key) lives in a private folder in /tmp that stop() removes. It needs root
(mail processes switch to a dedicated system user) and the Debian packages dovecot-core,
dovecot-imapd, dovecot-pop3d and dovecot-submissiond.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import TestCA, make_ca
from tests.support.jwt import mint_hs256
from tests.support.ports import free_port
from tests.support.smtp_sink import SmtpSink

MAIL_USER = "xoauth2test"
_LIBEXEC_DIRS = (Path("/usr/lib/dovecot"), Path("/usr/libexec/dovecot"))
_NEEDED_EXECUTABLES = ("imap", "imap-login", "pop3", "pop3-login", "submission", "submission-login")
_delivery_counter = itertools.count()
_PACKAGES = "dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond"


def dovecot_available() -> str | None:
    """None if a Dovecot 2.3 this harness can drive is installed, else why not."""
    for tool in ("dovecot", "doveconf"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {_PACKAGES})"
    if os.geteuid() != 0:
        return "Dovecot tests need root: mail processes run as a dedicated system user"
    version = subprocess.run(
        ["dovecot", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not version.startswith("2.3."):
        found = version or "(unknown version)"
        return f"Dovecot {found} found; the harness writes the 2.3 config syntax"
    libexec = next((d for d in _LIBEXEC_DIRS if d.is_dir()), None)
    if libexec is None:
        return "Dovecot's libexec folder not found"
    missing = [name for name in _NEEDED_EXECUTABLES if not (libexec / name).exists()]
    if missing:
        return f"Dovecot lacks {', '.join(missing)} (apt-get install {_PACKAGES})"
    return None


def _ensure_mail_user() -> tuple[int, int]:
    """uid/gid of the unprivileged user that owns the mailboxes; created on first use."""
    import pwd  # here, not at the top: the portability test imports this module where pwd is not

    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", MAIL_USER]
    error = ""
    for _ in range(20):
        try:
            entry = pwd.getpwnam(MAIL_USER)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
        # A concurrent test run may hold the passwd lock or create the user first: retry.
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        error = result.stderr.strip()
        if result.returncode not in (0, 9):
            time.sleep(0.1)
    raise RuntimeError(f"could not create system user {MAIL_USER}: {error}")


def session_processes(session_id: int) -> list[int]:
    """Live (non-zombie) processes in session SESSION_ID: a Dovecot master and all its children."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == session_id:
            members.append(int(entry.name))
    return members


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie is gone for our purposes: PID 1 in a container may never reap it.
    return state[state.rfind(")") + 2] != "Z"


class Dovecot:
    """One Dovecot instance with its own config, ports, CA, mail user and SMTP relay sink."""

    def __init__(self, workdir: Path, jwt_key: bytes, max_userip_connections: int = 100) -> None:
        self.workdir = workdir
        self.jwt_key = jwt_key
        self.max_userip_connections = max_userip_connections
        self.config_path = workdir / "dovecot.conf"
        self.log_path = workdir / "dovecot.log"
        self.startup_log_path = workdir / "dovecot-start.log"
        self.imaps_port = 0
        self.imap_port = 0
        self.pop3s_port = 0
        self.submission_port = 0
        self.sink = SmtpSink()
        self.master_pid: int | None = None
        self._ca: TestCA | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._uid = -1
        self._gid = -1
        self._runtime_dir: Path | None = None

    @property
    def runtime_dir(self) -> Path:
        """What Dovecot's unprivileged processes open: base_dir, state_dir, homes, the JWT key.

        It is a short folder of its own in /tmp, searchable by everyone, not part of workdir:
        pytest's basetemp is mode 0700 and pytest resets that at every session start (another
        run's included), and unix socket paths below base_dir must stay under 108 bytes.
        """
        if self._runtime_dir is None:
            raise RuntimeError("Dovecot.start() has not run yet")
        return self._runtime_dir

    @property
    def base_dir(self) -> Path:
        return self.runtime_dir / "run"

    @property
    def home_root(self) -> Path:
        return self.runtime_dir / "home"

    @property
    def ca(self) -> TestCA:
        """The CA that issued Dovecot's certificate (for 127.0.0.1 and localhost)."""
        if self._ca is None:
            raise RuntimeError("Dovecot.start() has not run yet")
        return self._ca

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start Dovecot and return once every listener accepts connections."""
        reason = dovecot_available()
        if reason is not None:
            raise RuntimeError(reason)
        self._uid, self._gid = _ensure_mail_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # /tmp itself, not $TMPDIR: it must be short and reachable for every user.
        self._runtime_dir = Path(tempfile.mkdtemp(prefix="xoauth2-dovecot-", dir="/tmp"))
        os.chmod(self._runtime_dir, 0o711)  # search, not list
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.sink.start()
        self._ca = make_ca(self.workdir / "ca")
        cert, key = self._ca.issue(self.workdir / "tls", "dovecot", ["127.0.0.1", "localhost"])
        self._write_oauth2_files()
        self.home_root.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.home_root, self._uid, self._gid)
        (self.runtime_dir / "state").mkdir()
        # A free port can be taken by a concurrent test run before Dovecot binds it: retry.
        for _ in range(3):
            if self._launch(cert, key):
                self.master_pid = self._read_master_pid()
                self._wait_for_greeting()
                return
        raise RuntimeError(f"Dovecot kept finding its ports taken:\n{self._startup_output()}")

    def _launch(self, cert: Path, key: Path) -> bool:
        """Start the master on fresh ports; True once all accept, False if one was taken."""
        ports = [free_port() for _ in range(4)]
        self.imaps_port, self.imap_port, self.pop3s_port, self.submission_port = ports
        self.config_path.write_text(self._config(cert, key))
        check = subprocess.run(
            ["doveconf", "-c", str(self.config_path), "-n"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"doveconf rejected {self.config_path}:\n{check.stderr}")
        # -F keeps the master our child so stop() can reap it: PID 1 in a container may not,
        # which would leave a zombie behind. Its own session lets stop() find every child.
        # Output goes to a file, never a pipe: the daemon keeps inherited descriptors open.
        with open(self.startup_log_path, "ab") as startup_log:
            process = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=startup_log,
                stderr=startup_log,
                start_new_session=True,
            )
        self._process = process
        deadline = time.monotonic() + 15
        for port in ports:
            while not _accepts(port):
                if process.poll() is not None:
                    self._process = None
                    output = self._startup_output()
                    if any(f"listen(127.0.0.1, {p}) failed: Address" in output for p in ports):
                        return False
                    raise RuntimeError(f"dovecot exited with {process.returncode}:\n{output}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} not listening:\n{self._startup_output()}")
                time.sleep(0.02)
        return True

    def _wait_for_greeting(self) -> None:
        """Block until imap-login greets, which it does only once the auth process answers."""
        with socket.create_connection(("127.0.0.1", self.imap_port), timeout=15) as conn:
            greeting = conn.makefile("rb").readline()
            if not greeting.startswith(b"* OK"):
                raise RuntimeError(
                    f"unexpected IMAP greeting {greeting!r}:\n{self._startup_output()}"
                )
            conn.sendall(b"a LOGOUT\r\n")

    def stop(self) -> None:
        """SIGTERM the master, wait for its whole process family to go, then clean up."""
        try:
            if self._process is not None:
                self._terminate(self.master_pid or self._process.pid)
        finally:
            self._process = None
            self.master_pid = None
            self.sink.stop()
            if self._runtime_dir is not None:
                shutil.rmtree(self._runtime_dir, ignore_errors=True)
                self._runtime_dir = None

    def _terminate(self, pid: int) -> None:
        assert self._process is not None
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
        # A clean shutdown takes about 1 s. A login process still starting up (one our readiness
        # probes spawned, say) can sit in a 5 s stats handshake and hold the master; no test
        # needs that grace, so whatever remains after 2 s is killed.
        deadline = time.monotonic() + 2
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        # The master leads its own session (start_new_session), and every process it forks
        # (auth, login, imap, ...) stays in it even after the master is gone.
        session = self._process.pid
        for _ in range(100):
            leftovers = session_processes(session)
            if not leftovers:
                break
            for leftover in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)
            time.sleep(0.02)
        else:
            raise RuntimeError(f"Dovecot processes survived SIGKILL: {leftovers}")
        self._process.wait(timeout=5)

    # -- what tests use --------------------------------------------------------------------------

    def token(
        self, mailbox: str, lifetime: int = 3600, extra_claims: Mapping[str, Any] | None = None
    ) -> str:
        """A JWT Dovecot accepts as the XOAUTH2 bearer token for MAILBOX.

        EXTRA_CLAIMS can pad it to the 1.5-2.5 KB of a real Entra ID access token (or add
        claims Dovecot should reject); a negative LIFETIME gives an expired token.
        """
        # Integer and never in the future: Dovecot rejects both a float and a future iat, and it
        # compares with the time its event loop cached, which can lag a second behind; Entra ID
        # itself dates iat back a few minutes for clock skew.
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": mailbox,
            "email": mailbox,
            "iat": now - 300,
            "exp": now + lifetime,
        }
        claims.update(extra_claims or {})
        return mint_hs256(self.jwt_key, claims)

    def maildir(self, mailbox: str, folder: str = "INBOX") -> Path:
        """The Maildir++ folder Dovecot uses for FOLDER of MAILBOX (INBOX is the root)."""
        # auth_username_format defaults to %Lu, so the home is named after the lowercased user.
        root = self.home_root / mailbox.lower() / "Maildir"
        if folder.upper() == "INBOX":
            return root
        return root / ("." + folder.replace("/", "."))

    def deliver(self, mailbox: str, raw: bytes, folder: str = "INBOX") -> Path:
        """Put RAW into FOLDER of MAILBOX as a new message; returns the file written."""
        home = self.home_root / mailbox.lower()
        target = self.maildir(mailbox, folder)
        for directory in (home, home / "Maildir", target):
            self._owned_dir(directory)
        for sub in ("cur", "new", "tmp"):
            self._owned_dir(target / sub)
        if target != home / "Maildir":
            marker = target / "maildirfolder"
            marker.touch()
            os.chown(marker, self._uid, self._gid)
        now = time.time()
        unique = (
            f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}"
            f"Q{next(_delivery_counter)}.{socket.gethostname()},S={len(raw)}"
        )
        staging = target / "tmp" / unique
        with open(staging, "wb") as handle:
            handle.write(raw)
        os.chown(staging, self._uid, self._gid)
        os.chmod(staging, 0o600)
        final = target / "new" / unique
        # tmp -> new by rename, the Maildir way: Dovecot never sees a half-written message.
        os.rename(staging, final)
        return final

    def log_text(self) -> str:
        """Dovecot's start-up output and its log, for assertions and failure messages."""
        text = ""
        for path in (self.startup_log_path, self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    # -- internals -------------------------------------------------------------------------------

    def _owned_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            directory.mkdir(mode=0o700)
            os.chown(directory, self._uid, self._gid)

    def _write_oauth2_files(self) -> None:
        keydir = self.runtime_dir / "oauth2-keys"
        key_file = keydir / "default" / "HS256" / "default"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        # The dict holds the HMAC key base64-encoded; path segments are azp / alg / kid.
        key_file.write_text(base64.b64encode(self.jwt_key).decode())
        (self.runtime_dir / "oauth2.conf").write_text(
            "introspection_mode = local\n"
            f"local_validation_key_dict = fs:posix:prefix={keydir}/\n"
            "username_attribute = email\n"
        )
        # Read by the auth process, which runs as the 'dovecot' user.
        for path in (keydir, key_file.parent.parent, key_file.parent):
            os.chmod(path, 0o755)
        for path in (key_file, self.runtime_dir / "oauth2.conf"):
            os.chmod(path, 0o644)

    def _config(self, cert: Path, key: Path) -> str:
        return f"""\
# Written by tests/support/dovecot.py (Dovecot 2.3 syntax).
base_dir = {self.base_dir}
state_dir = {self.runtime_dir / "state"}
log_path = {self.log_path}
instance_name = xoauth2test-{self.imaps_port}
listen = 127.0.0.1
hostname = localhost
protocols = imap pop3 submission

ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2

disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_verbose = yes

passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.runtime_dir / "oauth2.conf"}
}}
userdb {{
  driver = static
  args = uid={self._uid} gid={self._gid} home={self.home_root}/%u allow_all_users=yes
}}

first_valid_uid = {self._uid}
first_valid_gid = {self._gid}
mail_location = maildir:~/Maildir
# inotify instances run out on shared machines; poll often so IDLE stays prompt regardless.
mailbox_idle_check_interval = 1 secs
# Tests open many simultaneous logins for one user, all from 127.0.0.1 (the proxy's address);
# the default of 10 per user and address (IMAP and POP3 alike) would refuse the rest.
mail_max_userip_connections = {self.max_userip_connections}

submission_relay_host = 127.0.0.1
submission_relay_port = {self.sink.port}
submission_relay_ssl = no

# Started at boot, not on first use: a client (or stop()) arriving while login processes still
# wait for them otherwise stalls for Dovecot's 5 s handshake timeout.
service stats {{
  process_min_avail = 1
}}
service auth {{
  process_min_avail = 1
}}
service anvil {{
  # No auth penalty: tests fail logins on purpose and must not be slowed down for it.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
# One login process serves many connections (Dovecot's "high-performance" mode), so a TLS
# session it issued can be resumed, as Office 365's can; by default every connection gets a
# process of its own, with ticket keys of its own.
service imap-login {{
  service_count = 0
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  service_count = 0
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service submission-login {{
  service_count = 0
  inet_listener submission {{
    port = {self.submission_port}
  }}
}}
"""

    def _read_master_pid(self) -> int:
        """The pid in base_dir/master.pid, written before the listeners we waited for."""
        assert self._process is not None
        try:
            return int((self.base_dir / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return self._process.pid  # the same process: -F does not fork

    def _startup_output(self) -> str:
        return self.log_text()[-4000:]


@pytest.fixture(scope="session")
def dovecot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """One Dovecot for the whole test session, stopped even when tests fail."""
    reason = dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    server = Dovecot(tmp_path_factory.mktemp("dovecot"), jwt_key=os.urandom(32))
    server.start()
    try:
        yield server
    finally:
        server.stop()
