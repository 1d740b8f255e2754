"""The benchmark's output: one Markdown table (a row per figure, a column per target), the
machine it ran on, the command, the load and the time it took."""

from __future__ import annotations

import math
import os
import platform
import shutil
import ssl
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NOT_MEASURED = "-"


@dataclass
class Row:
    figure: str
    cells: dict[str, str] = field(default_factory=dict)  # target name -> text


def failed(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"failed: {text[:160]}"


def table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    lines = ["| figure | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = [row.cells.get(column, NOT_MEASURED) for column in columns]
        lines.append(f"| {row.figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def ratio_text(value: float, baseline: float | None) -> str:
    return f" ({value / baseline:.2f})" if baseline else ""


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not found"
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_line(emailproxy_version: str) -> str:
    import twisted
    from OpenSSL import SSL

    pyopenssl_openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores; Linux {platform.release()}; "
        f"Python {platform.python_version()}; Twisted {twisted.__version__}; "
        f"{pyopenssl_openssl} (this proxy, via pyOpenSSL), {ssl.OPENSSL_VERSION} (clients, emailproxy); "
        f"Dovecot {_first_line(['dovecot', '--version'])}; emailproxy {emailproxy_version}"
    )


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
