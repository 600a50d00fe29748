"""Fixtures for the cluster tests: one ``scripts/cluster up`` per module (read-only tests
share it; the site cluster adds an edge and TLS), brought down when the module ends. Its
directory is a pytest tmp dir (0700 when run as root), which is exactly where nginx's
unprivileged workers cannot go."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.helpers import Cluster, SiteCluster, cluster_up
from tests.conftest import require
from tests.harness.tls import make_ca


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """svnserve, an origin with its sync worker, three replicas and nginx (the VIP)."""
    for tool in ("nginx", "curl", "wget", "svnserve"):
        require(tool)
    with cluster_up(tmp_path_factory.mktemp("cluster")) as running:
        yield running


SITE_CLIENT = "127.0.0.2"     # a client bound to this address is one of site "bnl"'s


@pytest.fixture(scope="module")
def site_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteCluster]:
    """Two replicas that redirect site "bnl" (127.0.0.2/32) to its edge, the VIP in front
    of them serving https too (a CA made for the module), the edge's https front."""
    for tool in ("nginx", "curl", "wget", "svnserve", "openssl"):
        require(tool)
    ca = make_ca(tmp_path_factory.mktemp("tls"))
    directory = tmp_path_factory.mktemp("sites")
    with cluster_up(directory, "--replicas", "2", "--site", f"bnl={SITE_CLIENT}/32",
                    "--tls-cert", str(ca.cert), "--tls-key", str(ca.key),
                    "--tls-ca", str(ca.ca)) as running:
        yield SiteCluster(running.dir, running.info, ca)
