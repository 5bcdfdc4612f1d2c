"""What every benchmark's JSON says about how it was made: the command, the date, the machine.

A number quoted in the README is only as good as the file behind it; these fields let a reader
rerun the exact command and see whether the machine was like theirs.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys


def provenance(script: str, argv: list[str] | None = None) -> dict:
    """The command that ran (`python script ARGS`, ARGS from `argv`, else the command line's;
    quoted for a shell), the UTC time, and the machine."""
    args = [script, *(sys.argv[1:] if argv is None else argv)]
    try:
        load = os.getloadavg()
    except OSError:  # not on every platform
        load = None
    return {
        "command": " ".join(shlex.quote(a) for a in ["python", *args]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": _torch_version(), "load_average_at_start": load},
    }


def _torch_version():
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__
