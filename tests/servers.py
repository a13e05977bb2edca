"""Real MongoDB wire-protocol servers for tests and benchmarks (needs ``jobshelf[test]``).

- ``JOBSHELF_MONGODB_URI`` set: that server (a real mongod) is used and nothing is started.
- otherwise SecantusDB (WiredTiger storage) runs in-process on a free port;
- NX-27017 (SQLite) runs as a subprocess on a free port for the compatibility run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

URI_ENV = "JOBSHELF_MONGODB_URI"


@contextlib.contextmanager
def secantus_server() -> Iterator[str]:
    """Yield the URI of a fresh SecantusDB server; stop it and delete its data afterwards."""
    from secantus import SecantusDBServer

    storage = tempfile.mkdtemp(prefix="jobshelf-secantus-")
    server = SecantusDBServer(port=0, storage_path=storage)
    server.start()
    try:
        yield str(server.uri)
    finally:
        server.stop()
        shutil.rmtree(storage, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nx_server(timeout: float = 20.0) -> Iterator[str]:
    """Yield the URI of an NX-27017 server started as a subprocess (in-memory SQLite)."""
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jobshelf-nx-"))
    executable = Path(sys.executable).with_name("nx-27017")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "nx_27017"]
    command += [
        "--db", "memory", "-p", str(port),
        "--pid-file", str(workdir / "nx.pid"), "--log-file", str(workdir / "nx.log"),
    ]  # fmt: skip
    log = open(workdir / "stdout.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nx-27017 exited with {process.returncode}: "
                    f"{(workdir / 'stdout.log').read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nx-27017 did not listen on port {port} within {timeout}s")
            time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def mongodb_uri() -> Iterator[str]:
    """Yield ``JOBSHELF_MONGODB_URI`` when set, else a SecantusDB server's URI."""
    uri = os.environ.get(URI_ENV)
    if uri:
        yield uri
        return
    with secantus_server() as started:
        yield started
