"""A real PostgreSQL server as a local child process: a *private* cluster (own data folder,
own port, own socket folder) run by the Debian package's server programs; the system cluster is
never used. Also: creating the project's database and role.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import asyncpg

from infra.devstack.service import (
    DEFAULT_DATABASE,
    DEFAULT_POSTGRES_PORT,
    LOCALHOST,
    POSTGRES_SUPERUSER,
    Service,
    ServiceError,
    as_user,
)
from studentperf.persistence import cluster


def find_postgres_bindir() -> Path:
    """The folder with ``initdb``/``postgres``: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/*/bin`` (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in path.parent.name.split("."))
        except ValueError:
            return (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise ServiceError("PostgreSQL server programs not found: run `bash infra/setup.sh`")


class PostgresServer(Service):
    """A private PostgreSQL cluster: own data folder, port and socket folder.

    State folder layout: ``data/`` (PGDATA, owned by the ``postgres`` user when we are root),
    ``run/`` (the Unix socket) and ``postgres.out`` (the server log). Authentication is ``trust``
    and the server only listens on 127.0.0.1.
    """

    name = "postgres"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        host: str = LOCALHOST,
        port: int = DEFAULT_POSTGRES_PORT,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, host=host, port=port)
        self._bindir = bindir
        self.settings = dict(settings or {})
        # initdb/postgres refuse to run as root: run them as the package's postgres user.
        self.run_as: str | None = POSTGRES_SUPERUSER if os.geteuid() == 0 else None

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        return self._bindir

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def log_files(self) -> list[Path]:
        return []  # the server logs to stderr, i.e. postgres.out

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    def dsn(self, dbname: str = DEFAULT_DATABASE, user: str = POSTGRES_SUPERUSER) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def describe(self) -> str:
        return f"postgres on {self.host}:{self.port} ({self.dsn()})"

    def _prepare_dirs(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            _make_traversable(self.state_dir)
            for folder in (self.data_dir, self.socket_dir):
                st = folder.stat()
                if st.st_uid != entry.pw_uid:
                    os.chown(folder, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def initdb(self) -> None:
        """Create the cluster (only when the data folder is not initialized yet)."""
        if self.initialized:
            return
        cmd = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            POSTGRES_SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
        ]
        result = subprocess.run(
            as_user(self.run_as, cmd),
            cwd=self.state_dir,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def start(self) -> None:
        self._prepare_dirs()
        self.initdb()
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "on",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] ",
            **self.settings,
        }
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        self._launch(cmd, user=self.run_as)

    async def _probe(self) -> bool:
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=3)
        try:
            return bool(await conn.fetchval(cluster.PROBE) == 1)
        finally:
            await conn.close()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (like a crash of the whole server).

        The backends are killed too, otherwise the next start refuses to run while they still
        hold the old shared memory.
        """
        pid = self.pid
        children: list[int] = []
        if pid is not None and self.running:
            # Freeze the postmaster first so it neither forks nor restarts children meanwhile.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            children = _child_pids(pid)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        super().kill()
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.02)

    async def ensure_database(self, name: str = DEFAULT_DATABASE, owner: str | None = None) -> bool:
        """Create database ``name`` (and role ``owner``, when given) if missing.

        Returns True when the database was created by this call.
        """
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=10)
        try:
            if owner is not None:
                exists = await conn.fetchval(cluster.ROLE_EXISTS, owner)
                if not exists:
                    with contextlib.suppress(asyncpg.DuplicateObjectError):
                        await conn.execute(cluster.create_login_role(owner))
            if await conn.fetchval(cluster.DATABASE_EXISTS, name):
                return False
            try:
                await conn.execute(cluster.create_database(name, owner))
            except asyncpg.DuplicateDatabaseError:
                return False
            return True
        finally:
            await conn.close()


def _child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:"):
                if int(line.split()[1]) == pid:
                    children.append(int(entry.name))
                break
    return children


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (orphans may wait a while to be reaped)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] not in ("Z", "X")


def _make_traversable(path: Path) -> None:
    """Give "others" search (x) permission on every ancestor of ``path`` that lacks it.

    The server runs as the ``postgres`` user and must reach its data folder; pytest's temporary
    folders (``/tmp/pytest-of-root``) are 0700. Only the x bit is added: nobody can list them.
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
