"""Run the test suite with unittest and print a plain closing line: 'N passed, N failed, N skipped'.

Usage: python tests/run.py [-v] [pattern...]   (patterns select test modules by name, e.g. sse)
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


#: subpackages with their own runners and requirements (make integration, make bench)
EXCLUDED_PREFIXES = ("tests.integration.", "tests.bench.")


def flatten(suite, names=(), exclude=EXCLUDED_PREFIXES):
    """The tests of ``suite`` whose id contains one of ``names`` (all when empty), minus ``exclude``."""
    flat = unittest.TestSuite()
    stack = [suite]
    while stack:
        s = stack.pop()
        for t in s:
            if isinstance(t, unittest.TestSuite):
                stack.append(t)
                continue
            test_id = t.id()
            if test_id.startswith(exclude):
                continue
            if not names or any(n in test_id for n in names):
                flat.addTest(t)
    return flat


def count_results(result):
    """(passed, failed, skipped), counting a test whose subtests failed once."""
    failed_ids = {getattr(test, "test_case", test).id() for test, _ in result.failures + result.errors}
    failed = len(failed_ids) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    return result.testsRun - failed - skipped, failed, skipped


def main(argv):
    verbosity = 2 if "-v" in argv else 1
    names = [a for a in argv if not a.startswith("-")]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    loader = unittest.TestLoader()
    suite = flatten(loader.discover(HERE, pattern="test_*.py", top_level_dir=ROOT), names)
    from tests.support.keyscan import KeyScan

    with KeyScan() as scan:  # every openai2 log record of the run is searched for a whole key
        result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    if scan.found:
        print("API keys reached the openai2 log unmasked: %s" % sorted(set(scan.found)), file=sys.stderr)
        return 1
    print("openai2 log records scanned for keys: %d, none unmasked" % scan.records)
    passed, failed, skipped = count_results(result)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if result.testsRun == 0:
        print("no tests ran", file=sys.stderr)
        return 1
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
