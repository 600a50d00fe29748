"""Fixtures for the HTTP front end acceptance tests (real ``codecache serve`` subprocesses).

An origin (real svnserve, real ``sync --once``) with tags 1.0.0 and 1.2.0, ``latest`` →
1.2.0, is built once per session as a template; every server gets a copy of that origin
directory (keys, config, store) and its own ``codecache serve`` on a free loopback port, so
tests that publish, roll back or damage blobs never see each other's state. Read-only tests
share one server per module (``site``); tests that change state get their own
(``fresh_site``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Origin, SvnRepo, copy_origin, require
from tests.http.helpers import STREAMED, Server, new_origin, running


@pytest.fixture(scope="session")
def template_origin(svn_server: SvnRepo, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """A synced origin: tags 1.0.0 and 1.2.0, ``latest`` → 1.2.0; never served itself."""
    require("curl")
    require("wget")
    # Synced a second after tagging: a channel URL's Last-Modified (the move) must be
    # told apart from a release URL's (the tag's commit date).
    return new_origin(svn_server, tmp_path_factory.mktemp("template") / "origin", later=True)


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


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory for wget/curl downloads."""
    path = tmp_path / "client"
    path.mkdir()
    return path
