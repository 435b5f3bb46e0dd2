"""Run `make integration`'s tests: every tests/integration/test_*.py, with the development venv's
python (openai, hypothesis) and openai2 from this repository.

Prints the unittest report, the figures the tests recorded (faults tried and survived, load held,
inputs fuzzed, oracle disagreements), then one closing line "N passed, N failed, N skipped".
Exit status 0 only when nothing failed.
"""
from __future__ import annotations

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.chdir(REPO)
    loader = unittest.TestLoader()
    if argv:  # run.py test_faults Faults.test_stall_read_timeout ...
        suite = unittest.TestSuite(loader.loadTestsFromName("tests.integration." + name) for name in argv)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=REPO)
    started = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    elapsed = time.monotonic() - started

    from tests.integration.support import FIGURES

    print("\nFigures (%.0f s):" % elapsed)
    for name in sorted(FIGURES):
        print("  %-70s %s" % (name, FIGURES[name]))
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped - len(result.expectedFailures)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
