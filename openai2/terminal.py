"""Terminal: the command line's prompt and screen.

Line editing (:class:`LineEditor`: ``readline`` with a private, size-limited history that never
records a line holding a key, or plain line reading where ``readline`` is missing), the check
that tells such a secret line, colour detection, terminal width, and Ctrl-C deferral
(:class:`DeferInterrupt`) so a save is never cut in half.  Each helper has a fallback where the
OS or the stream lacks the feature.
"""

from __future__ import annotations

import os
import sys

from .common import TYPE_CHECKING
from .files import atomic_write

if TYPE_CHECKING:
    from typing import IO, Any, Iterable

_TERM_WINDOWS = os.name == "nt"


def supports_color(stream: object) -> bool:
    """True when ``stream`` is a terminal that should get ANSI colour (a non-empty ``NO_COLOR``
    turns it off)."""
    # no-color.org: only a non-empty NO_COLOR disables colour
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        if isatty is None or not isatty():
            return False
    except (ValueError, OSError):
        return False
    if _TERM_WINDOWS:  # pragma: no cover
        return "WT_SESSION" in os.environ or "ANSICON" in os.environ or os.environ.get("TERM_PROGRAM") == "vscode"
    return True


def terminal_width(stream: Any = None, default: int = 80) -> int:
    """Columns of the terminal behind ``stream`` (default stdout); ``$COLUMNS`` or ``default``
    when it is not a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        if stream is not None and stream.isatty():
            columns = os.get_terminal_size(stream.fileno()).columns
            if columns > 0:
                return columns
    except (AttributeError, ValueError, OSError):
        pass
    try:
        return max(20, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return default


class DeferInterrupt:
    """``with DeferInterrupt():`` — a Ctrl-C inside the block is held back and raised as
    ``KeyboardInterrupt`` when the block ends, so a save is never cut in half.

    Signals can only be handled in the main thread; elsewhere (or where ``signal`` is missing)
    this does nothing.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: object) -> None:
        self.interrupted = True

    def __enter__(self) -> DeferInterrupt:
        try:
            import signal

            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        except (ImportError, ValueError, AttributeError, OSError):
            self._installed = False
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._installed:
            import signal

            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        if self.interrupted and exc_type is None:
            raise KeyboardInterrupt


def _term_default_secret_check(line: str) -> bool:
    low = line.lower()
    if any(word in low for word in ("api_key", "apikey", "api-key", "authorization", "bearer ")):
        return True
    # A token that looks like an OpenAI-style key: sk-… with at least 16 more characters.
    for token in line.replace("=", " ").replace(":", " ").replace('"', " ").replace("'", " ").split():
        if token.startswith("sk-") and len(token) >= 19:
            return True
    return False


class LineEditor:
    """Reads the interactive prompt's lines.

    On a terminal with the standard ``readline`` module: line editing plus a history kept in
    ``history_path`` (written 0600 and atomically, the last ``max_lines`` lines only).  A line
    holding a secret (any of ``secrets``, a key-shaped ``sk-…`` token, or words like ``api_key``)
    is removed from the history as soon as it is entered, so it is never recorded.
    Elsewhere (no terminal, no ``readline``): prompts written to ``stdout``, lines read from
    ``stdin``, no history.

    :param stdin: the stream lines come from (default ``sys.stdin``)
    :param stdout: the stream prompts go to (default ``sys.stdout``)
    :param history_path: the history file (None: keep none)
    :param secrets: strings that must never be recorded (API keys)
    :param use_readline: False forces plain line reading
    """

    def __init__(
        self,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        *,
        history_path: str | None = None,
        max_lines: int = 1000,
        secrets: Iterable[str] = (),
        use_readline: bool = True,
    ) -> None:
        self.input = sys.stdin if stdin is None else stdin
        self.output = sys.stdout if stdout is None else stdout
        self.history_path = history_path
        self.max_lines = max_lines
        self.secrets = [s for s in secrets if s]
        self.readline: Any = None
        self.new_lines = 0
        if (
            use_readline
            and self.input is sys.stdin
            and self.output is sys.stdout
            and _term_isatty(self.input)
            and _term_isatty(self.output)
        ):
            try:
                import readline
            except ImportError:
                readline = None  # type: ignore[assignment]
            self.readline = readline
        if self.readline is not None:
            try:
                self.readline.set_history_length(max_lines)
                if history_path and os.path.isfile(history_path):
                    self.readline.read_history_file(history_path)
            except Exception:  # a history file readline cannot parse is no reason to stop
                self.new_lines = 0

    def is_secret(self, line: str) -> bool:
        """True when ``line`` must not be recorded."""
        return any(s in line for s in self.secrets) or _term_default_secret_check(line)

    def read(self, prompt: str) -> str:
        """Show ``prompt`` and return one line (without its newline).

        :raises EOFError: end of input (Ctrl-D)
        :raises KeyboardInterrupt: Ctrl-C
        """
        if self.readline is None:
            self.output.write(prompt)
            self.output.flush()
            line = self.input.readline()
            if not line:
                raise EOFError
            return line[:-1] if line.endswith("\n") else line
        try:
            line = input(prompt)
        except (EOFError, KeyboardInterrupt):
            raise
        except Exception:  # e.g. PyPy's pyrepl on a terminal it cannot drive
            self.readline = None  # plain line reading from now on
            return self.read(prompt)
        if line.strip():
            if self.is_secret(line):
                self._forget_last()
            else:
                self.new_lines += 1
        return line

    def _forget_last(self) -> None:
        rl = self.readline
        try:
            length = rl.get_current_history_length()
            if length > 0:
                rl.remove_history_item(length - 1)
        except Exception:  # readline look-alikes (PyPy's pyrepl) raise their own errors
            return  # save() filters secret lines out again, so nothing reaches the file

    def save(self) -> bool:
        """Write the history file (0600, atomically) if lines were entered; True if written.

        The folder must exist (the caller creates it, as the one deciding paths).
        """
        rl = self.readline
        if rl is None or not self.history_path or not self.new_lines:
            return False
        lines = []
        try:
            for i in range(1, rl.get_current_history_length() + 1):
                item = rl.get_history_item(i)
                if item and not self.is_secret(item):
                    lines.append(item)
        except Exception:  # as in _forget_last: keep no history rather than fail
            return False
        lines = lines[-self.max_lines :]
        atomic_write(self.history_path, ("\n".join(lines) + "\n").encode("utf-8", "replace"), private=True)
        self.new_lines = 0
        return True


def _term_isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False
