"""Child processes of ``iris-scorer demo`` (the embedded broker, the worker and the REST service).

Each child runs in its own session, so a Ctrl-C in the terminal reaches the demo only, which stops
the children in reverse order; a service is waited for until it logs the port it bound.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ml.errors import IrisError

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServiceExited(IrisError):
    """A child service exited during start-up."""


def cli_command() -> list[str]:
    return [sys.executable, "-m", "iris_scorer.cli"]


@dataclass
class Children:
    """Child processes started by the demo; stopped in reverse order, whatever happens."""

    logs: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, command: list[str], env: dict[str, str], *, to_log: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start a child and remember it before any interrupt can land (a Ctrl-C between the fork
        and ``Popen`` returning would otherwise leave an orphan that nothing stops). Its own
        session: a Ctrl-C in the terminal reaches the demo only, which then stops the children in
        order, instead of each dying on its own and the others reporting that as an error."""
        received: list[int] = []
        deferred = {sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in _STOP_SIGNALS}
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(self.log_path(name).open("wb")) if to_log else None
                proc = subprocess.Popen(
                    command,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT if to_log else None,
                    start_new_session=True,
                )
            self.procs.append((name, proc))
        finally:
            for sig, handler in deferred.items():
                signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt
        return proc

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name.lower().replace(' ', '-')}.log"

    def forget(self, name: str) -> None:
        """Drop a child that has already exited (a failed start)."""
        self.procs = [(n, p) for n, p in self.procs if not (n == name and p.poll() is not None)]

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"demo: {name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def start_service(
    children: Children,
    name: str,
    command: list[str],
    *,
    env: dict[str, str],
    address: re.Pattern[str],
    timeout_s: float = 90.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``command`` and wait for the log line (``address``) that gives the port it bound.
    Raises :class:`ServiceExited` if it exits first, naming its log file."""
    log = children.log_path(name)
    proc = children.start(name, command, env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = address.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return proc, int(found[1])
        if proc.poll() is not None:
            raise ServiceExited(f"the {name} exited with code {proc.returncode} during start-up (see {log}).")
        time.sleep(0.1)
    raise IrisError(f"the {name} did not start within {timeout_s:.0f} s (see {log}).")


def start_on_port(
    children: Children,
    name: str,
    args: list[str],
    port_flag: str,
    preferred: int,
    env: dict[str, str],
    address: re.Pattern[str],
) -> tuple[subprocess.Popen[bytes], int]:
    """The service binds ``preferred`` itself (no look-then-bind race); if it cannot, for
    whatever reason, it is started once more on a port the system picks (``0``)."""
    try:
        return start_service(
            children, name, [*cli_command(), *args, port_flag, str(preferred)], env=env, address=address
        )
    except ServiceExited as first:
        children.forget(name)
        print(
            f"demo: {name} could not start on port {preferred} ({first.message}); using a free port",
            flush=True,
        )
    return start_service(children, name, [*cli_command(), *args, port_flag, "0"], env=env, address=address)


def wait_http(url: str, proc: subprocess.Popen[bytes], name: str, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise IrisError(f"the {name} exited with code {proc.returncode} during start-up (see {log}).")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise IrisError(f"the {name} was not ready at {url} after {timeout_s:.0f} s (see {log}).")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the demo for as long as it runs, also when it
    was started with SIGINT ignored (as a shell does for a background job)."""
    previous = {
        sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
