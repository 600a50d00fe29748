"""The system tools the tests run (svn, curl, nginx, ...): found, or the test cannot run.

In CI (``CI=true``) a missing tool fails the test; ``scripts/test`` installs them all.
"""

from __future__ import annotations

import os
import shutil

import pytest


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def require(name: str) -> str:
    """Path of a binary; a failure in CI, a skip on a developer machine without it."""
    path = which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; scripts/test must install it")
        pytest.skip(f"{name} is not installed (run scripts/test to install it)")
    return path
