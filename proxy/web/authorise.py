"""Authorising an account from the admin page: the same Entra ID flows as `account add`, run
off the reactor thread, one at a time per account.

The local password is turned into the store's key as soon as it arrives (scrypt, in the thread
pool) and then dropped; a flow keeps only the key until its tokens are stored with it. A device
code sign-in is polled in the background (the page follows it); an authorisation code sign-in
waits for the browser's redirect, or for the final address pasted into the page. A device code
is redeemed for one resource only: when the refresh token of the first sign-in is refused for a
further resource for want of consent, the flow goes on with a device code for that resource, and
the record is stored once every resource has its token.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from twisted.internet import defer, task
from twisted.logger import Logger

from ..config import AccountConfig
from ..entra.answers import AuthRequest, DeviceCode, TokenSet
from ..entra.client import EntraClient
from ..entra.polling import DevicePolling
from ..errors import ProxyError
from ..glue.runtime import Runtime
from ..resources import NAMES, OUTLOOK, resources_in
from ..store import Secrets, UnlockKey
from ..tokens.authorisation import store_authorisation, tokens_while_consented, with_tokens

log = Logger(namespace="xoauth2-proxy")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str


@dataclass(eq=False)
class Flow:
    account: AccountConfig
    client: EntraClient
    key: UnlockKey = field(repr=False)
    started_at: float
    pending: tuple[str, ...]  # the resources without a token yet; the next sign-in is for [0]
    secrets: Secrets = field(default_factory=Secrets, repr=False)
    device: DeviceCode | None = None
    consent_for: str | None = None  # the resource a further device code asks consent for
    request: AuthRequest | None = field(default=None, repr=False)
    outcome: Outcome | None = None
    polling: defer.Deferred[None] | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def cancel(self) -> None:
        if self.polling is not None and not self.polling.called:
            self.polling.cancel()


class Authorisations:
    def __init__(self, runtime: Runtime, entra_for: Any = None) -> None:
        self.runtime = runtime
        self._entra_for = entra_for or (lambda account: EntraClient(account, requests.Session()))
        self.flows: dict[str, Flow] = {}  # by user name in lower case

    def flow_of(self, username: str) -> Flow | None:
        return self.flows.get(username.lower())

    async def start(self, account: AccountConfig, password: str, redirect_uri: str) -> Flow:
        """Begin authorising `account`; a client credentials flow is over when this returns."""
        name = account.username.lower()
        previous = self.flows.pop(name, None)
        if previous is not None:
            previous.cancel()
        run = self.runtime.run_blocking
        key = await run(lambda: self.runtime.store.new_key(password))
        client = self._entra_for(account)
        flow = Flow(account, client, key, time.time(), resources_in(account.scopes) or (OUTLOOK,))
        self.flows[name] = flow
        log.info("{user}: authorisation started from the admin page ({flow})",
                 user=account.username, flow=account.flow, account=account.username,
                 event="authorisation_started")
        try:
            if account.flow == "client_credentials":
                await self._signed_in(flow, await run(client.client_credentials))
            elif account.flow == "device_code":
                flow.device = await run(client.start_device_code)
                flow.polling = defer.Deferred.fromCoroutine(self._poll(flow))
            else:
                flow.request = client.authorization_request(account.redirect_uri or redirect_uri)
        except ProxyError as e:
            self._failed(flow, e.message)
        return flow

    def by_state(self, state: str) -> Flow | None:
        """The authorisation code flow the redirect's `state` belongs to (constant time)."""
        found = None
        for flow in self.flows.values():
            if flow.request is not None and not flow.done and hmac.compare_digest(
                    flow.request.state.encode(), state.encode()):
                found = flow
        return found

    async def redeem(self, flow: Flow, redirect_url: str) -> Outcome:
        """The browser's final address (or the code) of an authorisation code sign-in."""
        request = flow.request
        assert request is not None
        try:
            tokens = await self.runtime.run_blocking(
                lambda: flow.client.redeem_code(request, redirect_url))
        except ProxyError as e:
            return self._failed(flow, e.message)
        await self._signed_in(flow, tokens)
        assert flow.outcome is not None, "only a device code sign-in asks for another"
        return flow.outcome

    def stop(self) -> None:
        for flow in self.flows.values():
            flow.cancel()

    async def _poll(self, flow: Flow) -> None:
        assert flow.device is not None
        polling = DevicePolling(flow.client, flow.device)
        reactor = self.runtime.reactor
        try:
            while True:
                await task.deferLater(reactor, polling.next_pause())
                tokens = await self.runtime.run_blocking(polling.poll)
                if tokens is not None:
                    break
            await self._signed_in(flow, tokens)
        except ProxyError as e:
            self._failed(flow, e.message)
        except defer.CancelledError:  # started again, or the proxy is stopping
            pass

    async def _signed_in(self, flow: Flow, tokens: TokenSet) -> None:
        """`tokens` are for the flow's next resource; the others come from the refresh token
        (or the app's credentials) as far as consent reaches, then from one more device code
        sign-in each. The record is written once, with every resource's token."""
        run = self.runtime.run_blocking
        account, client, rest = flow.account, flow.client, flow.pending[1:]
        secrets = with_tokens(flow.secrets, flow.pending[0], tokens)
        try:
            secrets, pending = await run(
                lambda: tokens_while_consented(client, account, rest, secrets))
            device = await run(lambda: client.start_device_code(pending[0])) if pending else None
        except ProxyError as e:
            self._failed(flow, e.message)
            return
        # The newest refresh token (of the latest sign-in) is in `secrets`: kept from here on.
        flow.secrets, flow.pending = secrets, pending
        if device is None:
            await self._store(flow)
            return
        flow.device, flow.consent_for = device, pending[0]
        log.info("{user}: {resource} needs its own consent; a device code sign-in for it "
                 "follows", user=account.username, resource=NAMES[pending[0]],
                 account=account.username, event="authorisation_consent")
        flow.polling = defer.Deferred.fromCoroutine(self._poll(flow))

    async def _store(self, flow: Flow) -> Outcome:
        account = flow.account
        try:
            await self.runtime.run_blocking(lambda: store_authorisation(
                self.runtime.store, account, flow.key, flow.secrets))
        except (OSError, ProxyError) as e:
            reason = e.message if isinstance(e, ProxyError) else (e.strerror or str(e))
            return self._failed(flow, f"the credentials could not be stored: {reason}")
        self.runtime.broker.forget_failures(account.username)
        flow.outcome = Outcome(True, f"{account.username} is authorised ({account.flow}); "
                               "devices log in with the local password just set.")
        log.info("{user}: authorised from the admin page ({flow})", user=account.username,
                 flow=account.flow, account=account.username, event="authorised")
        return flow.outcome

    def _failed(self, flow: Flow, reason: str) -> Outcome:
        flow.outcome = Outcome(False, f"{flow.account.username} was not authorised: {reason}")
        log.warn("{user}: authorisation from the admin page failed: {reason}",
                 user=flow.account.username, reason=reason, account=flow.account.username,
                 event="authorisation_failed")
        return flow.outcome

