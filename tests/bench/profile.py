"""Sampling profiles of this proxy while a row runs, with py-spy (from the benchmark's own
environment), and a short text summary: where the CPU time went, own frames and callees."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# Frames on nearly every sample (the module, the CLI, the reactor loop) say nothing.
TRUNK = 0.9
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


@contextlib.contextmanager
def profiled(py_spy: Path | None, pid: int | None, output: Path) -> Iterator[None]:
    """Record `pid` with py-spy into `output` (collapsed stacks) while the block runs."""
    if py_spy is None or pid is None:
        yield
        return
    recorder = subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
         "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()


def _frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker, keep in (("site-packages/", ""), ("/proxy/", "proxy/"), ("/lib/python3.", "")):
        if marker in path:
            path = keep + path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


def summary(path: Path, top: int = 12) -> str:
    """The busiest leaf functions (self time) and the busiest frames anywhere on the stack."""
    if not path.exists():
        return f"{path.name}: no samples"
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaves[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.stem}: {total} samples of active CPU (200/s)", "  self time:"]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in leaves.most_common(top)]
    lines.append("  on the stack (below the reactor's main loop):")
    branches = [(name, n) for name, n in inclusive.most_common() if n < TRUNK * total]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in branches[: top * 2]]
    return "\n".join(lines)
