"""The documentation's Python examples work as written: every ```python block of README.md and
docs/*.md runs, as pasted, in a fresh interpreter in an empty folder, and must exit cleanly.

A block meant only to illustrate (one that serves forever, or needs files a reader would have) is
skipped when the line before its fence is an HTML comment starting ``<!-- not run``; keep those
rare. Examples that train must be small enough to finish in seconds.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = "<!-- not run"


def python_blocks(path: Path):
    """(line of the fence, code, run?) of each ```python block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            assert end is not None, f"{path.name}:{i + 1}: a ```python block that never closes"
            before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            found.append((i + 1, "\n".join(lines[i + 1:end]) + "\n", not before.startswith(NOT_RUN)))
            i = end
        i += 1
    return found


BLOCKS = [pytest.param(code, id=f"{path.name}:{line}", marks=() if run else pytest.mark.skip("marked not run"))
          for path in DOCUMENTS for line, code, run in python_blocks(path)]


def test_the_readme_has_examples_that_run():
    assert sum(run for _, _, run in python_blocks(ROOT / "README.md")) >= 2


def test_blocks_are_found_and_marked(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n```python\nprint(1)\n```\n\n<!-- not run: serves forever -->\n```python\nserve()\n```\n"
                   "```sh\nls\n```\n")
    assert python_blocks(doc) == [(2, "print(1)\n", True), (7, "serve()\n", False)]


@pytest.mark.parametrize("code", BLOCKS)
def test_python_block_runs_as_written(code, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
