"""Which cnnlab made a run: its version and, when it runs from a git checkout, the commit.

``provenance()`` is what ``runs.train`` records in every run's config.json. It never fails: where
git is missing, slow or refuses (another user's checkout), or cnnlab is installed outside a
checkout, the commit is None.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["git_state", "provenance"]


def provenance() -> dict:
    """{"cnnlab": version, "git_commit": 40 hex digits or None, "git_dirty": bool or None}:
    ``git_dirty`` is whether files tracked in the checkout had uncommitted changes."""
    from . import __version__  # noqa: PLC0415  (the package defines it after importing its modules)

    commit, dirty = git_state(Path(__file__).resolve().parent)
    return {"cnnlab": __version__, "git_commit": commit, "git_dirty": dirty}


def git_state(package_dir: Path, timeout: float = 10.0) -> tuple[str | None, bool | None]:
    """(HEAD's commit, uncommitted changes?) of the git checkout ``package_dir``'s own files are
    tracked in, or (None, None): not in a checkout, installed into someone else's (a virtual
    environment inside a project: the files are not tracked there), or git failing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # the package's checkout, no other

    def git(*args) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None, None
        head = git("rev-parse", "--verify", "HEAD")
        commit = head.stdout.strip()
        if head.returncode != 0 or len(commit) not in (40, 64):
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no")
        return commit, (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None, None
