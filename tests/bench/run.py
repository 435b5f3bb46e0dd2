"""Benchmark driver: openai2 against the official ``openai`` SDK and a bare standard-library loop.

    make bench                                    # creates .venv-bench with the SDK, then runs this
    .venv-bench/bin/python tests/bench/run.py [--rounds N] [--no-write]

It starts tests/bench/server.py (a fast loopback OpenAI-compatible server) in its own process and
measures every figure in fresh subprocesses (tests/bench/cases.py), round-robin: each round runs
every case of every client once, in a rotating order, so that noise from other work on the machine
spreads over all columns alike.  Each figure is the median over the rounds.  The table is printed
and written to tests/bench/results.md; every raw value goes to tests/bench/results-raw.txt
(git-ignored).  openai2 is imported from this repository, never installed.  Nothing here is a test:
no wall time is asserted anywhere.  Profiles: tests/bench/prof.py.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASES = os.path.join(HERE, "cases.py")
PY = sys.executable

# (key, impl, case): one subprocess each per round.
CASE_SPECS = [
    ("import", "o2", "import"),
    ("import", "sdk", "import"),
    ("import", "base", "import"),
    ("seq", "o2", "seq"),
    ("seq", "sdk", "seq"),
    ("seq", "base", "seq"),
    ("seq", "raw", "seq"),
    ("stream", "o2", "stream:chunks"),
    ("stream-dicts", "o2", "stream:dicts"),
    ("stream-text", "o2", "stream:text"),
    ("stream-chat", "o2", "stream:chat"),
    ("stream", "sdk", "stream:chunks"),
    ("stream", "base", "stream"),
    ("astream", "o2", "astream"),
    ("astream", "sdk", "astream"),
    ("astream", "base", "astream"),
    ("concurrent", "o2", "concurrent"),
    ("concurrent", "sdk", "concurrent"),
    ("concurrent", "base", "concurrent"),
]
# (key, argv after the interpreter): whole-process wall times.
WALL_SPECS = [
    ("wall-pass", ["-c", "pass"]),
    ("wall-import-o2", ["-c", "import openai2"]),
    ("wall-import-sdk", ["-c", "import openai"]),
    ("wall-import-base", ["-c", "import http.client, json"]),
    ("wall-cli-o2", ["-m", "openai2", "--help"]),
]


def machine():
    """CPU model, cores, memory, Python and package versions, and the openai2 commit."""
    info = {"cpu": "unknown", "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["memory"] = "%.0f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
                    break
    except OSError:
        pass
    info["os"] = "%s %s" % (platform.system(), platform.release())
    info["python"] = "%s %s" % (platform.python_implementation(), platform.python_version())
    from importlib import metadata

    for name in ("openai", "httpx2", "httpx", "pydantic", "anyio"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "openai2"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        info["openai2"] = commit + (" + uncommitted changes in openai2/" if dirty else "")
    except OSError:
        info["openai2"] = "unknown"
    return info


def loadavg():
    """The 1-minute load average: other work on the machine skews every figure, so it is recorded."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


class BenchServer:
    """tests/bench/server.py in its own process; it exits when our pipe to its stdin closes."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [PY, os.path.join(HERE, "server.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise SystemExit("bench server did not start: %r" % line)
        self.root = "http://127.0.0.1:%d" % int(line.split()[1])

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            self.proc.wait(timeout=5)


def run_case(impl, case, root):
    """One fresh process for one case; returns its RESULT dict, or {"error": ...}."""
    try:
        done = subprocess.run(
            [PY, CASES, impl, case, root, "1"], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 300 s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    lines = (done.stderr or done.stdout or "exit status %d" % done.returncode).strip().splitlines()
    return {"error": lines[-1] if lines else "exit status %d" % done.returncode}


def run_wall(argv):
    """Wall time and CPU time (user + system) of a whole process, in seconds.

    CPU time is recorded too because other work on a 2-core machine inflates wall times of short
    processes several-fold, while it barely changes the CPU time the process itself needs.
    :returns: ((wall, cpu), None), or (None, [error line]) if the process failed
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([PY] + argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        return None, done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["exit %d" % done.returncode]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (elapsed, cpu), None


def collect(rounds, root, log):
    """Run every case ``rounds`` times, round-robin in rotating order; returns raw values and errors."""
    raw = {}
    errors = {}
    work = [("case", spec) for spec in CASE_SPECS] + [("wall", spec) for spec in WALL_SPECS]
    for r in range(rounds):
        shift = (r * 3) % len(work)
        order = work[shift:] + work[:shift]
        log("round %d/%d" % (r + 1, rounds))
        for kind, spec in order:
            if kind == "wall":
                key, argv = spec
                for _ in range(4):  # short processes: four samples per round
                    value, err = run_wall(argv)
                    if err:
                        errors[(key, "o2")] = err[0]
                        break
                    slot = raw.setdefault((key, "o2"), {})
                    slot.setdefault("values", []).append(value[0])
                    slot.setdefault("cpu", []).append(value[1])
                continue
            key, impl, case = spec
            result = run_case(impl, case, root)
            if "error" in result:
                errors[(key, impl)] = result["error"]
                log("  %s %s: %s" % (impl, case, result["error"]))
                continue
            slot = raw.setdefault((key, impl), {})
            for name, value in result.items():
                slot.setdefault(name, []).extend(value if isinstance(value, list) else [value])
    return raw, errors


def med(raw, key, impl, name="values"):
    values = raw.get((key, impl), {}).get(name)
    return statistics.median(values) if values else None


def fmt(value, unit):
    if value is None:
        return "—"
    if unit in ("ms", "MiB"):
        return "%.1f %s" % (value, unit)
    if unit == "s":
        return "%.3f s" % value
    return f"{value:,.0f} {unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return "%.2f" % r if r < 10 else "%.1f" % r


def build(raw, errors, info, rounds, elapsed):
    o2 = lambda key, name="values": med(raw, key, "o2", name)  # noqa: E731
    sdk = lambda key, name="values": med(raw, key, "sdk", name)  # noqa: E731
    base = lambda key, name="values": med(raw, key, "base", name)  # noqa: E731
    imp_delta = None
    if o2("wall-import-o2") is not None and o2("wall-pass") is not None:
        imp_delta = (o2("wall-import-o2") - o2("wall-pass")) * 1000
    sdk_delta = base_delta = None
    if o2("wall-import-sdk") is not None and o2("wall-pass") is not None:
        sdk_delta = (o2("wall-import-sdk") - o2("wall-pass")) * 1000
    if o2("wall-import-base") is not None and o2("wall-pass") is not None:
        base_delta = (o2("wall-import-base") - o2("wall-pass")) * 1000
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    cli_o2 = ms(o2("wall-cli-o2"))
    cli_cpu = ms(o2("wall-cli-o2", "cpu"))

    def cpu_delta(key):
        a, b = o2(key, "cpu"), o2("wall-pass", "cpu")
        return None if a is None or b is None else (a - b) * 1000

    imp_cpu = cpu_delta("wall-import-o2")
    # (label, unit, openai2, SDK, baseline, better)
    rows = [
        ("1. import time (in-process)", "ms", o2("import", "import_ms"), sdk("import", "import_ms"), base("import", "import_ms"), "lower"),
        ("1. `python -c \"import X\"` minus `python -c pass`", "ms", imp_delta, sdk_delta, base_delta, "lower"),
        ("1. the same in CPU time (user + system)", "ms", imp_cpu, cpu_delta("wall-import-sdk"), cpu_delta("wall-import-base"), "lower"),
        ("1. import time, CPU (in-process)", "ms", o2("import", "import_cpu_ms"), sdk("import", "import_cpu_ms"), base("import", "import_cpu_ms"), "lower"),
        ("1. import + first request, wall", "ms", o2("import", "total_ms"), sdk("import", "total_ms"), base("import", "total_ms"), "lower"),
        ("1. peak RSS, import + one request", "MiB", o2("import", "rss_mib"), sdk("import", "rss_mib"), base("import", "rss_mib"), "lower"),
        ("2. sequential requests, one connection", "req/s", o2("seq"), sdk("seq"), base("seq"), "higher"),
        ("3. sync stream: `create(stream=True)` chunk objects", "chunks/s", o2("stream"), sdk("stream"), base("stream"), "higher"),
        ("3. sync stream: `.iter_dicts()`", "chunks/s", o2("stream-dicts"), sdk("stream"), base("stream"), "higher"),
        ("3. sync stream: `.iter_text()`", "chunks/s", o2("stream-text"), sdk("stream"), base("stream"), "higher"),
        ("3. sync stream: `Chat.stream_request`", "chunks/s", o2("stream-chat"), sdk("stream"), base("stream"), "higher"),
        ("3. async stream (`Chat.async_stream_request`; SDK `AsyncOpenAI`)", "chunks/s", o2("astream"), sdk("astream"), base("astream"), "higher"),
        ("4. 100 concurrent async requests at 300 ms, wall", "s", o2("concurrent"), sdk("concurrent"), base("concurrent"), "lower"),
        ("4. one async request at 300 ms, latency", "s", o2("concurrent", "latency"), sdk("concurrent", "latency"), base("concurrent", "latency"), "lower"),
        ("5. `python -m openai2 --help` (baseline: `python -c pass`)", "ms", cli_o2, None, ms(o2("wall-pass")), "lower"),
        ("5. the same in CPU time (user + system)", "ms", cli_cpu, None, ms(o2("wall-pass", "cpu")), "lower"),
    ]
    lines = []
    lines.append("| measure | openai2 | official SDK | bare baseline | openai2/SDK | openai2/baseline | better |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, unit, a, b, c, better in rows:
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s |"
            % (label, fmt(a, unit), fmt(b, unit), fmt(c, unit), ratio(a, b), ratio(a, c), better)
        )
    table = "\n".join(lines)

    targets = []

    def target(name, ok, measured, goal):
        if ok is None:
            targets.append("| %s | %s | %s | not measured |" % (name, goal, measured))
        else:
            targets.append("| %s | %s | %s | %s |" % (name, goal, measured, "**pass**" if ok else "**MISS**"))

    def times(a, b):
        return None if a is None or b is None or b == 0 else a / b

    x = times(sdk("import", "import_ms"), o2("import", "import_ms"))
    target("import time vs SDK", None if x is None else x >= 20, "—" if x is None else "%.1f× faster" % x, "≥ 20× faster")
    target("`import openai2` added to interpreter start", None if imp_delta is None else imp_delta < 15,
           fmt(imp_delta, "ms"), "< 15 ms")
    target("the same in CPU time (load-independent)", None if imp_cpu is None else imp_cpu < 15, fmt(imp_cpu, "ms"), "< 15 ms")
    x = times(o2("import", "rss_mib"), sdk("import", "rss_mib"))
    target("peak RSS vs SDK", None if x is None else x <= 0.5, "—" if x is None else "%.2f× the SDK's" % x, "≤ 0.5×")
    x = times(o2("seq"), sdk("seq"))
    target("sequential req/s vs SDK", None if x is None else x >= 3, "—" if x is None else "%.1f×" % x, "≥ 3×")
    for key, label in (("stream", "chunk objects"), ("stream-dicts", "iter_dicts"), ("stream-text", "iter_text"), ("stream-chat", "Chat.stream_request")):
        x = times(o2(key), sdk("stream"))
        target("sync stream (%s) vs SDK" % label, None if x is None else x >= 8, "—" if x is None else "%.1f×" % x, "≥ 8×")
        x = times(o2(key), base("stream"))
        target("sync stream (%s) vs baseline" % label, None if x is None else x >= 0.6, "—" if x is None else "%.2f×" % x, "≥ 0.6×")
    x = times(o2("astream"), sdk("astream"))
    target("async stream vs SDK", None if x is None else x >= 4, "—" if x is None else "%.1f×" % x, "≥ 4×")
    a, b = o2("concurrent"), sdk("concurrent")
    target("100 concurrent: wall vs SDK", None if a is None or b is None else a <= b,
           "—" if a is None or b is None else "%.3f s vs %.3f s" % (a, b), "≤ SDK's")
    lat = o2("concurrent", "latency")
    target("100 concurrent: wall vs one request", None if a is None or lat is None else a < 2 * lat,
           "—" if a is None or lat is None else "%.2f× one request (%.3f s)" % (a / lat, lat), "< 2×")
    cli_note = ""
    if cli_o2 is None:
        cli_note = " (skipped: %s)" % errors.get(("wall-cli-o2", "o2"), "not measured")
    target("`python -m openai2 --help`", None if cli_o2 is None else cli_o2 < 100, fmt(cli_o2, "ms") + cli_note, "< 100 ms")
    target("the same in CPU time (load-independent)", None if cli_cpu is None else cli_cpu < 100, fmt(cli_cpu, "ms"), "< 100 ms")
    target_table = "| target | goal | measured | result |\n| --- | --- | --- | --- |\n" + "\n".join(targets)

    notes = []
    cap = med(raw, "seq", "raw")
    if cap and o2("seq") and sdk("seq"):
        notes.append(
            "- The server is not the bottleneck: a raw-socket client that parses nothing gets %s from it, "
            "%.1f× openai2's and %.0f× the SDK's rate; the bare `http.client` loop gets %s; the bare stream "
            "readers parse %s (sync) and %s (async)."
            % (fmt(cap, "req/s"), cap / o2("seq"), cap / sdk("seq"), fmt(base("seq"), "req/s"),
               fmt(base("stream"), "chunks/s"), fmt(base("astream"), "chunks/s"))
        )
    notes.append(
        "- Streams: one answer of 20,000 content chunks (~180 bytes of SSE each, chunked transfer "
        "encoding, written in 64 KiB pieces); every client extracts each chunk's text and the joined "
        "text is checked. SDK: `for chunk in stream: chunk.choices[0].delta.content`."
    )
    notes.append(
        "- Concurrency: openai2 uses 100 separate `Chat`s (`async_request`), the SDK one `AsyncOpenAI` "
        "with `asyncio.gather`, the baseline 100 asyncio sockets; connections are warm (one round first)."
    )
    notes.append("- The SDK has no `python -m openai` CLI module, so its CLI cell is empty.")
    notes.append(
        "- Whole-process rows (`python -c ...`, the CLI) take 4 samples a round; their CPU-time rows "
        "(user + system of the child) are what other load on the machine inflates least."
    )
    for (key, impl), err in sorted(errors.items()):
        notes.append("- Not measured: %s / %s: %s" % (key, impl, err))

    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    versions = ", ".join("%s %s" % (n, info[n]) for n in ("openai", "httpx2", "httpx", "pydantic", "anyio") if n in info)
    head = [
        "# openai2 benchmark results",
        "",
        "Written by `make bench` (tests/bench/run.py) on %s; median of %d rounds, each figure from a "
        "fresh process (%.0f s in all). Not a test: nothing asserts a time." % (when, rounds, elapsed),
        "",
        "- Machine: %s, %s cores, %s, %s; %s" % (info["cpu"], info["cores"], info.get("memory", "?"), info["os"], info["python"]),
        "- Official SDK: %s" % versions,
        "- openai2: commit %s" % info.get("openai2", "?"),
        "- Other work on the machine: %s (2 cores: above ~0.5 the figures are noisy)" % info.get("load", "?"),
        "- Server: tests/bench/server.py, asyncio in its own process on the same machine (loopback).",
        "",
    ]
    return "\n".join(head + [table, "", "## Targets (issue 7)", "", target_table, "", "## Notes", ""] + notes) + "\n"


#: Benchmarks of their own, run after the table (each a script printing a Markdown section).
EXTRA_BENCHES = [
    ("the tool loop", ["bench_tools.py"]),
    ("the gateway", ["bench_gateway.py"]),
    ("the exchange log", ["bench_log.py"]),
    ("the token budget", ["bench_budget.py"]),
]


def extra_sections(log):
    """The sections of :data:`EXTRA_BENCHES`, each run in its own process; a failure is noted."""
    out = []
    for title, argv in EXTRA_BENCHES:
        log("running %s (%s)" % (title, argv[0]))
        done = subprocess.run([PY, os.path.join(HERE, argv[0])] + argv[1:], cwd=ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            out.append("\n" + done.stdout.strip() + "\n")
        else:
            last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["exit %d" % done.returncode]
            out.append("\n## %s\n\nnot measured: %s\n" % (title, last[0]))
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of every figure (median taken)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.md alone")
    args = parser.parse_args(argv)
    from importlib.util import find_spec

    if find_spec("openai") is None:  # not imported: this process stays small (see cases.py on RSS)
        raise SystemExit("the official SDK is not installed here: run `make bench` (it builds .venv-bench)")

    def log(message):
        sys.stderr.write("bench: %s\n" % message)
        sys.stderr.flush()

    # Measure what an installed user runs: byte-compiled modules (pip compiles them on install).
    # With PYTHONDONTWRITEBYTECODE set (some shells and tools set it), every fresh process would
    # recompile each module whose .pyc is stale, inflating import and start-up figures.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([PY, "-m", "compileall", "-q", os.path.join(ROOT, "openai2")], check=False)

    info = machine()
    log("%s, %s cores, %s" % (info["cpu"], info["cores"], info["python"]))
    load_before = loadavg()
    server = BenchServer()
    start = time.perf_counter()
    try:
        raw, errors = collect(args.rounds, server.root, log)
    finally:
        server.stop()
    info["load"] = "load average %s before, %s after" % (load_before, loadavg())
    report = build(raw, errors, info, args.rounds, time.perf_counter() - start)
    report += extra_sections(log)
    sys.stdout.write(report)
    if not args.no_write:
        with open(os.path.join(HERE, "results.md"), "w") as f:
            f.write(report)
        with open(os.path.join(HERE, "results-raw.txt"), "w") as f:
            for (key, impl), values in sorted(raw.items()):
                f.write("%s %s %s\n" % (key, impl, json.dumps(values)))
        log("wrote tests/bench/results.md and tests/bench/results-raw.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
