"""The scripts a user copies (scripts/*.py): each answers --help with its purpose (its
docstring's first line) and shows a command in its docstring; no script, reference study
script or doc names a machine path."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))

# A machine's own folders; an example placeholder such as <runs-folder> stands in for them.
MACHINE_PATH = re.compile(r"/work/|/tmp/|/root/|/home/")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script):
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    assert doc and f"python scripts/{script.name}" in doc, "the docstring shows a command"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    purpose = " ".join(doc.splitlines()[0].split())
    assert purpose in " ".join(out.stdout.split()), "--help states the docstring's first line"


def machine_path_files() -> list[Path]:
    files = [p for p in (ROOT / "scripts").rglob("*") if p.is_file()]
    files += [p for ext in ("sh", "py") for p in (ROOT / "reference").rglob(f"*.{ext}")]
    files += list((ROOT / "docs").rglob("*.md"))
    return sorted(files)


def test_no_machine_paths():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in machine_path_files() if "__pycache__" not in p.parts
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if MACHINE_PATH.search(line)]
    assert not hits, "machine paths (use an argument or a <placeholder>):\n" + "\n".join(hits)
