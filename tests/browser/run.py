"""Run `make browser-test`'s tests: every tests/browser/test_*.py, with the browser venv's python
(selenium) and openai2 from this repository.

Prints the unittest report and one closing line "N passed, N failed, N skipped"; exit status 0
only when nothing failed and something ran.  ``run.py TestChatPage.test_x`` runs one test.
"""

from __future__ import annotations

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.chdir(REPO)
    loader = unittest.TestLoader()
    if argv:
        suite = unittest.TestSuite(loader.loadTestsFromName("tests.browser.test_page." + name) for name in argv)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=REPO)
    started = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped - len(result.expectedFailures)
    print("browser tests: %.0f s; screenshots in %s" % (time.monotonic() - started, os.path.join(HERE, "screenshots")))
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
