"""Git servers on loopback for the tests: real ``git http-backend`` behind nginx (TLS, basic
auth), and one named fake for a fault that cannot be made real (``git daemon``:
``gitrepo.served``).

* ``http_backend``: nginx (the test's own, on a free port) hands ``/REPO.git/...`` to ``git
  http-backend`` through ``fcgiwrap``, as git's documentation sets it up. With a ``LocalCa``
  it speaks https; with ``users`` it asks for basic auth. It passes no ``Git-Protocol``
  header, so clients speak protocol v0 (stateless): commits reachable from a ref are handed
  out by id, others are refused ("not our ref").
* ``ssh_server``: a real ``sshd`` on a free loopback port with its own host key and one
  user key (the test runner's own account runs ``git-upload-pack``); as root it runs in a
  private mount namespace whose ``/run`` is its own, so the privilege separation directory
  it needs is made there and not on the machine.
* ``silent_server`` (a FAKE, named as such): a socket that accepts connections and never
  answers, the hung server no real one can be made into.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.binaries import require
from tests.harness.processes import restore_signals
from tests.harness.timing import free_port, scaled, wait_for_port, wait_until
from tests.harness.tls import LocalCa

HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")

_NGINX_CONF = """\
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    fastcgi_temp_path {prefix}/fastcgi;
    proxy_temp_path {prefix}/proxy;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port}{ssl};
{tls}
{auth}
        client_max_body_size 0;
        limit_rate {rate};
        location / {{
            fastcgi_pass unix:{socket};
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
        }}
    }}
    server {{
        listen 127.0.0.1:{redirect_port}{ssl};
{tls}
        return 302 {scheme}://127.0.0.1:{port}$request_uri;
    }}
}}
"""


def _stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout=scaled(10))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class HttpGit:
    url: str        # http(s)://127.0.0.1:PORT: the repositories
    redirect: str   # http(s)://127.0.0.1:OTHER: redirects every request to the same path on url


@contextlib.contextmanager
def http_backend(root: Path, prefix: Path, *, tls: LocalCa | None = None,
                 users: dict[str, str] | None = None, rate: int = 0) -> Iterator[HttpGit]:
    """Serve the repositories under ``root`` over http(s), and a redirect to them from
    another port (another host as far as credentials go).

    ``users``: name -> password for basic auth (none: no auth). ``rate``: bytes per second
    of each response (0: unlimited), so a large pack takes a while to fetch.
    """
    nginx, fcgiwrap = require("nginx"), require("fcgiwrap")
    prefix.mkdir(parents=True, exist_ok=True)
    sock = prefix / "fcgiwrap.sock"
    auth = ""
    if users:
        # nginx reads "{PLAIN}" passwords as they are: enough for a loopback test server.
        (prefix / "htpasswd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
        auth = f'        auth_basic "git";\n        auth_basic_user_file {prefix}/htpasswd;'
    port, redirect_port = free_port(), free_port()
    scheme = "https" if tls else "http"
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(
        prefix=prefix, port=port, redirect_port=redirect_port, scheme=scheme, socket=sock,
        rate=rate, backend=HTTP_BACKEND, root=root, auth=auth,
        # The pytest temporary directories are private to their owner: root's workers stay
        # root to reach them (a non-root run needs no user line).
        user="user root;" if os.geteuid() == 0 else "",
        ssl=" ssl" if tls else "",
        tls=f"        ssl_certificate {tls.cert};\n        ssl_certificate_key {tls.key};"
        if tls else ""))
    # Its own process group: fcgiwrap forks its workers, which its own SIGTERM leaves alive.
    # http-backend's messages (a refused commit...) go to the log, not the test's output.
    with (prefix / "fcgiwrap.log").open("ab") as log:
        wrapper = subprocess.Popen([fcgiwrap, "-c", "2", "-s", f"unix:{sock}"],
                                   stdin=subprocess.DEVNULL, stderr=log,
                                   preexec_fn=restore_signals, start_new_session=True)
    server = None
    try:
        wait_until(sock.exists, scaled(10), "fcgiwrap's socket")
        server = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf),
                                   "-g", "daemon off;"], preexec_fn=restore_signals)
        wait_for_port(port)
        wait_for_port(redirect_port)
        yield HttpGit(f"{scheme}://127.0.0.1:{port}", f"{scheme}://127.0.0.1:{redirect_port}")
    finally:
        if server is not None:
            _stop(server, signal.SIGQUIT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(wrapper.pid, signal.SIGTERM)
        _stop(wrapper)


_SSHD_CONF = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_key
AuthorizedKeysFile {directory}/authorized_keys
PidFile {directory}/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
LogLevel ERROR
"""


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str             # the account the key logs into (this test run's own)
    key: Path             # the user's private key (authorized)
    other_key: Path       # a private key the server does not know
    known_hosts: Path     # the server's host key, for the client's UserKnownHostsFile

    def url(self, repository: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repository}"

    def ssh_command(self) -> str:
        """A ``GIT_SSH_COMMAND`` an operator would set: no user ssh config, this known_hosts."""
        return (f"ssh -F /dev/null -o UserKnownHostsFile={self.known_hosts} "
                "-o StrictHostKeyChecking=yes")


@contextlib.contextmanager
def ssh_server(directory: Path) -> Iterator[SshServer]:
    """A real ``sshd`` on loopback that lets ``key`` (made here) in."""
    sshd, keygen = require("sshd"), require("ssh-keygen")
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key", "other_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", str(directory / name)], check=True, capture_output=True)
    (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
    port = free_port()
    host_key = (directory / "host_key.pub").read_text().split()[:2]
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    conf = directory / "sshd_config"
    conf.write_text(_SSHD_CONF.format(port=port, directory=directory))
    command = [sshd, "-D", "-e", "-f", str(conf)]
    if os.geteuid() == 0:   # sshd needs /run/sshd: made in a /run of its own
        command = [require("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs codecache-test /run && mkdir -m 755 /run/sshd && exec "$@"',
                   "sh", *command]
    with (directory / "sshd.log").open("ab") as log:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=log,
                                  preexec_fn=restore_signals)
    try:
        wait_for_port(port)
        yield SshServer(port, getpass.getuser(), directory / "user_key",
                        directory / "other_key", directory / "known_hosts")
    finally:
        _stop(server)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """FAKE: a loopback port that accepts every connection and never sends a byte (a hung
    server; no real server can be made to hang like this). Yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()
