"""The proxy runs where POSIX-only modules do not exist (Windows): none of its modules needs one.

A subprocess makes fcntl, pwd, grp, resource and termios unimportable with a meta-path finder,
then imports every module of proxy/ and runs the store, broker and config tests. Third-party
libraries are imported before the finder is installed: on Windows they take their own paths
(filelock its msvcrt lock, Twisted its select reactor), which a Linux run cannot take.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import private_files
from tests.test_layout import PACKAGE, module_files

ROOT = PACKAGE.parent
POSIX_ONLY = ("fcntl", "pwd", "grp", "resource", "termios")

BOOTSTRAP = """
import importlib, sys

POSIX_ONLY = {posix_only!r}
for name in {third_party!r}:
    try:
        importlib.import_module(name)
    except ImportError:  # another platform's or Python version's module (msvcrt, tomli)
        pass


class NoPosixOnly:
    \"\"\"Refuses the POSIX-only modules, as a Windows Python has none of them.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in POSIX_ONLY:
            raise ImportError(f"{{name}} does not exist on this platform (simulated)", name=name)
        return None


for name in POSIX_ONLY:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, NoPosixOnly())
"""

IMPORT_ALL = """
for name in {modules!r}:
    importlib.import_module(name)
print("imported", len({modules!r}))
"""

RUN_TESTS = """
import pytest
sys.exit(pytest.main({args!r}))
"""


def _third_party_imports() -> list[str]:
    """Every module outside proxy/ that a module of proxy/ imports (anywhere in it): the standard
    library's and third-party ones, which choose their own platform's path."""
    found: set[str] = set()
    for path in module_files(PACKAGE).values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    outside = {name for name in found if name.split(".")[0] not in ("proxy", "__future__")}
    return sorted(name for name in outside if name.split(".")[0] not in POSIX_ONLY)


def _run(body: str) -> subprocess.CompletedProcess[str]:
    prefix = BOOTSTRAP.format(posix_only=POSIX_ONLY, third_party=_third_party_imports() + [
        "pytest", "hypothesis", "twisted.internet.reactor", "twisted.internet.testing"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", prefix + body], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_simulation_refuses_posix_only_modules() -> None:
    """The finder really makes `import fcntl` fail, so the tests below can fail."""
    result = _run("import fcntl\n")
    assert result.returncode != 0
    assert "fcntl does not exist on this platform (simulated)" in result.stderr


def test_every_module_imports_without_posix_only_modules() -> None:
    """Every module of proxy/ imports with fcntl, pwd, grp, resource and termios missing."""
    modules = sorted(module_files(PACKAGE))
    result = _run(IMPORT_ALL.format(modules=modules))
    assert result.returncode == 0, result.stderr
    assert f"imported {len(modules)}" in result.stdout


def test_store_broker_and_config_tests_pass_without_posix_only_modules() -> None:
    """The store, broker and config tests pass with the POSIX-only modules missing."""
    tests = ["tests/test_store.py", "tests/test_broker.py", "tests/test_config.py"]
    result = _run(RUN_TESTS.format(args=["-q", "-p", "no:cacheprovider", *tests]))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_private_files_work_without_posix_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without POSIX modes (Windows), private files and folders are written with no fchmod,
    chmod or folder fsync, which Windows does not have."""
    monkeypatch.setattr(private_files, "POSIX_MODES", False)
    monkeypatch.delattr(os, "fchmod")
    monkeypatch.delattr(os, "O_DIRECTORY")
    monkeypatch.setattr(os, "chmod", None)
    folder = tmp_path / "store"
    private_files.make_private_folder(folder, tighten_existing=True)
    private_files.make_private_folder(folder, tighten_existing=True)
    private_files.write_atomically(folder / "a.json", b"one")
    private_files.write_atomically(folder / "a.json", b"two")
    assert (folder / "a.json").read_bytes() == b"two"
    assert [p.name for p in folder.iterdir()] == ["a.json"]
