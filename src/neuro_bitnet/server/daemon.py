"""Running the server in the background: pid files, start with --detach, status and stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from neuro_bitnet.errors import DaemonError

STATE_DIR_NAME = "neuro-bitnet"


def state_dir() -> Path:
    """Where the default pid and log files live."""
    from platformdirs import user_state_dir

    return Path(user_state_dir(STATE_DIR_NAME))


def default_pid_file() -> Path:
    return state_dir() / "daemon.pid"


def default_log_file(pid_file: Path) -> Path:
    return pid_file.with_suffix(".log")


def _info_file(pid_file: Path) -> Path:
    return pid_file.with_name(pid_file.name + ".json")


@dataclass
class DaemonRecord:
    """What a running daemon wrote about itself."""

    pid: int
    url: str | None = None
    model: str | None = None
    started: float | None = None


def write_pid_file(pid_file: Path, url: str, model: str) -> None:
    """Record this process (pid file: just the pid; ``<pid file>.json``: url, model, start)."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "url": url, "model": model, "started": time.time()}
    _atomic_write(_info_file(pid_file), json.dumps(info))
    _atomic_write(pid_file, f"{os.getpid()}\n")


def remove_pid_file(pid_file: Path) -> None:
    """Remove the pid file if it still names this process."""
    record = read_pid_file(pid_file)
    if record is not None and record.pid != os.getpid():
        return
    for path in (pid_file, _info_file(pid_file)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def read_pid_file(pid_file: Path) -> DaemonRecord | None:
    """The record in ``pid_file``, or None if there is none or it is unreadable."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    record = DaemonRecord(pid=pid)
    try:
        info = json.loads(_info_file(pid_file).read_text())
        if info.get("pid") == pid:
            record.url, record.model, record.started = info.get("url"), info.get("model"), info.get("started")
    except (OSError, ValueError, AttributeError):
        pass
    return record


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (and, on Linux, looks like a neuro server)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return True
        if "zombie" in _proc_state(pid):
            return False
        return "neuro" in text
    return True


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        pass
    return ""


def running_record(pid_file: Path) -> DaemonRecord | None:
    """The record of a live daemon in ``pid_file``; stale files are removed."""
    record = read_pid_file(pid_file)
    if record is None:
        return None
    if not is_alive(record.pid):
        for path in (pid_file, _info_file(pid_file)):
            path.unlink(missing_ok=True)
        return None
    return record


def start_detached(command: list[str], pid_file: Path, log_file: Path, env: dict[str, str],
                   timeout: float = 300.0) -> DaemonRecord:
    """Start the daemon's ``command`` line (the caller's foreground `neuro serve`) in its own
    session; wait until it serves."""
    from neuro_bitnet.backends.daemon_client import API_KEY_ENV, is_running

    existing = running_record(pid_file)
    if existing is not None:
        raise DaemonError(f"a daemon is already running (pid {existing.pid}, {existing.url or 'url unknown'}); "
                          f"stop it with `neuro daemon stop`")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            command,
            stdin=devnull, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    api_key = env.get(API_KEY_ENV)
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise DaemonError(f"the daemon exited with status {code} while starting; see {log_file}:\n"
                              + _tail(log_file))
        record = read_pid_file(pid_file)
        if record is not None and record.pid == proc.pid and record.url and is_running(record.url, api_key=api_key):
            return record
        time.sleep(0.1)
    proc.terminate()
    raise DaemonError(f"the daemon did not answer within {timeout:.0f}s; see {log_file}")


def find_by_url(url: str, api_key: str | None = None) -> DaemonRecord | None:
    """The daemon answering at ``url`` (a foreground ``neuro serve`` has no pid file).

    None if nothing answers there; a DaemonError if something answers but cannot be stopped
    from here (refused key, no pid reported, not a process of this machine).
    """
    import httpx

    from neuro_bitnet.backends.daemon_client import API_KEY_ENV, bearer_headers
    from neuro_bitnet.server.config import is_loopback

    try:
        response = httpx.get(f"{url.rstrip('/')}/health", headers=bearer_headers(api_key), timeout=10.0)
    except httpx.HTTPError:
        return None
    if response.status_code == 401:
        raise DaemonError(f"a daemon answers at {url} but refuses the API key; set {API_KEY_ENV} or pass --api-key")
    try:
        health = response.json()
        pid = int(health["pid"])
    except (ValueError, KeyError, TypeError):
        raise DaemonError(f"the server at {url} answered {response.status_code} without a neuro daemon's pid; "
                          "stop it where it runs") from None
    if not is_loopback(httpx.URL(url).host):
        raise DaemonError(f"the daemon at {url} runs on another machine (pid {pid} there); stop it there")
    if not is_alive(pid):
        raise DaemonError(f"the daemon at {url} reports pid {pid}, which is no neuro process of this machine "
                          "(a container or another user?); stop it where it runs")
    return DaemonRecord(pid=pid, url=url, model=health.get("model"))


def stop(record: DaemonRecord, pid_file: Path | None = None, timeout: float = 60.0,
         force: bool = False) -> DaemonRecord:
    """SIGTERM the daemon of ``record`` and wait for it to exit; SIGKILL after ``timeout`` if ``force``."""
    try:
        os.kill(record.pid, signal.SIGTERM)
    except PermissionError:
        raise DaemonError(f"not allowed to stop the daemon (pid {record.pid}): it belongs to another user") from None
    except ProcessLookupError:
        return record
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(record.pid):
            _cleanup(pid_file, record.pid)
            return record
        time.sleep(0.1)
    if not force:
        raise DaemonError(f"the daemon (pid {record.pid}) is still finishing after {timeout:.0f}s; "
                          "use --force to kill it")
    os.kill(record.pid, signal.SIGKILL)
    time.sleep(0.2)
    _cleanup(pid_file, record.pid)
    return record


def _cleanup(pid_file: Path | None, pid: int) -> None:
    if pid_file is None:
        return
    record = read_pid_file(pid_file)
    if record is not None and record.pid == pid:
        for path in (pid_file, _info_file(pid_file)):
            path.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
