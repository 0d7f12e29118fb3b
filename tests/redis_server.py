"""A real redis-server for the tests of remote workers, started by the tests
themselves so they pass on any machine that has the `redis-server` binary
(Debian's redis-server package; CI uses the machine's). Each test gets its own
server on a free port, keeping nothing on disk, which it can stop and start
again on the same port (the "Redis restarted mid-run" test). Without the
binary, those tests fail with a message that says to install it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether a Redis answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """`redis-server` on 127.0.0.1:port, in `workdir`, with no persistence."""

    def __init__(self, workdir: Path, port: int | None = None, *, extra: list[str] = ()):
        self.binary = shutil.which("redis-server")
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra = list(extra)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--loglevel", "warning", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop it the hard way (SIGKILL): what a crash or a lost host does."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self, down_s: float = 0.5) -> None:
        """Stop it, wait `down_s`, and start a fresh, empty one on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def command(self, *args: str) -> str:
        """One command through redis-cli (ACL set-up in tests)."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip()
