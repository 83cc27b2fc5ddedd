"""The local Ray a driver started goes when the driver goes, however it goes (SIGKILL included).

``ray.init()`` starts the GCS, the raylet and their helpers as the driver's children; the raylet
starts workers and per-node agents. When the driver is killed, Ray's own fate sharing ends most of
them, but some agents outlive it (measured here: ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent``
still ran 30 s after a SIGKILL of the driver). :func:`start` launches this module as a small
watcher in a session of its own: every :data:`POLL_S` seconds it records the driver's
descendants, and once the driver has gone it sends each recorded process that still runs (the same
process: its start time is checked) SIGTERM, then SIGKILL after :data:`GRACE_S` seconds, and exits.

Run as ``python -m study.reaper DRIVER_PID``; only for a Ray the driver started itself (never for a
cluster joined with ``--address``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

__all__ = ["start", "main", "POLL_S", "GRACE_S"]

POLL_S = 0.5  # how often the driver's descendants are recorded
GRACE_S = 3.0  # between SIGTERM and SIGKILL


def start() -> subprocess.Popen:
    """Starts the watcher of this process (call right after ``ray.init()`` started a local Ray)."""
    return subprocess.Popen([sys.executable, "-m", "study.reaper", str(os.getpid())], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True)


def _descendants(driver, known: dict[int, float]) -> None:
    """Adds the driver's descendants, and those of every known process, to ``known`` (pid -> start time)."""
    import psutil

    roots = [driver] + [p for p in _alive(known)]
    for root in roots:
        try:
            for child in root.children(recursive=True):
                if child.pid != os.getpid():
                    known.setdefault(child.pid, child.create_time())
        except psutil.Error:
            continue


def _alive(known: dict[int, float]) -> list:
    """The recorded processes that still run (a reused pid with another start time is not one)."""
    import psutil

    alive = []
    for pid, created in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


def _runs(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list[str] | None = None) -> int:
    import psutil

    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver
    try:
        driver = psutil.Process(int(argv[0]))
    except (IndexError, ValueError, psutil.Error):
        return 2
    known: dict[int, float] = {}
    while _runs(driver):
        _descendants(driver, known)
        time.sleep(POLL_S)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = _alive(known)
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=GRACE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
