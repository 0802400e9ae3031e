"""`parallax-probe dashboard`: start Streamlit on the dashboard app, bound to loopback unless told otherwise.

The process is `python -m parallax_probe.dashboards.launch run ...`: Streamlit's `streamlit run`
after importing the app's modules (launch.py says why).

The security-relevant options are passed as command-line flags, which outrank config
files and STREAMLIT_* environment variables, so neither can quietly loosen them:
- bound to `host` (127.0.0.1 by default), with `server.allowedHosts` listing only the
  names that reach it (Streamlit checks the Host header of each WebSocket against it,
  which stops DNS-rebinding pages from driving the app);
- CORS and XSRF protection on, with no extra allowed origins;
- tracebacks kept in the server's log, not shown on the page (`client.showErrorDetails`);
- no usage statistics, headless (no browser opened on the server).
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

APP = Path(__file__).with_name("app.py")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str]:
    """Host names a browser may use to reach a server bound to `host`."""
    names = list(LOOPBACK_NAMES)
    if host in WILDCARD_HOSTS:
        # Bound to every interface: the machine's own names and addresses reach it.
        names += [socket.gethostname(), socket.getfqdn()]
        try:
            names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
        except OSError:
            pass
    elif not is_loopback(host):
        names.append(host)
    return list(dict.fromkeys(n for n in names if n))


def streamlit_command(runs_dir: Path, *, port: int, host: str) -> list[str]:
    flags = {
        "server.address": host,
        "server.port": str(port),
        "server.headless": "true",
        "server.enableCORS": "true",
        "server.enableXsrfProtection": "true",
        "server.fileWatcherType": "none",
        "browser.gatherUsageStats": "false",
        "client.showErrorDetails": "none",
        "client.toolbarMode": "viewer",
    }
    command = [sys.executable, "-m", "parallax_probe.dashboards.launch", "run"]  # streamlit run, modules imported first
    for name, value in flags.items():
        command.append(f"--{name}={value}")
    command += [f"--server.allowedHosts={name}" for name in allowed_hosts(host)]
    return command + [str(APP), "--", str(runs_dir)]


def url(host: str, port: int) -> str:
    name = socket.gethostname() if host in WILDCARD_HOSTS else host
    if ":" in name:
        name = f"[{name}]"
    return f"http://{name}:{port}/"


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for scripts and tests that start a dashboard)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotServing(RuntimeError):
    """The dashboard process exited, or did not answer its health check in time."""


def wait_until_serving(base_url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Return once Streamlit's health check at `base_url` answers "ok"; NotServing if `process`
    exits first or `timeout_s` passes (for scripts and tests that start a dashboard and drive it)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base_url + "_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        if process.poll() is not None:
            raise NotServing(f"the dashboard exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise NotServing(f"the dashboard did not answer within {timeout_s:.0f} s")
        time.sleep(0.3)


@contextlib.contextmanager
def serving(command_for_port: Callable[[int], list[str]], **popen_options) -> Iterator[str]:
    """Start `command_for_port(port)` (a dashboard or any Streamlit app) on a free local port, wait
    until it serves, and yield its base URL; the process is stopped when the block ends (for
    scripts and tests that drive one). NotServing if it never answers."""
    port = free_local_port()
    process = subprocess.Popen(command_for_port(port), **popen_options)
    base_url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(runs_dir: str, *, port: int, host: str) -> int:
    """Run the dashboard on `runs_dir` until interrupted; returns Streamlit's exit code (2: bad folder)."""
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        print(
            f"parallax-probe dashboard: error: {root} is not a folder. Give the folder that holds your run folders "
            "(e.g. runs, or runs/demo after `make demo`).",
            file=sys.stderr,
        )
        return 2
    root = root.resolve()
    print(f"parallax-probe dashboard: runs in {root}", flush=True)
    print(f"parallax-probe dashboard: open {url(host, port)}  (Ctrl+C stops it)", flush=True)
    if not is_loopback(host):
        print(
            f"parallax-probe dashboard: bound to {host}: anyone who can reach this machine on port {port} can read these runs. "
            f"Accepted host names: {', '.join(allowed_hosts(host))}.",
            flush=True,
        )
    process = subprocess.Popen(streamlit_command(root, port=port, host=host))

    def stop(signum, frame) -> None:
        process.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                # The terminal sent SIGINT to Streamlit too; make sure it stops, then wait for it.
                process.terminate()
    finally:
        signal.signal(signal.SIGTERM, previous)
