#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: tests/setup.sh installs what it needs first
# (as root: Dovecot, the real mail clients, PostgreSQL, HAProxy, systemd and Chromium from Debian's
# packages; the project with its [test] extra into .venv).
# Arguments go to pytest, e.g. `tests/run.sh -k imap -x`.
# XOAUTH2_PROXY_REQUIRE_INTEGRATION=1 turns every skipped test into a failure (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
exec .venv/bin/python -m pytest "$@"
