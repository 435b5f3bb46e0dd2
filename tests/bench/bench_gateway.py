"""Benchmark of ``openai2 serve`` (the gateway) against a direct request and LiteLLM's proxy.

    .venv-bench/bin/python tests/bench/bench_gateway.py [--requests N] [--no-litellm]

Three targets answer the same requests from tests/bench/server.py (the fast loopback server, in
its own process): the bench server itself (``direct``), the gateway (``python -m openai2 serve``
from this repository, in its own process) and LiteLLM's proxy (``litellm[proxy]`` from the
git-ignored .venv-litellm, made by tests/integration/litellm_venv.sh, started as
tests/integration/litellm_support.py starts it: 127.0.0.1, no database, no telemetry, the
bundled cost map).  One client, the same for every column, measures: a plain ``http.client``
keep-alive connection in this process, so the figures are the servers' and not a client
library's.

Figures: latency of a non-streaming request (median, p99) and what each proxy adds to the
direct one; chunks per second of one long stream (20,000 chunks); 100 concurrent streams (200
chunks each; wall time, every one checked complete); start-up (process start to the first 200
from its health URL; the gateway's median of 5 starts with its .pyc files cached, as an installed
package has them); resident memory (the process and its children) idle and after the load.
The issue's targets: added latency <= 1/5 of LiteLLM's, start-up <= 1/10, RSS <= 1/4, stream
throughput >= 2x.  Nothing here is a test: no time is asserted.  ``main(argv)`` returns 0 and
can be called from tests/bench/run.py; ``measure(...)`` returns the raw figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PY = sys.executable
BENCH_KEY = "sk-bench-gateway-0000000000000000"
SHORT_CHUNKS = 200
LONG_CHUNKS = 20000
BODY = {"messages": [{"role": "user", "content": "Hello"}]}
#: the issue's targets: (figure, gateway/LiteLLM ratio bound, "<=" or ">=")
TARGETS = {
    "added latency (median)": (0.2, "<="),
    "start-up": (0.1, "<="),
    "RSS after load": (0.25, "<="),
    "stream chunks/s": (2.0, ">="),
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in KiB (Linux /proc)."""
    children: dict = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open("/proc/%d/status" % p) as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def _wait_ok(host: str, port: int, path: str, deadline: float, proc: subprocess.Popen, step: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the process exited (status %s) before answering %s" % (proc.returncode, path))
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            try:
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("no answer from %s within the start-up limit" % path)
        time.sleep(step)


class Target:
    """One server to measure: where it listens, which path/model gives a short or a long stream."""

    def __init__(self, name: str, port: int, short: tuple, long: tuple, headers: dict, pids: list) -> None:
        self.name = name
        self.host = "127.0.0.1"
        self.port = port
        self.short = short  # (path, model)
        self.long = long
        self.headers = dict(headers, **{"Content-Type": "application/json"})
        self.pids = pids  # processes whose memory is counted

    def body(self, model: str, stream: bool) -> bytes:
        return json.dumps(dict(BODY, model=model, stream=stream)).encode()

    def rss_mib(self) -> float | None:
        return sum(_rss_kib(p) for p in self.pids) / 1024.0 if self.pids else None


def _request(conn: http.client.HTTPConnection, target: Target, where: tuple, stream: bool) -> tuple:
    """One request on a keep-alive connection: (status, chunks counted, ended with [DONE], bytes)."""
    path, model = where
    conn.request("POST", path, body=target.body(model, stream), headers=target.headers)
    resp = conn.getresponse()
    if not stream:
        data = resp.read()
        return resp.status, 0, False, len(data)
    pieces = []
    while True:
        piece = resp.read1(65536)
        if not piece:
            break
        pieces.append(piece)
    data = b"".join(pieces)
    return resp.status, data.count(b"data: ") - data.count(b"data: [DONE]"), b"data: [DONE]" in data, len(data)


def _latencies(target: Target, n: int, warmup: int) -> list:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=120)
    try:
        for _ in range(warmup):
            _request(conn, target, target.short, False)
        out = []
        for _ in range(n):
            start = time.perf_counter()
            status, _, _, _ = _request(conn, target, target.short, False)
            out.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError("%s answered %d" % (target.name, status))
        return out
    finally:
        conn.close()


def _stream_rate(target: Target, runs: int) -> tuple:
    """(chunks per second, chunks per stream): the median of ``runs`` long streams."""
    rates, counts = [], []
    conn = http.client.HTTPConnection(target.host, target.port, timeout=300)
    try:
        _request(conn, target, target.short, True)  # warm up
        for _ in range(runs):
            start = time.perf_counter()
            status, count, done, _ = _request(conn, target, target.long, True)
            elapsed = time.perf_counter() - start
            if status != 200 or not done:
                raise RuntimeError("%s: long stream status %d, complete %s" % (target.name, status, done))
            rates.append(count / elapsed)
            counts.append(count)
    finally:
        conn.close()
    return statistics.median(rates), statistics.median(counts)


def _concurrent(target: Target, n: int) -> tuple:
    """n streams at once, each on its own connection: (wall seconds, complete streams, chunks)."""
    barrier = threading.Barrier(n + 1)
    results: list = []
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=300)
        try:
            barrier.wait()
            status, count, done, _ = _request(conn, target, target.short, True)
        except Exception as exc:  # noqa: BLE001 - counted as incomplete
            status, count, done = repr(exc), 0, False
        finally:
            conn.close()
        with lock:
            results.append((status, count, done))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    complete = sum(1 for status, count, done in results if status == 200 and done and count >= SHORT_CHUNKS)
    return wall, complete, sum(r[1] for r in results)


class _Procs:
    """The processes this benchmark starts, each stopped by its own pid (group) at the end."""

    def __init__(self) -> None:
        self.items: list = []

    def add(self, proc: subprocess.Popen, group: bool) -> subprocess.Popen:
        self.items.append((proc, group))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        for i, (p, group) in enumerate(self.items):
            if p is proc:
                del self.items[i]
                _stop(p, group)
                return

    def stop_all(self) -> None:
        while self.items:
            proc, group = self.items.pop()
            _stop(proc, group)


def _stop(proc: subprocess.Popen, group: bool) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _start_bench_server(procs: _Procs) -> int:
    proc = procs.add(
        subprocess.Popen(
            [PY, os.path.join(HERE, "server.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ),
        False,
    )
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        raise RuntimeError("bench server did not start: %r" % line)
    return int(line.split()[1])


def _start_gateway(procs: _Procs, upstream: str, home: str) -> tuple:
    """``python -m openai2 serve`` in front of ``upstream``: (process, port, seconds to its first /health)."""
    port = _free_port()
    drop = ("PYTHONDONTWRITEBYTECODE",)
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith("OPENAI") and k not in drop}
    # compiled modules cached as an installed package has them (LiteLLM's venv has its .pyc files),
    # outside the repository
    env.update(OPENAI_API_KEY=BENCH_KEY, OPENAI2_HOME=home, OPENAI2_LOG="0",
               PYTHONPYCACHEPREFIX=os.path.join(home, "pycache"))
    started = time.monotonic()
    proc = procs.add(
        subprocess.Popen(
            [PY, "-m", "openai2", "serve", "--port", str(port), "--base-url", upstream, "--quiet"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ),
        False,
    )
    try:
        _wait_ok("127.0.0.1", port, "/health", started + 60, proc, 0.002)
    except RuntimeError:
        err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
        raise RuntimeError("the gateway did not start: %s" % err.strip()[-500:]) from None
    return proc, port, time.monotonic() - started


def _start_litellm(procs: _Procs, root: str, tmp: str) -> tuple:
    """LiteLLM's proxy with two models (short and long streams): (proxy, seconds to liveliness)."""
    from tests.integration.litellm_support import LiteLLMProxy, upstream_model

    models = [
        upstream_model("bench-short", root + "/n%d/v1" % SHORT_CHUNKS, BENCH_KEY),
        upstream_model("bench-long", root + "/n%d/v1" % LONG_CHUNKS, BENCH_KEY),
    ]
    proxy = LiteLLMProxy(tmp, models, keys=None)
    started = time.monotonic()
    proxy.launch()
    procs.add(proxy.proc, True)
    _wait_ok("127.0.0.1", proxy.port, "/health/liveliness", started + 300, proxy.proc, 0.05)
    return proxy, time.monotonic() - started


def measure(requests: int = 300, warmup: int = 30, runs: int = 3, concurrent: int = 100,
            litellm: bool = True, startups: int = 5, log=print) -> dict:
    """Run every figure; :returns: {target name: {figure: value}} plus "info"."""
    from tests.integration.litellm_support import litellm_missing, litellm_version

    procs = _Procs()
    tmp = tempfile.mkdtemp(prefix="openai2-bench-gw-")
    figures: dict = {"info": {}}
    try:
        port = _start_bench_server(procs)
        root = "http://127.0.0.1:%d" % port
        targets = [Target("direct", port, ("/n%d/v1/chat/completions" % SHORT_CHUNKS, "bench-model"),
                          ("/n%d/v1/chat/completions" % LONG_CHUNKS, "bench-model"), {}, [])]

        log("starting the gateway (%d times for the start-up figure, after one to fill the .pyc cache)" % startups)
        procs.stop(_start_gateway(procs, root + "/n%d/v1" % SHORT_CHUNKS, tmp)[0])
        times = []
        for _ in range(max(0, startups - 1)):
            proc, _, seconds = _start_gateway(procs, root + "/n%d/v1" % SHORT_CHUNKS, tmp)
            times.append(seconds)
            procs.stop(proc)
        short_gw, short_port, seconds = _start_gateway(procs, root + "/n%d/v1" % SHORT_CHUNKS, tmp)
        times.append(seconds)
        long_gw, long_port, _ = _start_gateway(procs, root + "/n%d/v1" % LONG_CHUNKS, tmp)
        gateway = Target("gateway", short_port, ("/v1/chat/completions", "bench-model"),
                         ("/v1/chat/completions", "bench-model"), {}, [short_gw.pid])
        gateway.long_port = long_port  # type: ignore[attr-defined]
        gateway.long_pid = long_gw.pid  # type: ignore[attr-defined]
        figures["gateway"] = {"start-up": statistics.median(times), "RSS idle": gateway.rss_mib()}
        targets.append(gateway)

        missing = litellm_missing() if litellm else "--no-litellm"
        if missing is None:
            log("starting LiteLLM %s (takes a while)" % litellm_version())
            proxy, seconds = _start_litellm(procs, root, tmp)
            lite = Target("litellm", proxy.port, ("/v1/chat/completions", "bench-short"),
                          ("/v1/chat/completions", "bench-long"),
                          {"Authorization": "Bearer " + proxy.master_key}, [proxy.proc.pid])
            figures["litellm"] = {"start-up": seconds, "RSS idle": lite.rss_mib()}
            figures["info"]["litellm"] = litellm_version()
            targets.append(lite)
        else:
            figures["info"]["litellm"] = "not measured: %s" % missing

        for target in targets:
            f = figures.setdefault(target.name, {})
            log("%s: %d non-streaming requests" % (target.name, requests))
            lat = sorted(_latencies(target, requests, warmup))
            f["latency (median)"] = statistics.median(lat) * 1000
            f["latency (p99)"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            log("%s: %d streams of %d chunks" % (target.name, runs, LONG_CHUNKS))
            if target.name == "gateway":
                long_target = Target("gateway", target.long_port, target.long, target.long, {}, [])  # type: ignore
                f["stream chunks/s"], f["chunks per stream"] = _stream_rate(long_target, runs)
            else:
                f["stream chunks/s"], f["chunks per stream"] = _stream_rate(target, runs)
            log("%s: %d concurrent streams" % (target.name, concurrent))
            wall, complete, chunks = _concurrent(target, concurrent)
            f["concurrent wall"] = wall
            f["concurrent complete"] = complete
            f["concurrent chunks/s"] = chunks / wall
            if target.pids:
                rss = target.rss_mib()
                if target.name == "gateway":
                    rss = max(rss or 0.0, _rss_kib(target.long_pid) / 1024.0)  # type: ignore[attr-defined]
                f["RSS after load"] = rss
        direct = figures["direct"]
        for name in ("gateway", "litellm"):
            f = figures.get(name)
            if f and "latency (median)" in f:
                f["added latency (median)"] = f["latency (median)"] - direct["latency (median)"]
                f["added latency (p99)"] = f["latency (p99)"] - direct["latency (p99)"]
        figures["info"].update(requests=requests, concurrent=concurrent, runs=runs, python=sys.version.split()[0])
        return figures
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


ROWS = [
    ("latency (median)", "ms"),
    ("latency (p99)", "ms"),
    ("added latency (median)", "ms"),
    ("added latency (p99)", "ms"),
    ("stream chunks/s", "/s"),
    ("concurrent wall", "s"),
    ("concurrent complete", ""),
    ("concurrent chunks/s", "/s"),
    ("start-up", "s"),
    ("RSS idle", "MiB"),
    ("RSS after load", "MiB"),
]


def _fmt(value: object, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return "%.2f ms" % value
    if unit == "s":
        return "%.3f s" % value
    if unit == "MiB":
        return "%.1f MiB" % value
    if unit == "/s":
        return f"{value:,.0f}/s"
    return "%s" % value


def table(figures: dict) -> str:
    """The figures as a Markdown table, with the gateway/LiteLLM ratio and the issue's target."""
    names = [n for n in ("direct", "gateway", "litellm") if n in figures]
    head = ["figure"] + names + ["gateway / LiteLLM", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, unit in ROWS:
        cells = [_fmt(figures[n].get(row), unit) for n in names]
        g, lt = figures.get("gateway", {}).get(row), figures.get("litellm", {}).get(row)
        ratio = "%.3f" % (g / lt) if isinstance(g, (int, float)) and isinstance(lt, (int, float)) and lt else "—"
        target, met = "", ""
        if row in TARGETS:
            bound, op = TARGETS[row]
            target = "%s %s" % (op, bound)
            if ratio != "—":
                r = g / lt
                met = "yes" if (r <= bound if op == "<=" else r >= bound) else "no"
        lines.append("| " + " | ".join([row] + cells + [ratio, target, met]) + " |")
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="non-streaming requests per target")
    parser.add_argument("--runs", type=int, default=3, help="long streams per target")
    parser.add_argument("--concurrent", type=int, default=100, help="streams at once")
    parser.add_argument("--startups", type=int, default=5, help="gateway starts for the start-up median")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print("..", message, file=sys.stderr, flush=True)

    figures = measure(args.requests, runs=args.runs, concurrent=args.concurrent, litellm=not args.no_litellm,
                      startups=args.startups, log=log)
    info = figures.pop("info")
    print("## openai2 gateway vs a direct request vs LiteLLM's proxy\n")
    print(", ".join("%s: %s" % kv for kv in sorted(info.items())) + "; load average %s\n" % os.getloadavg()[0])
    print(table(figures))
    if args.json:
        print(json.dumps(dict(figures, info=info), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
