"""Run the test suite with unittest and print a plain closing line: 'N passed, N failed, N skipped'.

Usage: python tests/run.py [-v] [-j N] [pattern...]

Patterns select tests whose id contains one of them (a module name such as ``test_chat`` or
``sse``, a class, a method). ``-v`` lists every test.

``-j N`` runs N test modules at a time, each in a process of its own (``make test`` uses it):
each worker loads one ``tests/test_*.py`` module, runs it with its own scan of the ``openai2`` log
for whole keys, and hands back its counts, which are summed. Every module gets one line
(counts and seconds, in the order they finish); a module with a failure also gets its whole
output and is named again at the end, as is a worker that ended without a result. The slowest
modules (as measured by the last full run, kept in tests/.cache/run-durations.json) start first.
Without ``-j`` (or with ``-j 1``) everything runs in this process, as before.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class ImportFailure(unittest.TestCase):
    """Stands for a test module that cannot be imported: it fails with the traceback."""

    def __init__(self, module, text):
        super().__init__("runTest")
        self._module = module
        self._text = text

    def id(self):
        return self._module

    def runTest(self):
        self.fail("cannot import %s:\n%s" % (self._module, self._text))


def test_modules(tests_dir):
    """The names (``tests.test_x``) of the top-level ``tests/test_*.py`` modules, sorted."""
    return ["tests." + f[:-3] for f in sorted(os.listdir(tests_dir)) if f.startswith("test_") and f.endswith(".py")]


def load_suite(tests_dir, names=(), modules=None):
    """The tests of the top-level ``tests/test_*.py`` modules only (tests/integration and
    tests/bench have their own runners and requirements), whose id contains one of ``names``;
    ``modules``: only these (``tests.test_x``) instead of all of them."""
    loader = unittest.TestLoader()
    flat = unittest.TestSuite()
    for module_name in test_modules(tests_dir) if modules is None else modules:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            found = [ImportFailure(module_name, traceback.format_exc())]
        else:
            found = [loader.loadTestsFromModule(module)]
        for test in _leaves(found):
            if not names or any(n in test.id() for n in names):
                flat.addTest(test)
    return flat


def _leaves(tests):
    """The test cases inside (nested) suites, in order."""
    for item in tests:
        if isinstance(item, unittest.TestSuite):
            yield from _leaves(item)
        else:
            yield item


class CountingResult(unittest.TextTestResult):
    """Counts passed tests itself: CPython 3.12.1 leaves skipped tests out of ``testsRun``, so
    ``testsRun - failed - skipped`` under-counted there."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0

    def addSuccess(self, test):  # noqa: N802 - unittest's name
        super().addSuccess(test)
        self.passed += 1


def count_results(result):
    """(passed, failed, skipped), counting a test whose subtests failed once."""
    failed_ids = {getattr(test, "test_case", test).id() for test, _ in result.failures + result.errors}
    failed = len(failed_ids) + len(result.unexpectedSuccesses)
    passed = getattr(result, "passed", result.testsRun - failed - len(result.skipped))
    return passed + len(result.expectedFailures), failed, len(result.skipped)


def report(result, extra_failures=0):
    """Print the closing line 'N passed, N failed, N skipped' and return the exit status."""
    passed, failed, skipped = count_results(result)
    return _closing(passed, failed + extra_failures, skipped)


def restore_ctrl_c():
    """Give SIGINT back its Python handler when the run inherited it ignored.

    A shell starts background jobs (``make test &``, a CI runner's nohup) with SIGINT ignored, and
    Python then leaves it ignored: the tests that press Ctrl-C would see nothing happen.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_here(suite, verbosity, resultclass=None):
    """Run ``suite`` in this process with the key scan: (result, scan)."""
    from tests.support.keyscan import KeyScan

    with KeyScan() as scan:  # every openai2 log record of the run is searched for a whole key
        runner = unittest.TextTestRunner(verbosity=verbosity, resultclass=resultclass or CountingResult)
        result = runner.run(suite)
    return result, scan


def key_leak_message(found):
    return "API keys reached the openai2 log unmasked: %s" % sorted(set(found))


# -- -j N: one process per module (per group of classes for the slowest modules) ------------------

DURATIONS = os.path.join(HERE, ".cache", "run-durations.json")


class TimingResult(CountingResult):
    """Also the seconds per test class (the time since the previous test ended goes to the next
    test's class, so class fixtures count where they belong)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_seconds = {}
        self._last = time.monotonic()

    def stopTest(self, test):  # noqa: N802 - unittest's name
        super().stopTest(test)
        now = time.monotonic()
        name = type(test).__name__
        self.class_seconds[name] = self.class_seconds.get(name, 0.0) + now - self._last
        self._last = now


def parse_unit(unit):
    """``tests.test_x`` (the whole module), ``tests.test_x:+A,B`` (only these classes) or
    ``tests.test_x:-A,B`` (every class but these): (module, sign, classes)."""
    module, _, rest = unit.partition(":")
    if not rest:
        return module, "-", ()
    return module, rest[0], tuple(c for c in rest[1:].split(",") if c)


def worker(unit, result_path, verbosity, names):
    """One unit, in this process; its counts, failed test ids, seconds per class and key scan go
    to ``result_path`` (JSON) for the parent to sum."""
    module, sign, classes = parse_unit(unit)
    suite = unittest.TestSuite()
    for test in load_suite(HERE, names, [module]):
        if (type(test).__name__ in classes) == (sign == "+"):
            suite.addTest(test)
    result, scan = run_here(suite, verbosity, TimingResult)
    passed, failed, skipped = count_results(result)
    failed_ids = sorted({getattr(t, "test_case", t).id() for t, _ in result.failures + result.errors})
    failed_ids += [t.id() for t in result.unexpectedSuccesses]
    data = {
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "failed_ids": failed_ids,
        "classes": result.class_seconds,
        "records": scan.records,
        "found": [list(item) for item in scan.found],
    }
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    return 0


def _python_flags():
    """This interpreter's -W and -X options, for the workers (tests/matrix.py runs with -W error)."""
    flags = ["-W" + w for w in sys.warnoptions]
    for key, value in getattr(sys, "_xoptions", {}).items():
        flags.append("-X" + (key if value is True else "%s=%s" % (key, value)))
    return flags


def _load_durations():
    """{module: {class: seconds}} from the last full run (an ordering hint only)."""
    try:
        with open(DURATIONS, encoding="utf-8") as handle:
            data = json.load(handle)
        return {m: {c: float(t) for c, t in classes.items()} for m, classes in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _save_durations(durations):
    try:
        os.makedirs(os.path.dirname(DURATIONS), exist_ok=True)
        tmp = "%s.%d.tmp" % (DURATIONS, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(durations, handle, indent=1, sort_keys=True)
        os.replace(tmp, DURATIONS)
    except OSError:
        pass


def schedule(modules, durations, jobs):
    """The units to run, slowest first (so that no long unit starts last). A module that the last
    run measured as longer than a fair share of one worker's time is split into groups of its
    classes, the last group being "every other class" so that a class added since is not lost.
    Modules not measured yet go first, whole."""
    cost = {m: sum(durations.get(m, {}).values()) for m in modules}
    total = sum(cost.values())
    share = max(total / (jobs * 3.0), 1.5)
    unknown = [(float("inf"), m) for m in modules if m not in durations]
    units = []
    for module in modules:
        if module not in durations:
            continue
        classes = durations[module]
        if cost[module] <= share or len(classes) < 2:
            units.append((cost[module], module))
            continue
        bins = []  # [seconds, [classes]], largest classes first, each into the emptiest bin
        count = min(len(classes), int(cost[module] / share) + 1)
        bins = [[0.0, []] for _ in range(count)]
        for name in sorted(classes, key=lambda c: -classes[c]):
            emptiest = min(bins, key=lambda b: b[0])
            emptiest[0] += classes[name]
            emptiest[1].append(name)
        listed = []
        for seconds, names in bins[:-1]:
            units.append((seconds, "%s:+%s" % (module, ",".join(sorted(names)))))
            listed.extend(names)
        units.append((bins[-1][0], "%s:-%s" % (module, ",".join(sorted(listed)))))
    units.sort(key=lambda u: -u[0])
    return [u for _, u in unknown] + [u for _, u in units]


class _Job:
    def __init__(self, unit):
        self.unit = unit
        self.module = parse_unit(unit)[0]
        self.proc = None
        self.output = ""
        self.data = None
        self.status = None
        self.seconds = 0.0


def run_parallel(jobs, verbosity, names):
    """Every module in a worker process, ``jobs`` at a time; prints a line per module, the output
    of failing ones, and returns the exit status after the closing line."""
    modules = test_modules(HERE)
    durations = _load_durations()
    pending = schedule(modules, durations, jobs)
    lock = threading.Lock()
    running = []
    finished = []
    wake = threading.Condition(lock)
    work = tempfile.mkdtemp(prefix="openai2-run-")
    command = [sys.executable] + _python_flags() + [os.path.abspath(__file__)]
    extra = (["-v"] if verbosity > 1 else []) + list(names)
    stop = []

    def run_one(job):
        slug = "%d-%s" % (id(job), job.module)
        result_path = os.path.join(work, slug + ".json")
        out_path = os.path.join(work, slug + ".out")
        start = time.monotonic()
        with open(out_path, "w+b") as out:
            with lock:
                if stop:
                    return
                job.proc = subprocess.Popen(
                    command + ["--worker", job.unit, result_path] + extra,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            job.status = job.proc.wait()
            out.seek(0)
            job.output = out.read().decode("utf-8", "replace")
        job.seconds = time.monotonic() - start
        try:
            with open(result_path, encoding="utf-8") as handle:
                job.data = json.load(handle)
        except (OSError, ValueError):
            job.data = None

    def feeder():
        while True:
            with lock:
                if stop or not pending:
                    return
                job = _Job(pending.pop(0))
                running.append(job)
            try:
                run_one(job)
            finally:
                with lock:
                    running.remove(job)
                    finished.append(job)
                    wake.notify_all()

    threads = [threading.Thread(target=feeder, name="run-j-%d" % i, daemon=True) for i in range(jobs)]
    started = time.monotonic()
    totals = [0, 0, 0]
    records = 0
    found = []
    failed_modules = []
    shown = 0
    measured = {}
    try:
        for thread in threads:
            thread.start()
        while True:
            with lock:
                while shown == len(finished) and any(t.is_alive() for t in threads):
                    wake.wait(0.5)
                batch = finished[shown:]
                shown = len(finished)
                done = not any(t.is_alive() for t in threads) and shown == len(finished)
            for job in batch:
                data = job.data
                if data is None:
                    totals[1] += 1
                    failed_modules.append((job.module, ["the worker ended (status %s) without a result" % job.status]))
                    line = "%-32s worker ended with status %s, no result" % (job.unit, job.status)
                else:
                    for i, key in enumerate(("passed", "failed", "skipped")):
                        totals[i] += data[key]
                    records += data["records"]
                    found.extend((job.module, name, match) for name, match in data["found"])
                    if data["failed"]:
                        failed_modules.append((job.module, data["failed_ids"]))
                    if data["found"]:
                        failed_modules.append((job.module, ["a whole key reached the openai2 log"]))
                    label = job.unit if len(job.unit) < 40 else job.unit[:37] + "..."
                    line = "%-40s %4d passed, %d failed, %d skipped  %5.1f s" % (
                        label, data["passed"], data["failed"], data["skipped"], job.seconds)
                    if not data["failed"] and not data["found"] and data["passed"] + data["skipped"] == 0:
                        line = None  # a pattern that selected nothing here
                    measured.setdefault(job.module, {}).update(
                        (c, round(t, 3)) for c, t in data.get("classes", {}).items())
                bad = data is None or data["failed"] or data["found"]
                if bad or verbosity > 1:
                    sys.stdout.write("---- %s ----\n%s" % (job.unit, job.output))
                    if job.output and not job.output.endswith("\n"):
                        sys.stdout.write("\n")
                if line:
                    sys.stdout.write(line + "\n")
                sys.stdout.flush()
            if done:
                break
    except KeyboardInterrupt:
        with lock:
            stop.append(True)
            for job in running:
                if job.proc is not None and job.proc.poll() is None:
                    job.proc.terminate()
        for thread in threads:
            thread.join(10)
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if not names:
        _save_durations(measured)
    print("%d modules (%d processes) in %.1f s with -j %d" % (len(modules), len(finished), time.monotonic() - started, jobs))
    for module, ids in failed_modules:
        for test_id in ids:
            print("FAILED in %s: %s" % (module, test_id))
    extra_failures = 0
    if found:
        for module, name, match in found:
            print("API key reached the openai2 log unmasked in %s (logger %s): %s" % (module, name, match), file=sys.stderr)
        extra_failures = 1
    else:
        print("openai2 log records scanned for keys: %d, none unmasked" % records)
    return _closing(totals[0], totals[1] + extra_failures, totals[2])


def _closing(passed, failed, skipped):
    """Print the closing line and return the exit status."""
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if passed + failed + skipped == 0:  # not testsRun: 3.12.1 leaves skipped tests out of it
        print("no tests ran", file=sys.stderr)
        return 1
    return 0 if failed == 0 else 1


def parse_args(argv):
    """(verbosity, jobs, names, worker) from the command line."""
    verbosity, jobs, names, worker_args = 1, 1, [], None
    it = iter(argv)
    for arg in it:
        if arg == "-v":
            verbosity = 2
        elif arg in ("-j", "--jobs"):
            jobs = int(next(it, "0"))
        elif arg.startswith("-j") and arg[2:].isdigit():
            jobs = int(arg[2:])
        elif arg == "--worker":
            worker_args = (next(it), next(it))
        elif arg.startswith("-"):
            raise SystemExit("usage: python tests/run.py [-v] [-j N] [pattern...]  (unknown option %s)" % arg)
        else:
            names.append(arg)
    if jobs < 1:
        raise SystemExit("run.py: -j wants a number of processes >= 1")
    return verbosity, jobs, names, worker_args


def main(argv):
    restore_ctrl_c()
    verbosity, jobs, names, worker_args = parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    if worker_args is not None:
        return worker(worker_args[0], worker_args[1], verbosity, names)
    if jobs > 1:
        return run_parallel(jobs, verbosity, names)
    result, scan = run_here(load_suite(HERE, names), verbosity)
    extra = 0
    if scan.found:
        print(key_leak_message(scan.found), file=sys.stderr)
        extra = 1
    else:
        print("openai2 log records scanned for keys: %d, none unmasked" % scan.records)
    return report(result, extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
