"""Real MongoDB wire-protocol servers for tests and benchmarks (needs ``jobshelf[test]``).

- ``JOBSHELF_MONGODB_URI`` set: that server (a real mongod) is used and nothing is started.
- otherwise SecantusDB (WiredTiger storage) runs in-process on a free port, or, for the tests
  that run real scheduler processes (``tests/processes``), a fresh one per test in a process of
  its own;
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
def _server_process(name: str, command: list[str], port: int, workdir: Path, timeout: float) -> Iterator[str]:
    """Run a server command in a process of its own; yield its URI once it listens on ``port``;
    stop it and delete ``workdir`` afterwards. Its output goes to ``workdir/stdout.log`` (quoted
    when it exits early)."""
    log = open(workdir / "stdout.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}: "
                    f"{(workdir / 'stdout.log').read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s")
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
    with _server_process("nx-27017", command, port, workdir, timeout) as uri:
        yield uri


@contextlib.contextmanager
def secantus_process(timeout: float = 30.0) -> Iterator[str]:
    """Yield the URI of a fresh SecantusDB server in a process of its own (its ``python -m
    secantus`` command line; on-disk storage, deleted afterwards): for tests whose timing must
    not depend on what the test process itself runs, nor on a server that served other tests."""
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="jobshelf-secantus-"))
    command = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
               "--storage-path", str(workdir / "data"), "--log-level", "WARNING"]  # fmt: skip
    with _server_process("SecantusDB", command, port, workdir, timeout) as uri:
        yield uri


@contextlib.contextmanager
def mongodb_uri(*, own_process: bool = False) -> Iterator[str]:
    """Yield ``JOBSHELF_MONGODB_URI`` when set, else a fresh SecantusDB server's URI: in this
    process, or with ``own_process`` in a process of its own."""
    uri = os.environ.get(URI_ENV)
    if uri:
        yield uri
        return
    with secantus_process() if own_process else secantus_server() as started:
        yield started
