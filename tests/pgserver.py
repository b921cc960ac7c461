"""A real PostgreSQL server for tests: a fresh cluster in a temporary folder, on a free port
of loopback, with password authentication, stopped (and removed) afterwards.

Debian's ``postgresql`` package provides the binaries; ``.ci/run`` installs it. PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgServer", "pg_bin"]

PASSWORD = "pg-test-secret-4711"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self) -> None:
        binaries = pg_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="ve-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "voice"
        self.password = PASSWORD
        self.database = "calls"
        self._as: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return (f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{self.database}")

    def _run(self, *args: str) -> None:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run([*self._as, *args], capture_output=True, timeout=60, env=env)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.decode().strip()}")

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        self.resume()
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", self.user, self.database)

    def resume(self) -> None:
        """Starts the server (again)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                  "-l", str(self.root / "log"), "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off",
                  "start")

    def pause(self) -> None:
        """Stops the server at once (its clients see the connection drop); data is kept."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "stop")

    def stop(self) -> None:
        try:
            self.pause()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
