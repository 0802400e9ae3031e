"""Who writes a segment, and whether that writer still runs (docs/file-format.md, "Status").

A writer stamps its segments with its pid, host, boot id and process start time
(`writer_identity`). A reader on the same host checks the pid against /proc, so a reused pid
or a reboot is not mistaken for the writer; a reader on another host can only go by the
heartbeat, the time of the writer's last commit.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .format import STATUS_CLOSED, STATUS_CONTINUED

# A writer on another host cannot be checked by pid: it counts as live while its last
# commit (the heartbeat) is this recent. Logging steps come every few seconds to minutes.
LIVE_HEARTBEAT_S = 600.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': the fields after the last ')'
    # start with field 3 (state); field 22 (starttime) is the 20th of them.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]), fields[0]


def writer_identity() -> dict[str, Any]:
    """Root attributes that let a reader tell a live writer from a dead one (pid reuse too)."""
    start = _process_start(os.getpid())
    return {
        "writer_pid": os.getpid(),
        "writer_host": socket.gethostname(),
        "writer_boot_id": _boot_id(),
        "writer_start_ticks": start[0] if start else -1,
    }


def writer_alive(attrs: Mapping[str, Any]) -> bool | None:
    """True/False for a writer on this host; None when it ran on another host."""
    if attrs.get("writer_host") != socket.gethostname():
        return None
    boot = attrs.get("writer_boot_id") or ""
    if boot and _boot_id() and boot != _boot_id():
        return False  # the machine rebooted since
    pid = attrs.get("writer_pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    start = _process_start(pid)
    if start is not None:
        ticks, state = start
        expected = attrs.get("writer_start_ticks", -1)
        return state not in "ZX" and (expected < 0 or ticks == expected)
    if Path("/proc/self/stat").exists():
        return False  # /proc works and has no such pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_status(heartbeat: float, attrs: Mapping[str, Any]) -> str:
    """"live" or "crashed" for a segment its writer has not closed (see docs/file-format.md)."""
    alive = writer_alive(attrs)
    if alive is None:
        alive = time.time() - heartbeat < LIVE_HEARTBEAT_S
    return "live" if alive else "crashed"


def segment_status(status_code: int, heartbeat: float, attrs: Mapping[str, Any]) -> str:
    """"closed", "continued" (closed; its writer went on in the next segment), "live" or "crashed"."""
    if status_code == STATUS_CLOSED:
        return "closed"
    if status_code == STATUS_CONTINUED:
        return "continued"
    return writer_status(heartbeat, attrs)
