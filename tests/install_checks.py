"""`make check`'s installation checks: openai2 installed the ways people install Python software.

Run by tests/check_dev.sh as ``$PYTHON tests/install_checks.py [-v] [name...]`` (not part of
``make test``: it builds and installs, ~2-3 minutes). Each check starts from what a new user
has: a fresh virtual environment of ``$PYTHON`` (the interpreter running this file), a fresh
HOME, no pip configuration, and a clone of the current work (a throw-away git repository made
from the working tree: the tracked and untracked, not ignored, files, so uncommitted changes
are checked too). The package index is never used: pip runs with ``PIP_NO_INDEX=1`` and finds
the build requirements (setuptools, wheel) in the wheelhouse that check_dev.sh downloads when
it creates .venv-dev (``OPENAI2_WHEELHOUSE``). Builds of distributions and ``twine check`` use
.venv-dev's python (``OPENAI2_DEV_PYTHON``).

What is checked: ``pip install .``, ``pip install --user .``, ``pip install git+file://...``,
an isolated app venv the way pipx makes one, the wheel (``make wheel``) and the sdist (contents,
installing, ``twine check --strict``), ``pip uninstall`` leaving nothing behind, the oldest
setuptools that pyproject.toml allows, and README's quick start and single-file commands run
as written in a fresh clone (``openai2 demo``, ``make test``).
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import build_wheel  # noqa: E402  (tests/ is not a package on this path)

WHEELHOUSE = os.path.abspath(os.environ.get("OPENAI2_WHEELHOUSE") or os.path.join(ROOT, ".venv-dev", "wheelhouse"))
DEV_PYTHON = os.path.abspath(os.environ.get("OPENAI2_DEV_PYTHON") or os.path.join(ROOT, ".venv-dev", "bin", "python"))
PYTHON = sys.executable
BIN = "Scripts" if os.name == "nt" else "bin"
URL_PLACEHOLDER = "<URL of this repository>"
CHECKSUM_PLACEHOLDER = "<checksum printed by make single-file>"
_state = {}


def _version():
    with open(os.path.join(ROOT, "openai2", "common.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


VERSION = _version()


def fresh_env(home, **extra):
    """The environment of a new user: no pip configuration, no PYTHON* variables, no venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "OPENAI", "MAKE", "CONDA")) and k != "MFLAGS"}
    os.makedirs(home, exist_ok=True)
    env.update(HOME=home, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=WHEELHOUSE,
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", PIP_NO_INPUT="1",
               PIP_PROGRESS_BAR="off", XDG_CONFIG_HOME=os.path.join(home, ".config"),
               XDG_CACHE_HOME=os.path.join(home, ".cache"), XDG_DATA_HOME=os.path.join(home, ".local", "share"))
    env.update(extra)
    return env


def run(cmd, cwd, env, timeout=900):
    """Run ``cmd``; return its combined output; fail the test with the output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError("%s exited with %d in %s:\n%s" % (" ".join(cmd), proc.returncode, cwd, proc.stdout[-6000:]))
    return proc.stdout


def files_under(top):
    """Relative paths of the files (not folders) under ``top``."""
    found = set()
    for folder, _dirs, names in os.walk(top):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), top))
    return found


def snapshot_repo():
    """A git repository holding the working tree's files as one commit: what a clone gets."""
    if "repo" not in _state:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout.decode("utf-8")
        repo = os.path.join(_state["tmp"], "origin", "openai2")
        for rel in filter(None, listed.split("\0")):
            src = os.path.join(ROOT, rel)
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(os.path.join(repo, rel)), exist_ok=True)
                shutil.copy2(src, os.path.join(repo, rel))
        git = ["git", "-c", "user.name=install check", "-c", "user.email=check@invalid", "-c", "commit.gpgsign=false"]
        env = fresh_env(os.path.join(_state["tmp"], "githome"))
        run(["git", "init", "--quiet"], repo, env)
        run(["git", "add", "--all"], repo, env)
        run(git + ["commit", "--quiet", "--no-verify", "-m", "snapshot of the working tree"], repo, env)
        _state["repo"] = repo
    return _state["repo"]


def built_distributions():
    """The wheel and the sdist, built once with .venv-dev's setuptools (what ``make wheel`` does)."""
    if "dists" not in _state:
        out = os.path.join(_state["tmp"], "dist")
        wheel, sdist = build_wheel.build(out, ("wheel", "sdist"), python=DEV_PYTHON)
        _state["dists"] = (wheel, sdist)
    return _state["dists"]


class InstallCase(unittest.TestCase):
    """Per test: a folder ``self.tmp`` with a fresh HOME, an empty working folder elsewhere."""

    def setUp(self):
        if shutil.which("git") is None:
            self.skipTest("git is not installed")
        if not os.path.isdir(WHEELHOUSE):
            self.fail("no wheelhouse at %s: run `make check` (it creates .venv-dev and the wheelhouse)" % WHEELHOUSE)
        self.tmp = tempfile.mkdtemp(prefix="t-", dir=_state["tmp"])
        self.home = os.path.join(self.tmp, "home")
        self.elsewhere = os.path.join(self.tmp, "elsewhere")
        os.makedirs(self.elsewhere)
        self.env = fresh_env(self.home)

    def clone(self):
        target = os.path.join(self.tmp, "clone")
        run(["git", "clone", "--quiet", snapshot_repo(), target], self.tmp, self.env)
        return target

    def venv(self, name="venv"):
        path = os.path.join(self.tmp, name)
        run([PYTHON, "-m", "venv", path], self.tmp, self.env)
        return path

    def pip(self, python, *args, env=None):
        return run([python, "-m", "pip"] + list(args), self.tmp, env or self.env)

    def assert_runs(self, command, env, what):
        """``command --version`` and ``python -m openai2 --version`` style check: the version shows."""
        out = run(command + ["--version"], self.elsewhere, env)
        self.assertIn(VERSION, out, "%s --version printed %r" % (what, out))
        return out

    def assert_installed_copy(self, python, env, under):
        """``import openai2`` in ``python`` finds the installed copy below ``under``, with py.typed."""
        out = run([python, "-c", "import os, openai2; print(os.path.realpath(openai2.__file__))"], self.elsewhere, env)
        here = os.path.dirname(out.strip().splitlines()[-1])
        self.assertTrue(here.startswith(os.path.realpath(under) + os.sep), "imported %s, not the install below %s" % (here, under))
        self.assertTrue(os.path.isfile(os.path.join(here, "py.typed")), "py.typed is not installed")


class FromSource(InstallCase):
    def test_pip_install_dot_gives_the_command_and_the_module_in_another_folder(self):
        clone, venv = self.clone(), self.venv()
        self.pip(os.path.join(venv, BIN, "python"), "install", clone)
        active = dict(self.env, PATH=os.path.join(venv, BIN) + os.pathsep + self.env["PATH"], VIRTUAL_ENV=venv)
        self.assert_runs(["openai2"], active, "openai2")
        self.assert_runs(["python", "-m", "openai2"], active, "python -m openai2")
        self.assert_installed_copy("python", active, venv)

    def test_pip_install_user_puts_the_command_in_the_user_base(self):
        if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
            self.skipTest("$PYTHON is a virtual environment's python: pip refuses --user there")
        userbase = os.path.join(self.tmp, "userbase")
        # PIP_BREAK_SYSTEM_PACKAGES: a Debian-style "externally managed" python refuses --user
        # otherwise; the user base is a throw-away folder, so nothing of the system is touched.
        env = dict(self.env, PYTHONUSERBASE=userbase, PIP_BREAK_SYSTEM_PACKAGES="1", PYTHONPATH="")
        clone = self.clone()
        self.pip(PYTHON, "install", "--user", clone, env=env)
        script = os.path.join(userbase, BIN, "openai2")
        self.assertTrue(os.path.isfile(script), "no %s after pip install --user" % script)
        self.assert_runs([script], env, script)
        self.assert_runs([PYTHON, "-m", "openai2"], env, "python -m openai2")
        self.assert_installed_copy(PYTHON, env, userbase)
        self.pip(PYTHON, "uninstall", "--yes", "openai2", env=env)
        self.assertEqual(files_under(userbase), set(), "pip uninstall left files in the user base")

    def test_make_install_installs_for_the_current_user(self):
        if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
            self.skipTest("$PYTHON is a virtual environment's python: make install installs into it")
        if shutil.which("make") is None:
            self.skipTest("make is not installed")
        userbase = os.path.join(self.tmp, "userbase")
        env = dict(self.env, PYTHONUSERBASE=userbase, PIP_BREAK_SYSTEM_PACKAGES="1")
        out = run(["make", "install", "PYTHON=" + PYTHON], self.clone(), env)
        script = os.path.join(userbase, BIN, "openai2")
        self.assertIn("installed: %s" % script, out)
        self.assertIn("is not on PATH", out)
        self.assert_runs([script], env, script)

    def test_python_m_openai2_runs_in_a_clone_without_installing(self):
        clone = self.clone()
        out = run([PYTHON, "-m", "openai2", "--version"], clone, self.env)
        self.assertIn(VERSION, out)
        out = run([PYTHON, "-c", "import openai2, os; print(os.path.realpath(openai2.__file__))"], clone, self.env)
        self.assertTrue(out.strip().startswith(os.path.realpath(clone) + os.sep), out)

    def test_pip_install_git_url_installs_the_repository(self):
        venv = self.venv()
        python = os.path.join(venv, BIN, "python")
        self.pip(python, "install", "git+file://" + snapshot_repo())
        self.assert_runs([os.path.join(venv, BIN, "openai2")], self.env, "openai2")
        self.assert_runs([python, "-m", "openai2"], self.env, "python -m openai2")
        self.assert_installed_copy(python, self.env, venv)

    def test_app_venv_with_only_openai2_like_pipx(self):
        # What `pipx install .` does, without pipx: a venv of its own holding openai2 alone, its
        # console script linked into a bin folder on PATH (pipx: ~/.local/bin).
        venv = self.venv("apps-openai2")
        python = os.path.join(venv, BIN, "python")
        before = set(self.pip(python, "list", "--format=freeze").split())
        self.pip(python, "install", self.clone())
        after = set(self.pip(python, "list", "--format=freeze").split())
        self.assertEqual(after - before, {"openai2==" + VERSION}, "openai2 brought dependencies along")
        links = os.path.join(self.tmp, "user-bin")
        os.makedirs(links)
        os.symlink(os.path.join(venv, BIN, "openai2"), os.path.join(links, "openai2"))
        env = dict(self.env, PATH=links + os.pathsep + self.env["PATH"])
        self.assert_runs(["openai2"], env, "openai2 (linked like pipx)")
        out = run(["openai2", "demo"], self.elsewhere, env)
        self.assertIn("Assistant: 51", out)

    def test_pip_uninstall_leaves_nothing_behind(self):
        venv = self.venv()
        python = os.path.join(venv, BIN, "python")
        wheel, _sdist = built_distributions()
        before, home_before = files_under(venv), files_under(self.home)
        self.pip(python, "install", wheel)
        self.assert_runs([os.path.join(venv, BIN, "openai2")], self.env, "openai2")
        self.assertIn(os.path.join(BIN, "openai2"), files_under(venv) - before)
        self.pip(python, "uninstall", "--yes", "openai2")
        # running pip compiles some of pip's own modules: those are not openai2's
        left = {p for p in files_under(venv) - before if not (p.endswith(".pyc") and "openai2" not in p)}
        self.assertEqual(left, set(), "pip uninstall left files in the venv")
        self.assertEqual(files_under(self.home) - home_before, set(), "installing or `openai2 --version` wrote into HOME")


class Distributions(InstallCase):
    def test_wheel_holds_the_package_license_and_readme_and_nothing_from_tests(self):
        wheel, _sdist = built_distributions()
        with zipfile.ZipFile(wheel) as whl:
            names = whl.namelist()
            info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
            metadata = whl.read(info + "/METADATA").decode("utf-8")
            entry_points = whl.read(info + "/entry_points.txt").decode("utf-8")
        modules = {"openai2/" + n for n in os.listdir(os.path.join(ROOT, "openai2")) if n.endswith(".py")}
        self.assertEqual(modules - set(names), set(), "modules missing from the wheel")
        self.assertIn("openai2/py.typed", names)
        self.assertTrue({info + "/LICENSE", info + "/licenses/LICENSE"} & set(names), "LICENSE missing: %s" % names)
        self.assertEqual([n for n in names if n.startswith("tests/") or "/tests/" in n], [])
        self.assertEqual([n for n in names if not n.startswith(("openai2/", info + "/"))], [])
        headers, _, body = metadata.partition("\n\n")
        self.assertIn("Version: %s\n" % VERSION, headers)
        self.assertIn("Description-Content-Type: text/markdown", headers)
        self.assertNotIn("Requires-Dist:", headers)
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            self.assertEqual(body.strip(), f.read().strip(), "the long description is not README.md")
        self.assertRegex(entry_points, r"openai2\s*=\s*openai2\.cli:main")

    def test_sdist_holds_the_package_license_readme_and_build_files(self):
        _wheel, sdist = built_distributions()
        with tarfile.open(sdist) as tar:
            names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        needed = {"openai2/%s" % n for n in os.listdir(os.path.join(ROOT, "openai2")) if n.endswith(".py")}
        needed |= {"openai2/py.typed", "README.md", "LICENSE", "pyproject.toml", "setup.cfg", "PKG-INFO"}
        self.assertEqual(needed - names, set(), "missing from the sdist")

    def test_wheel_and_sdist_install_into_fresh_venvs(self):
        for dist in built_distributions():
            with self.subTest(dist=os.path.basename(dist)):
                venv = self.venv("venv-" + ("wheel" if dist.endswith(".whl") else "sdist"))
                python = os.path.join(venv, BIN, "python")
                self.pip(python, "install", dist)
                self.assert_runs([os.path.join(venv, BIN, "openai2")], self.env, "openai2")
                self.assert_runs([python, "-m", "openai2"], self.env, "python -m openai2")
                self.assert_installed_copy(python, self.env, venv)

    def test_distributions_pass_twine_check(self):
        # twine check: the metadata is valid and the long description renders on the index
        # (README.md rendered as markdown by readme_renderer); --strict fails on warnings too
        out = run([DEV_PYTHON, "-m", "twine", "check", "--strict"] + list(built_distributions()), self.tmp, self.env)
        self.assertEqual(out.count("PASSED"), 2, out)

    def test_oldest_allowed_setuptools_builds_the_folder_and_the_sdist(self):
        with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
            floor = re.search(r'"setuptools>=([0-9.]+)"', f.read()).group(1)
        if sys.version_info >= (3, 12):
            self.skipTest("setuptools %s needs distutils, which Python 3.12+ does not have" % floor)
        venv = self.venv()
        python = os.path.join(venv, BIN, "python")
        self.pip(python, "install", "setuptools==" + floor, "wheel==0.34.2")
        self.pip(python, "install", "--no-build-isolation", self.clone())
        self.assert_runs([os.path.join(venv, BIN, "openai2")], self.env, "openai2 built by setuptools " + floor)
        self.pip(python, "uninstall", "--yes", "openai2")
        (sdist,) = build_wheel.build(os.path.join(self.tmp, "dist"), ("sdist",), python=python)
        self.pip(python, "install", "--no-build-isolation", sdist)
        self.assert_runs([os.path.join(venv, BIN, "openai2")], self.env, "openai2 from the sdist of setuptools " + floor)


def readme_blocks():
    """{"en"/"zh": [bash blocks]} of README's English quick start and Chinese 安装 section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    en = text.split("<!-- section: quickstart -->", 1)[1].split("<!-- /section: quickstart -->", 1)[0]
    zh = text.split("\n### 安装\n", 1)[1].split("\n### ", 1)[0]
    return {part: re.findall(r"```bash\n(.*?)```", body, re.S) for part, body in (("en", en), ("zh", zh))}


def commands(block):
    """The shell lines of a README block, comments and blank lines dropped."""
    lines = []
    for line in block.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


class ReadmeQuickStart(InstallCase):
    def setUp(self):
        super().setUp()
        blocks = readme_blocks()
        self.assertGreaterEqual(len(blocks["en"]), 2, "README's quick start lost its bash blocks")
        self.blocks = blocks
        # `python3` of the fresh machine is the interpreter under test
        shims = os.path.join(self.tmp, "shims")
        os.makedirs(shims)
        for name in ("python3", "python"):
            os.symlink(PYTHON, os.path.join(shims, name))
        self.env["PATH"] = shims + os.pathsep + self.env["PATH"]

    def sh(self, lines, cwd):
        script = "set -e\n" + "\n".join(lines) + "\n"
        return run(["bash", "-c", script], cwd, self.env, timeout=1200)

    def test_english_and_chinese_quick_starts_give_the_same_commands(self):
        for en, zh in zip(self.blocks["en"], self.blocks["zh"]):
            self.assertEqual(commands(en), commands(zh))
        self.assertEqual(len(self.blocks["en"]), len(self.blocks["zh"]))

    def test_readme_first_commands_work_in_a_fresh_clone(self):
        lines = commands(self.blocks["en"][0])
        self.assertTrue(lines[0].startswith("git clone " + URL_PLACEHOLDER), lines)
        self.assertIn("make test", lines)
        lines = [line.replace(URL_PLACEHOLDER, snapshot_repo()) for line in lines]
        out = self.sh(lines, self.elsewhere)
        self.assertIn("openai2 demo: a conversation", out)
        self.assertIn("Assistant: 51", out)
        self.assertRegex(out, r"\b[1-9][0-9]* passed, 0 failed")

    def test_readme_single_file_commands_build_verify_and_run_it(self):
        block = next(b for b in self.blocks["en"] if "make single-file" in b)
        # the lines before the block's comment line run in the clone, those after it on the "server"
        lines = block.splitlines()
        split = next(i for i, line in enumerate(lines) if line.startswith("#"))
        build_part, server_part = "\n".join(lines[:split]), "\n".join(lines[split + 1:])
        clone = self.clone()
        out = self.sh(commands(build_part), clone)
        checksum = re.search(r"^([0-9a-f]{64})  dist/openai2.py$", out, re.M).group(1)
        server = os.path.join(self.tmp, "server")
        os.makedirs(server)
        shutil.copy2(os.path.join(clone, "dist", "openai2.py"), server)
        out = self.sh([line.replace(CHECKSUM_PLACEHOLDER, checksum) for line in commands(server_part)], server)
        self.assertIn("openai2.py: OK", out)
        self.assertIn("Assistant: 51", out)


class _TimedResult(unittest.TextTestResult):
    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.stream.writeln("    (%.1f s) %s" % (time.monotonic() - self._started, test.id().rsplit(".", 2)[-1]))


def main(argv):
    names = [a for a in argv if not a.startswith("-")]
    loader = unittest.TestLoader()
    module = sys.modules[__name__]
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    _state["tmp"] = tempfile.mkdtemp(prefix="openai2-install-")
    try:
        result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=_TimedResult).run(suite)
    finally:
        shutil.rmtree(_state["tmp"], ignore_errors=True)
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    print("%d passed, %d failed, %d skipped" % (result.testsRun - failed - skipped, failed, skipped))
    return 0 if failed == 0 and result.testsRun > skipped else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
