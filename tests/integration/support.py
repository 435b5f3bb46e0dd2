"""Helpers for the integration tests: real proxy processes, TLS fake servers, CLI runs, figures.

Everything listens on 127.0.0.1 only; every process started here is stopped by the test that
started it (context managers / tearDownClass), by its own pid.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CERTS = os.path.join(REPO, "tests", "certs")
CA = os.path.join(CERTS, "ca.pem")
CORPUS = os.path.normpath(os.path.join(REPO, "..", "shared", "wire-corpus"))

if REPO not in sys.path:
    sys.path.insert(0, REPO)

# -- figures: what was tried, printed by run.py and quoted in README's RELIABILITY section ----
_FIG_LOCK = threading.Lock()
FIGURES: dict = {}


def figure(name: str, add: int = 1) -> None:
    """Add ``add`` to the counter ``name``."""
    with _FIG_LOCK:
        FIGURES[name] = FIGURES.get(name, 0) + add


def set_figure(name: str, value: object) -> None:
    with _FIG_LOCK:
        FIGURES[name] = value


# -- small utilities ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %.0fs" % (port, timeout))


def server_tls_context(name: str = "server") -> ssl.SSLContext:
    """A server-side context with tests/certs/<name>.pem / .key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(CERTS, name + ".pem"), os.path.join(CERTS, name + ".key"))
    return ctx


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class TempDir:
    def __init__(self, prefix: str = "openai2-integ-") -> None:
        self.path = tempfile.mkdtemp(prefix=prefix)

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- real proxy processes ---------------------------------------------------------------------

class _Process:
    """A child process we started; stop() ends exactly it (by pid), then waits."""

    proc: subprocess.Popen

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Tinyproxy(_Process):
    """``tinyproxy -d -c conf`` on 127.0.0.1:<free port>, logging at Info to a file.

    :param allow: the client address tinyproxy accepts (anything else gets 403)
    :param connect_ports: ports CONNECT may reach (tinyproxy refuses others)
    """

    def __init__(self, tmp: str, *, allow: str = "127.0.0.1", connect_ports=()) -> None:
        self.port = free_port()
        self.log = os.path.join(tmp, "tinyproxy-%d.log" % self.port)
        conf = os.path.join(tmp, "tinyproxy-%d.conf" % self.port)
        lines = [
            "Port %d" % self.port,
            "Listen 127.0.0.1",
            "Timeout 60",
            "LogFile \"%s\"" % self.log,
            "LogLevel Info",
            "MaxClients 64",
            "Allow %s" % allow,
        ] + ["ConnectPort %d" % p for p in connect_ports]
        with open(conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.stdout = open(os.path.join(tmp, "tinyproxy-%d.out" % self.port), "wb")
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", conf], stdout=self.stdout, stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.url = "http://127.0.0.1:%d" % self.port

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        super().stop()
        self.stdout.close()


class Microsocks(_Process):
    """``microsocks -i 127.0.0.1 -p PORT [-u USER -P PASS]``; its output goes to a file."""

    def __init__(self, tmp: str, *, user: str | None = None, password: str | None = None) -> None:
        self.port = free_port()
        self.out_path = os.path.join(tmp, "microsocks-%d.out" % self.port)
        self.out = open(self.out_path, "wb")
        cmd = ["microsocks", "-i", "127.0.0.1", "-p", str(self.port)]
        if user is not None:
            cmd += ["-u", user, "-P", password or ""]
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT)
        wait_port(self.port)
        auth = "%s:%s@" % (user, password) if user is not None else ""
        self.url = "socks5://%s127.0.0.1:%d" % (auth, self.port)
        self.url_h = "socks5h://%s127.0.0.1:%d" % (auth, self.port)

    def log_text(self) -> str:
        self.out.flush()
        with open(self.out_path, errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        super().stop()
        self.out.close()


# -- the CLI as a subprocess ----------------------------------------------------------------

def cli_env(home: str, **extra: str) -> dict:
    """The environment for ``python -m openai2``: this repo first on the path, a private
    OPENAI2_HOME, no proxies or keys inherited from the caller."""
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "OPENAI_API_KEY",
                                "OPENAI_BASE_URL", "OPENAI2_HOME", "OPENAI2_DEBUG")}
    env["PYTHONPATH"] = REPO
    env["OPENAI2_HOME"] = home
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def cli_cmd(*args: str) -> list:
    return [sys.executable, "-m", "openai2"] + list(args)


def run_cli(home: str, *args: str, env_extra: dict | None = None, timeout: float = 60.0,
            stdin: str | None = None, prefix: list | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    env = cli_env(home, **(env_extra or {}))
    return subprocess.run((prefix or []) + cli_cmd(*args), env=env, cwd=REPO, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def read_json(path: str):
    with open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))


# -- strace fault injection (a real failed or killed rename, no monkeypatching) -----------------

_RENAMES = "rename,renameat,renameat2"


def strace_usable() -> str | None:
    """None if strace can trace children here, else why not."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    try:
        r = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "strace failed: %s" % exc
    if r.returncode != 0:
        return "strace cannot trace here (ptrace not permitted?): %s" % r.stderr.decode(errors="replace")[:200]
    return None


def strace_prefix(action: str) -> list:
    """Prefix a command so every rename(2) in it fails (``error=EIO``) or kills it (``signal=KILL``)."""
    return ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + _RENAMES, "-e",
            "inject=%s:%s" % (_RENAMES, action)]
