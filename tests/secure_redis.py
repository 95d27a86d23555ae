"""A redis-server with passwords, ACL users or TLS for the secrets tests (not tests themselves).

Outside CI a test skips, saying why, when redis-server or the openssl command is missing or
redis-server was built without TLS; in CI (``CI`` set, as ``.ci/run``'s environment does)
it fails instead, so that these tests never stop running quietly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import REDIS_SERVER, free_port

REPO = Path(__file__).resolve().parents[1]
OPENSSL = shutil.which("openssl")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


def need_redis() -> None:
    pytest.importorskip("redis")
    if REDIS_SERVER is None:
        unavailable("redis-server is not installed (Debian: apt-get install redis-server)")


def secret_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by this user only."""
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


class SecureRedis:
    """A ``redis-server`` on loopback from a config file holding ``lines``; the plain port
    always listens (the readiness check), ``tls`` adds a TLS port (``self.tls_port``)."""

    def __init__(self, folder: Path, lines: list[str], *, tls: CA | None = None) -> None:
        need_redis()
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else None
        conf = [f"port {self.port}", "bind 127.0.0.1", f"dir {folder}", "appendonly yes", "appendfsync always",
                'save ""', f"logfile {folder / 'redis.log'}", *lines]
        if tls is not None:
            conf += [f"tls-port {self.tls_port}", f"tls-cert-file {tls.server_cert}", f"tls-key-file {tls.server_key}",
                     f"tls-ca-cert-file {tls.cert}", "tls-auth-clients no"]
        self.conf = folder / "redis.conf"
        # The config, not the command line, holds any password (ps shows the command line).
        self.conf.write_text("\n".join(conf) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> SecureRedis:
        # A config error comes before the log file is open: on stderr.
        with (self.folder / "redis.stderr").open("w") as stderr:
            self.process = subprocess.Popen([REDIS_SERVER, str(self.conf)], stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64)[:1] in (b"+", b"-"):  # +PONG, or -NOAUTH when a password is needed
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        log = "".join(p.read_text() for p in (self.folder / "redis.stderr", self.folder / "redis.log") if p.exists())
        self.stop()
        if self.tls_port is not None and "tls" in log.lower():
            unavailable(f"redis-server refused the TLS settings (built without TLS?): {log[-500:]}")
        raise RuntimeError(f"redis-server did not start on port {self.port}: {log[-2000:]}")

    def url(self, user: str = "", password: str = "", *, tls: bool = False, query: str = "") -> str:
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        scheme, port = ("rediss", self.tls_port) if tls else ("redis", self.port)
        return f"{scheme}://{auth}127.0.0.1:{port}/0" + (f"?{query}" if query else "")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class CA:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 and localhost
    (the ``openssl`` command)."""

    def __init__(self, folder: Path, name: str = "l2fast test CA") -> None:
        if OPENSSL is None:
            unavailable("the openssl command is not installed (Debian: apt-get install openssl)")
        folder.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = folder / "ca.crt", folder / "ca.key"
        self.server_cert, self.server_key = folder / "server.crt", folder / "server.key"
        csr, ext = folder / "server.csr", folder / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for args in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
             "-subj", f"/CN={name}"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.server_key, "-out", csr, "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial", "-out",
             self.server_cert, "-days", "2", "-extfile", ext],
        ):
            subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)
        self.server_key.chmod(0o644)  # redis-server reads it


#: The roles of the ACL recipe (README, "Redis ACL users"): the user name and the
#: placeholder of its password's SHA-256.
ROLES = {"publisher": "l2fast-publisher", "worker": "l2fast-worker", "l1": "l2fast-l1",
         "dashboard": "l2fast-dashboard"}


def readme_acl() -> list[str]:
    """The ACL file of the README's recipe (its ```acl block), line by line."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"```acl\n(.*?)```", text, re.S)
    assert found, "README.md has no ```acl block (the ACL recipe)"
    return [line for line in found.group(1).splitlines() if line.strip()]


def acl_file(lines: list[str], prefix: str, passwords: dict[str, str]) -> list[str]:
    """``lines`` with each role's password hash and ``prefix`` before every key pattern."""
    out = []
    for line in lines:
        for role, password in passwords.items():
            line = line.replace(f"#<{role.upper()}_SHA256>", "#" + hashlib.sha256(password.encode()).hexdigest())
        assert "<" not in line, f"placeholder left in {line!r}"
        out.append(re.sub(r"(^|[\s(])(%R~|%W~|%RW~|~)", lambda m: m.group(1) + m.group(2) + prefix, line))
    return out
