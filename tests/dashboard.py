"""optuna-dashboard for the tests: started on a free loopback port, as a user starts it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(url: str, artifact_dir: Optional[Path] = None, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """optuna-dashboard serving `url` (and the artifacts in `artifact_dir`) on a free loopback
    port, and its base URL. The port is free when picked and may be taken before the server
    binds it: then the server exits and another is tried."""
    command = Path(sys.executable).parent / "optuna-dashboard"  # the console script beside this Python
    extra = ["--artifact-dir", str(artifact_dir)] if artifact_dir is not None else []
    for _ in range(attempts):
        port = free_port()
        server = subprocess.Popen([str(command), url, "--host", "127.0.0.1", "--port", str(port), *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while server.poll() is None:
            try:
                if requests.get(f"{base}/api/studies", timeout=2).ok:
                    return server, base
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                server.terminate()
                raise AssertionError("optuna-dashboard did not answer within 60 s")
            time.sleep(0.2)
    raise AssertionError(f"optuna-dashboard did not start on {attempts} free ports")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)
