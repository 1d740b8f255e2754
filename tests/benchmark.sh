#!/usr/bin/env bash
# The side-by-side benchmark on a fresh machine, in one command (as root, like tests/run.sh):
#   - tests/setup.sh: Dovecot and the mail clients from Debian, the project into .venv;
#   - .venv-bench: email-oauth2-proxy (the peer it is compared with) and py-spy, kept out of
#     the project's own environment;
#   - then `python -m tests.benchmark`, which gets the arguments, e.g. --rows bulk,login.
# Not part of the test suite: it takes several minutes and measures, it does not judge.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
EMAILPROXY_VERSION=2026.7.3
PY_SPY_VERSION=0.4.3
[ -x .venv-bench/bin/python ] || "${PYTHON:-python3}" -m venv .venv-bench
.venv-bench/bin/python -m pip install -q --disable-pip-version-check \
    "emailproxy==$EMAILPROXY_VERSION" "py-spy==$PY_SPY_VERSION"
export BENCH_COMMAND="tests/benchmark.sh${*:+ $*}"
exec .venv/bin/python -m tests.benchmark "$@"
