"""Fixtures for the cluster tests: one ``scripts/cluster up`` per module (read-only tests
share it), brought down when the module ends. Its directory is a pytest tmp dir (0700 when
run as root), which is exactly where nginx's unprivileged workers cannot go."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.helpers import Cluster, cluster_up
from tests.conftest import require


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """svnserve, an origin with its sync worker, three replicas and nginx (the VIP)."""
    for tool in ("nginx", "curl", "wget", "svnserve"):
        require(tool)
    with cluster_up(tmp_path_factory.mktemp("cluster")) as running:
        yield running
