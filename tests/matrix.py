#!/usr/bin/env python3
"""Run the test suite on every Python on this machine: the package and the single file.

Usage: python tests/matrix.py [--jobs N] [--timeout SECONDS]

Interpreters: ``python3.X`` on PATH, ``$PYENV_ROOT/versions/*/bin/python`` (default
``~/.pyenv/versions``), ``pypy3``/``pypy3.X`` on PATH, and the one running this script. pyenv's
shims are not used (they only forward to the versions folder, or fail). Duplicates (same real
path, or same implementation and version) are tested once.

Supported: CPython 3.8-3.13 and PyPy 3; 3.7 and older are listed as skipped (out of scope).
For each supported interpreter: tests/run.py (the package), tests/run_single.py (dist/openai2.py,
built once up front), and a check that this interpreter builds a byte-identical single file.
The newest CPython also runs the package suite with ``-W error``. Two runs at a time (the
machines have two cores). Logs go to tests/.cache/matrix/. Exit status 1 if any supported
interpreter fails anything, or none is found.
"""

import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOGS = os.path.join(HERE, ".cache", "matrix")
SUPPORTED = ((3, 8), (3, 13))
CLOSING = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")

_PROBE = (
    "import sys, os, platform; sys.stdout.write('%s|%s|%s\\n' % (os.path.realpath(sys.executable), "
    "'.'.join([str(x) for x in sys.version_info[:3]]), platform.python_implementation()))"
)


class Interpreter:
    def __init__(self, found_as, real, version, impl):
        self.found_as = found_as
        self.real = real
        self.version = version  # (3, 11, 7)
        self.impl = impl  # CPython / PyPy
        self.note = ""
        self.results = {}  # task -> (ok, text, seconds, log)

    @property
    def label(self):
        home = os.path.expanduser("~")
        path = self.found_as
        return "~" + path[len(home) :] if path.startswith(home + os.sep) else path

    @property
    def version_text(self):
        return "%s %s" % (self.impl, ".".join(str(v) for v in self.version))

    @property
    def in_scope(self):
        return SUPPORTED[0] <= self.version[:2]

    @property
    def gating(self):
        return SUPPORTED[0] <= self.version[:2] <= SUPPORTED[1]


def _clean_env():
    env = dict(os.environ)
    for key in (
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONWARNINGS",
        "PYTHONSTARTUP",
        "OPENAI2_SINGLE_FILE",
        "PYTHONDONTWRITEBYTECODE",
    ):
        env.pop(key, None)
    return env


def find_candidates():
    found = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or os.sep + "shims" in folder and "pyenv" in folder:
            continue
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if re.match(r"^(python3\.\d+|pypy3|pypy3\.\d+)$", name):
                path = os.path.join(folder, name)
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    found.append(path)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for path in sorted(glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python"))):
        found.append(path)
    found.append(sys.executable)
    return found


def probe(paths):
    """Run each candidate once; dedupe; returns (interpreters, unusable [(path, why)])."""
    interps, unusable = [], []
    seen_real, seen_version = set(), set()
    for path in paths:
        try:
            out = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=30, env=_clean_env())
        except (OSError, subprocess.SubprocessError) as exc:
            unusable.append((path, "does not start: %s" % exc))
            continue
        if out.returncode != 0 or "|" not in out.stdout:
            unusable.append((path, "does not start: %s" % (out.stderr.strip().splitlines() or ["?"])[0]))
            continue
        real, version, impl = out.stdout.strip().split("|")
        version = tuple(int(v) for v in version.split("."))
        key = (impl, version)
        if real in seen_real or key in seen_version:
            continue
        seen_real.add(real)
        seen_version.add(key)
        interps.append(Interpreter(path, real, version, impl))
    interps.sort(key=lambda i: (i.impl != "CPython", i.version, i.found_as))
    return interps, unusable


def _slug(text):
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def run_task(args, log_path, timeout):
    """Run one suite; returns (ok, summary, seconds)."""
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ %s\n" % " ".join(args))
        log.flush()
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_clean_env(),
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False, "TIMEOUT after %ds" % timeout, time.monotonic() - start
    seconds = time.monotonic() - start
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    summary = None
    for line in reversed(lines):
        if CLOSING.match(line.strip()):
            summary = line.strip()
            break
    if summary is None:
        return False, "no result (exit %d)" % code, seconds
    return code == 0, summary if code == 0 else "FAIL " + summary, seconds


def main(argv):
    jobs = 2
    timeout = 900
    it = iter(argv)
    for a in it:
        if a == "--jobs":
            jobs = max(1, int(next(it)))
        elif a == "--timeout":
            timeout = int(next(it))
        else:
            print("usage: python tests/matrix.py [--jobs N] [--timeout SECONDS]", file=sys.stderr)
            return 2
    started = time.monotonic()
    interps, unusable = probe(find_candidates())
    if os.path.isdir(LOGS):
        shutil.rmtree(LOGS, ignore_errors=True)
    os.makedirs(LOGS, exist_ok=True)

    # The single file, built once (tests run against it), and a snapshot of the sources so that
    # every interpreter's own build can be compared byte for byte with the reference build.
    sys.path.insert(0, HERE)
    import build_single

    work = tempfile.mkdtemp(prefix="openai2-matrix-")
    try:
        snapshot = os.path.join(work, "src")
        shutil.copytree(
            build_single.PKG_DIR, os.path.join(snapshot, "openai2"), ignore=shutil.ignore_patterns("__pycache__")
        )
        if os.path.isfile(os.path.join(ROOT, "LICENSE")):
            shutil.copy2(os.path.join(ROOT, "LICENSE"), snapshot)
        try:
            single, digest = build_single.build(
                os.path.join(snapshot, "openai2"), build_single.DEFAULT_OUTPUT, revision=build_single.source_revision()
            )
            _, reference = build_single.build(
                os.path.join(snapshot, "openai2"), os.path.join(work, "ref", "openai2.py"), revision="matrix"
            )
        except build_single.BuildError as exc:
            print("matrix: %s" % exc, file=sys.stderr)
            return 1
        print("%s  %s" % (digest, os.path.relpath(single, ROOT)))

        tasks = []
        for interp in interps:
            if not interp.in_scope:
                interp.note = "skipped (out of scope)"
                continue
            slug = _slug(interp.version_text + "-" + interp.label)
            tasks.append((interp, "package", [interp.found_as, "tests/run.py"], slug))
            tasks.append((interp, "single", [interp.found_as, "tests/run_single.py", "--file", single], slug))
        newest = [i for i in interps if i.impl == "CPython" and i.gating]
        werror = max(newest, key=lambda i: i.version) if newest else None
        if werror is not None:
            tasks.append(
                (
                    werror,
                    "werror",
                    [werror.found_as, "-W", "error", "tests/run.py"],
                    _slug(werror.version_text + "-" + werror.label),
                )
            )
        lock = threading.Lock()

        def run(task):
            interp, kind, args, slug = task
            log = os.path.join(LOGS, "%s-%s.log" % (slug, kind))
            ok, text, seconds = run_task(args, log, timeout)
            if kind == "single":
                out_dir = os.path.join(work, slug)
                env = _clean_env()
                env["OPENAI2_BUILD_REVISION"] = "matrix"
                build = subprocess.run(
                    [
                        interp.found_as,
                        "tests/build_single.py",
                        "-q",
                        "--pkg",
                        os.path.join(snapshot, "openai2"),
                        "-o",
                        os.path.join(out_dir, "openai2.py"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=300,
                )
                same = False
                if build.returncode == 0:
                    with open(os.path.join(out_dir, "openai2.py"), "rb") as f:
                        same = hashlib.sha256(f.read()).hexdigest() == reference
                interp.results["build"] = (same, "identical" if same else "DIFFERENT", 0.0, build.stdout)
            with lock:
                interp.results[kind] = (ok, text, seconds, log)
                print(
                    "  %-8s %-22s %-8s %6.1fs  %s"
                    % ("ok" if ok else "FAILED", interp.version_text, kind, seconds, text),
                    flush=True,
                )

        print(
            "running %d suites on %d interpreters, %d at a time..."
            % (len(tasks), len([i for i in interps if i.in_scope]), jobs),
            flush=True,
        )
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(run, tasks))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # --- the table ------------------------------------------------------------------------
    rows = [("interpreter", "version", "package", "single file", "build", "time")]
    failed = []
    for interp in interps:
        if not interp.in_scope:
            rows.append((interp.label, interp.version_text, interp.note, "", "", ""))
            continue
        r = interp.results
        total = sum(r[k][2] for k in ("package", "single") if k in r)
        version = interp.version_text + ("" if interp.gating else " (newer than supported, not gating)")
        rows.append(
            (
                interp.label,
                version,
                r.get("package", (False, "?"))[1],
                r.get("single", (False, "?"))[1],
                r.get("build", (False, "?"))[1],
                "%.0fs" % total,
            )
        )
        if interp.gating:
            for kind in ("package", "single", "build"):
                if not r.get(kind, (False,))[0]:
                    failed.append((interp, kind))
    if werror is not None:
        r = werror.results.get("werror", (False, "?", 0.0, ""))
        rows.append((werror.label, werror.version_text + " -W error", r[1], "-", "-", "%.0fs" % r[2]))
        if not r[0]:
            failed.append((werror, "werror"))
    for interp, kind in failed:
        log = interp.results.get(kind, (0, 0, 0, ""))[3]
        if kind == "build":
            print("\n--- FAILED: %s: its own build of the single file differs\n%s" % (interp.version_text, log))
            continue
        print("\n--- FAILED: %s %s (log: %s)" % (interp.version_text, kind, os.path.relpath(log, ROOT) if log else "-"))
        if log and os.path.isfile(log):
            with open(log, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
            named = [ln for ln in lines if ln.startswith(("FAIL: ", "ERROR: "))]
            for ln in named[:20]:
                print("  " + ln)
            if len(named) > 20:
                print("  ... and %d more" % (len(named) - 20))
            if not named:
                print("\n".join("  " + ln for ln in lines[-15:]))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for path, why in unusable:
        print("not used: %s (%s)" % (path, why))
    if not any(i.impl == "PyPy" for i in interps):
        print("note: no pypy3 found (`make pypy` installs Debian's)")
    print("logs: %s   total %.0fs" % (os.path.relpath(LOGS, ROOT), time.monotonic() - started))
    gating = [i for i in interps if i.gating]
    if not gating:
        print("matrix: no supported interpreter found", file=sys.stderr)
        return 1
    if failed:
        print("matrix: %d failing run(s) on supported interpreters" % len(failed), file=sys.stderr)
        return 1
    print("matrix: all %d supported interpreters pass" % len(gating))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
