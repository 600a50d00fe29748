"""A certificate authority made for a test run (real openssl), and a server certificate it
signed for the loopback names: what the https tests trust (``curl --cacert``,
``wget --ca-certificate``, a node's ``SSL_CERT_FILE``)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.binaries import require

# Every name a loopback client may use for a local node.
SERVER_NAMES = "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"


@dataclass(frozen=True)
class LocalCa:
    """The CA's certificate and a server certificate and key it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_ca(directory: Path) -> LocalCa:
    """A fresh CA (P-256, one day) and a server certificate for 127.0.0.1, ::1, localhost."""
    openssl = require("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], capture_output=True, check=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=codecache test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    extensions = directory / "server.ext"
    extensions.write_text(f"{SERVER_NAMES}\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(extensions))
    return LocalCa(ca, cert, key)
