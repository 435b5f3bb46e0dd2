"""Run the test suite with unittest and print a plain closing line: 'N passed, N failed, N skipped'.

Usage: python tests/run.py [-v] [pattern...]   (patterns select test modules by name, e.g. sse)
"""
import importlib
import os
import sys
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


def load_suite(tests_dir, names=()):
    """The tests of the top-level ``tests/test_*.py`` modules only (tests/integration and
    tests/bench have their own runners and requirements), whose id contains one of ``names``."""
    loader = unittest.TestLoader()
    flat = unittest.TestSuite()
    for filename in sorted(os.listdir(tests_dir)):
        if not (filename.startswith("test_") and filename.endswith(".py")):
            continue
        module_name = "tests." + filename[:-3]
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
    failed += extra_failures
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if passed + failed + skipped == 0:  # not testsRun: 3.12.1 leaves skipped tests out of it
        print("no tests ran", file=sys.stderr)
        return 1
    return 0 if failed == 0 else 1


def restore_ctrl_c():
    """Give SIGINT back its Python handler when the run inherited it ignored.

    A shell starts background jobs (``make test &``, a CI runner's nohup) with SIGINT ignored, and
    Python then leaves it ignored: the tests that press Ctrl-C would see nothing happen.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv):
    restore_ctrl_c()
    verbosity = 2 if "-v" in argv else 1
    names = [a for a in argv if not a.startswith("-")]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    suite = load_suite(HERE, names)
    from tests.support.keyscan import KeyScan

    with KeyScan() as scan:  # every openai2 log record of the run is searched for a whole key
        result = unittest.TextTestRunner(verbosity=verbosity, resultclass=CountingResult).run(suite)
    if scan.found:
        print("API keys reached the openai2 log unmasked: %s" % sorted(set(scan.found)), file=sys.stderr)
        return 1
    print("openai2 log records scanned for keys: %d, none unmasked" % scan.records)
    return report(result)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
