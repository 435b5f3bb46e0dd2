"""Temporary folders and config homes for tests, and the file-system facts they check first.

``TempDirCase`` gives each test a fresh folder ``self.tmp`` (removed afterwards);
``TempHomeCase`` adds an OPENAI2_HOME inside it: the environment variable set for the test and
restored afterwards, the variables that would leak from the developer's shell (a key, a model,
debug, colour) unset, and ``self.store``, the ``Store`` of that home::

    class MyTest(TempHomeCase):
        def home_env(self):                  # more variables for the test (optional)
            return {"OPENAI_API_KEY": KEY}

        def test_x(self):
            main(["chat", "hi"], ...)         # writes under self.home, seen through self.store
"""
import os
import shutil
import tempfile
import unittest
from unittest import mock

from openai2.store import Store

#: JSON nested far deeper than any parser's limit (a hostile file's content)
DEEP = "[" * 100000 + "]" * 100000


def can_symlink():
    """Whether this system and user may make symbolic links (not so on some Windows setups)."""
    tmp = tempfile.mkdtemp(prefix="o2link-")
    try:
        os.symlink(os.path.join(tmp, "target"), os.path.join(tmp, "link"))
        return True
    except (OSError, NotImplementedError, AttributeError):
        return False
    finally:
        shutil.rmtree(tmp, True)


SYMLINKS = can_symlink()


class TempDirCase(unittest.TestCase):
    """``self.tmp``: a new folder for each test, removed after it."""

    #: the folder name's prefix (says which module left a folder behind, if one ever is)
    tmp_prefix = "o2test-"

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix=self.tmp_prefix)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)


class TempHomeCase(TempDirCase):
    """``self.home`` (OPENAI2_HOME, not created yet) in ``self.tmp``, ``self.store`` on it; the
    environment of the test: OPENAI2_HOME, ``home_env()``, and ``unset_env`` removed — all
    restored afterwards."""

    #: variables of the developer's environment that would change what the CLI does
    unset_env = ("OPENAI_API_KEY", "OPENAI2_MODEL", "OPENAI2_DEBUG", "OPENAI2_LOG", "NO_COLOR")

    def home_env(self):
        """More environment variables for each test of the class (name -> value)."""
        return {}

    def setUp(self):
        super().setUp()
        self.home = os.path.join(self.tmp, "home")
        env = dict(self.home_env(), OPENAI2_HOME=self.home)
        patcher = mock.patch.dict(os.environ, env)
        patcher.start()
        self.addCleanup(patcher.stop)  # the whole environment as it was, the removals included
        for name in self.unset_env:
            if name not in env:
                os.environ.pop(name, None)
        self.store = Store(self.home)

    def set_env(self, name, value):
        """Set an environment variable for the rest of this test (restored with the rest)."""
        os.environ[name] = value
