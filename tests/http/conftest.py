"""Fixtures for the HTTP front end acceptance tests (real ``codecache serve`` subprocesses).

The run's template origin (``tests/conftest.py``: tags 1.0.0 and 1.2.0, ``latest`` →
1.2.0) is copied for each server: every server gets a copy of that origin
directory (keys, config, store) and its own ``codecache serve`` on a free loopback port, so
tests that publish, roll back or damage blobs never see each other's state. Read-only tests
share one server per module (``site``); tests that change state get their own
(``fresh_site``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Origin, copy_origin, require
from tests.http.helpers import STREAMED, Server, running


@pytest.fixture(autouse=True, scope="module")
def _clients() -> None:
    """Every test here runs the real curl or wget."""
    require("curl")
    require("wget")


@pytest.fixture(scope="module")
def site(template_origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running server shared by one module's read-only tests."""
    with running(copy_origin(template_origin, tmp_path_factory.mktemp("site") / "o")) as s:
        yield s


@pytest.fixture
def fresh_site(template_origin: Origin, tmp_path: Path) -> Iterator[Server]:
    """A running server of its own, for a test that publishes or damages the store."""
    with running(copy_origin(template_origin, tmp_path / "origin")) as s:
        yield s


@pytest.fixture(params=["memory", "streamed"])
def damage_site(request: pytest.FixtureRequest, template_origin: Origin,
                tmp_path: Path) -> Iterator[Server]:
    """Like ``fresh_site``, once serving blobs from memory and once streaming their files."""
    env = STREAMED if request.param == "streamed" else None
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
        yield s
