#!/usr/bin/env bash
# Installs what the tests and the benchmark need on a fresh machine:
#   - as root with apt-get, from Debian's packages: Dovecot and the real mail clients;
#     PostgreSQL and HAProxy (the tests start their own cluster and balancer); systemd for
#     `systemd-analyze verify` of contrib/xoauth2-proxy.service; chromium and chromium-driver
#     for the admin page's browser tests;
#   - Python packages: into .venv (created here), the project with its [test] extra.
# tests/run.sh and tests/benchmark.sh run it first; it does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond
                 curl fetchmail s-nail msmtp openssl iproute2 systemd postgresql haproxy
                 chromium chromium-driver)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for package in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "tests/setup.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
else
    echo "tests/setup.sh: not root: Dovecot, mail clients, PostgreSQL, HAProxy and Chromium" \
         "are used only if already installed" >&2
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
