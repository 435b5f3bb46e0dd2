"""The command line run in-process, in memory: ``run_main`` owns the one call of
``openai2.cli.main`` the CLI test modules share — stdin, stdout and stderr in memory, the
transport (and optionally the retry pause) injected — and, given the test's key as ``secret``,
the check that the key reached neither stdout nor stderr::

    class MyTest(TempHomeCase):
        def run_cli(self, *argv, stdin=""):     # the module's own options added, nothing else
            return run_main(list(argv) + ["--api-key", KEY], transport=self.transport,
                            stdin=stdin, sleep=no_sleep, secret=KEY)

        def test_x(self):
            code, out, err = self.run_cli("chat", "hi")

``stdin`` is text, or bytes read as UTF-8 (what a redirected file gives ``main``).  ``sleep``
is ``main``'s own (``None``: the real pause; tests/support/serving.py's ``no_sleep``: none).
"""
import io

from openai2.cli import main


def run_main(argv, *, transport, stdin="", sleep=None, secret=None):
    """``main(argv)`` with ``stdin`` (str, or bytes as UTF-8) and stdout/stderr in memory;
    returns ``(code, out, err)``.  With ``secret``, raises AssertionError (a test failure) if
    it appears in either stream; the message shows the stream with the secret replaced."""
    stdout, stderr = io.StringIO(), io.StringIO()
    if isinstance(stdin, bytes):
        source = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    else:
        source = io.StringIO(stdin)
    code = main(list(argv), stdin=source, stdout=stdout, stderr=stderr, sleep=sleep, transport=transport)
    out, err = stdout.getvalue(), stderr.getvalue()
    if secret:
        for name, text in (("stdout", out), ("stderr", err)):
            if secret in text:
                raise AssertionError("the key reached %s unmasked:\n%s" % (name, text.replace(secret, "<KEY>")))
    return code, out, err
