"""A throwaway PostgreSQL server for the tests that need a real one.

`postgres_server` (one per test session, so one per xdist worker) runs Debian's
`postgresql` server programs in a temporary directory, listening only on a unix
socket there, trust auth, fsync off; `postgres_url` gives each test a database of
its own on it. PostgreSQL refuses to run as root, so as root (CI, this machine) the
server's programs run as the `postgres` system user that the package creates.

Test modules use it with `pytest_plugins = ["_postgres"]`. Without the server
programs the tests fail (not skip): CI installs the package before it runs them.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = ("PostgreSQL's server programs (initdb, pg_ctl) were not found in "
           "/usr/lib/postgresql/*/bin or on PATH: install Debian's postgresql package "
           "(apt-get install postgresql)")

_databases = itertools.count()


def _bindir() -> Path | None:
    """The newest installed version's programs, else those on PATH."""
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0)
    if installed:
        return installed[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running server: the directory of its unix socket (port 5432)."""
    bindir = _bindir()
    if bindir is None:
        pytest.fail(INSTALL)
    user: str | None = None
    # /tmp, and a short name: a unix socket's path is limited to 107 bytes
    base = Path(tempfile.mkdtemp(prefix="cbpg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.fail("PostgreSQL refuses to run as root and there is no postgres user: "
                        + INSTALL)
        user = "postgres"
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"

    def run(*args: str | Path, timeout: float = 120) -> None:
        done = subprocess.run([str(a) for a in args], user=user, cwd=base, timeout=timeout,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = base / "server.log"
            pytest.fail(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}"
                        + (log.read_text(errors="replace") if log.is_file() else ""))

    run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-locale",
        "-E", "UTF8", "--no-sync")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = ''\nunix_socket_directories = '{base}'\n"
                   "port = 5432\nfsync = off\nsynchronous_commit = off\n")
    try:
        run(bindir / "pg_ctl", "-D", data, "-l", base / "server.log", "-w", "-t", "60", "start",
            timeout=90)
        yield str(base)
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       user=user, cwd=base, timeout=60, capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the session's server: its `postgresql://` URL."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_databases)}"
    server = f"postgresql://postgres@/postgres?host={postgres_server}&port=5432"
    with psycopg.connect(server, autocommit=True, connect_timeout=30) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return f"postgresql://postgres@/{name}?host={postgres_server}&port=5432"
