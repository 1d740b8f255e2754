#!/usr/bin/env bash
# Type and style checks, as CI runs them: mypy --strict on proxy/ (configured in pyproject.toml)
# and ruff on proxy/ and tests/. Installs the project with its [dev] and [postgresql] extras into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,postgresql]'
.venv/bin/mypy
.venv/bin/ruff check proxy tests
