#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs first.
#   - Python packages: into .venv (created here), the project with its [test] extra.
#   - As root with apt-get: Dovecot and the real mail clients from Debian's packages,
#     systemd for `systemd-analyze verify` of contrib/xoauth2-proxy.service, and chromium with
#     chromium-driver for the admin page's browser tests.
# Arguments go to pytest, e.g. `tests/run.sh -k imap -x`.
# XOAUTH2_PROXY_REQUIRE_INTEGRATION=1 turns every skipped test into a failure (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond
                 curl fetchmail s-nail msmtp openssl iproute2 systemd chromium chromium-driver)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for package in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "tests/run.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
else
    echo "tests/run.sh: not root: Dovecot and mail clients are used only if already installed" >&2
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
