"""The authorisation code sign-in of `account add`, with PKCE (S256) and state.

Plain synchronous code (no Twisted): it runs once, in a terminal, over SSH or in a container, and
needs no TTY. A one-shot listener on 127.0.0.1 receives the browser's final redirect; the
authorisation URL is always printed, a browser is opened only when one is plausible, and with
--no-browser the final redirect URL may also be pasted on standard input (whichever arrives
first wins). The wait is bounded and the listener is always closed.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from ..config import AccountConfig
from ..errors import AuthorisationExpired, AuthorisationFailed, ProxyError
from .answers import AuthRequest, TokenSet
from .client import EntraClient
from .prompts import minutes, say, who_signs_in

AUTH_CODE_WAIT = 600.0  # seconds the authorisation code sign-in may take
RESPONSE_WAIT = 60.0  # how long the browser's request waits for the code to be redeemed
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


class _RedirectServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a listener closed a moment ago must not block a retry


class _RedirectListener:
    """A one-shot HTTP listener on 127.0.0.1 for the browser's final redirect."""

    def __init__(self, port: int, path: str, arrived: queue.Queue[tuple[str, str | None]]) -> None:
        self.path = path or "/"
        self.arrived = arrived
        self.state = ""
        self.outcome = threading.Event()
        self.outcome_text = ""
        self.answered = threading.Event()
        self._taken = False
        self._lock = threading.Lock()
        try:
            self.server = _RedirectServer(("127.0.0.1", port), self._handler_class())
        except OSError as e:
            raise AuthorisationFailed(
                f"Cannot listen on 127.0.0.1 port {port} for the sign-in's redirect "
                f"({e.strerror or e}); stop what uses that port, or set another port in the "
                "account's redirect_uri (it must also be registered on the app)"
            ) from None
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,),
                                        name="redirect-listener", daemon=True)

    def start(self, state: str) -> None:
        self.state = state
        self._thread.start()

    def finish(self, text: str) -> None:
        """Tell the waiting browser how it ended; wait briefly for the page to go out."""
        self.outcome_text = text
        self.outcome.set()
        if self._taken:
            self.answered.wait(5)

    def close(self) -> None:
        self.outcome.set()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def _claim(self, url: str) -> bool:
        with self._lock:
            if self._taken:
                return False
            self._taken = True
        self.arrived.put(("listener", url))
        return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "xoauth2-proxy"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the URL carries the code: never print it

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                ours = (
                    parts.path.rstrip("/") == listener.path.rstrip("/")
                    and hmac.compare_digest(params.get("state", "").encode(),
                                            listener.state.encode())
                    and ("code" in params or "error" in params)
                )
                if not ours:
                    status = 404 if parts.path != listener.path else 400
                    self._page(status, "This address does not belong to the sign-in in progress.")
                    return
                if not listener._claim(f"http://localhost:{listener.port}{self.path}"):
                    self._page(409, "The sign-in already received its answer; you can close "
                               "this window.")
                    return
                listener.outcome.wait(RESPONSE_WAIT)
                try:
                    self._page(200, listener.outcome_text or "The sign-in was received. You can "
                               "close this window and go back to the terminal.")
                finally:
                    listener.answered.set()

            def _page(self, status: int, text: str) -> None:
                body = ("<!doctype html><meta charset=utf-8><title>xoauth2-proxy</title>"
                        f"<p>{_html(text)}</p>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _loopback_redirect(uri: str) -> tuple[int, str] | None:
    """(port, path) when the redirect URI is one a local listener can receive, else None."""
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        return None
    return parts.port or 80, parts.path or "/"


def browser_plausible() -> bool:
    """True where webbrowser can open a graphical browser: never over plain SSH or in a
    container, where it would fall back to a console browser that takes over the terminal."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_in_background(url: str, open_url: Callable[[str], Any]) -> None:
    # Some browsers' launchers block until the browser exits: never wait for them.
    def run() -> None:
        with contextlib.suppress(Exception):  # the printed URL is the fallback
            open_url(url)

    threading.Thread(target=run, name="open-browser", daemon=True).start()


def _read_pasted(in_: TextIO, arrived: queue.Queue[tuple[str, str | None]]) -> None:
    """Every non-empty line of standard input (a mistaken paste is answered and the user may
    paste again); ('eof', None) when it ends."""
    try:
        for line in iter(in_.readline, ""):
            if line.strip():
                arrived.put(("pasted", line.strip()))
        arrived.put(("eof", None))
    except (OSError, ValueError):
        arrived.put(("eof", None))


def _pasted_problem(request: AuthRequest, text: str) -> str | None:
    """Why a pasted line cannot be the final redirect of this sign-in (None if it can be)."""
    if "?" not in text and "#" not in text and "=" not in text:
        return None  # a bare code
    parts = urlsplit(text)
    query = "&".join(p for p in (parts.query, parts.fragment) if p) if (
        "?" in text or "#" in text) else text
    params = {k: v[0] for k, v in parse_qs(query).items()}
    if not hmac.compare_digest(params.get("state", "").encode(), request.state.encode()):
        return ("That address does not belong to this sign-in (its state does not match); "
                "paste the address the browser shows at the end of this sign-in")
    if "code" not in params and "error" not in params:
        return "That address carries no authorisation code; paste the complete address"
    return None


def auth_code_flow(
    client: EntraClient,
    account: AccountConfig,
    out: TextIO,
    in_: TextIO,
    open_browser: bool,
    *,
    timeout: float = AUTH_CODE_WAIT,
    open_url: Callable[[str], Any] | None = None,
) -> TokenSet:
    """Run an authorisation code sign-in with PKCE and state; see the module docstring.
    Raises AuthorisationFailed (or a subclass) with a sentence saying what to do."""
    arrived: queue.Queue[tuple[str, str | None]] = queue.Queue()
    configured = account.redirect_uri
    listener: _RedirectListener | None = None
    if configured is None:
        listener = _RedirectListener(0, "/", arrived)
        redirect_uri = f"http://localhost:{listener.port}/"
    else:
        redirect_uri = configured
        loopback = _loopback_redirect(configured)
        if loopback is not None:
            listener = _RedirectListener(loopback[0], loopback[1], arrived)
    try:
        request = client.authorization_request(redirect_uri)
        if listener is not None:
            listener.start(request.state)
        paste = not open_browser or listener is None
        say(out)
        say(out, f"{who_signs_in(account)}, at this address:")
        say(out)
        say(out, f"  {request.url}")
        say(out)
        if open_browser and browser_plausible():
            _open_in_background(request.url, open_url or _webbrowser_open)
            say(out, "A browser window should open at that address; if none does, open it "
                 "yourself.")
        if listener is not None:
            say(out, f"After the sign-in the browser is sent to {redirect_uri}, where this "
                 "command listens; then it finishes by itself.")
        if paste:
            say(out, f"If the browser runs on another machine, it ends on an address starting "
                 f"with {redirect_uri} (maybe an error page): copy that whole address from "
                 "its address bar and paste it here, then press Enter.")
            threading.Thread(target=_read_pasted, args=(in_, arrived), name="read-pasted",
                             daemon=True).start()
        say(out, f"Waiting up to {minutes(timeout)} for the sign-in...")
        url = _wait_for_redirect(request, arrived, out, listener, timeout, account.username)
        try:
            tokens = client.redeem_code(request, url)
        except ProxyError as e:
            if listener is not None:
                listener.finish(f"The sign-in failed: {e.message}")
            raise
        if listener is not None:
            listener.finish("Signed in. You can close this window and go back to the terminal.")
        say(out, "Signed in.")
        return tokens
    finally:
        if listener is not None:
            listener.close()


def _wait_for_redirect(
    request: AuthRequest,
    arrived: queue.Queue[tuple[str, str | None]],
    out: TextIO,
    listener: _RedirectListener | None,
    timeout: float,
    username: str,
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise queue.Empty
            source, text = arrived.get(timeout=remaining)
        except queue.Empty:
            raise AuthorisationExpired(
                f"No sign-in arrived within {minutes(timeout)}; run: xoauth2-proxy account add "
                f"{username} and finish the sign-in in the browser"
            ) from None
        if source == "eof":
            if listener is None:
                raise AuthorisationFailed(
                    "Standard input ended before the final redirect address was pasted; run: "
                    f"xoauth2-proxy account add {username}"
                )
            continue  # the listener may still get it
        assert text is not None
        if source == "pasted":
            problem = _pasted_problem(request, text)
            if problem is not None:
                say(out, problem + ".")
                continue
        return text


def _webbrowser_open(url: str) -> bool:
    import webbrowser

    return webbrowser.open(url)
