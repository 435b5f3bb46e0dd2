"""The command line: ``openai2`` / ``python -m openai2`` — keys, resumable chats, sessions, a REPL.

Commands: ``add_apikey [KEY]``, ``read_apikey``, ``clear_apikey``, ``chat [TEXT]``, ``newchat
[TEXT]``, ``sessions list|show|delete|export``, ``logs``, ``roles list|show|add|edit|delete``,
``serve``, ``demo``.  ``chat`` also takes a role (``--role``), attachments (``-a``), a question
written in ``$VISUAL``/``$EDITOR`` (``-e``) and a logged conversation to go on with
(``--continue ID`` / ``-c``, into a new session).  Only this module writes to the
terminal (through :class:`_CliOutput`); only :mod:`store` decides where files go.

Exit status: 0 ok, 1 API or network error, 2 usage error (argparse's too), 3 local storage
problem (a session in use, a corrupted file, a file that cannot be written), 130 interrupted.

Heavy modules (argparse, json, getpass, readline, signal, traceback) are imported inside the
functions that need them, so ``openai2 --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
import time

from .chat import Chat
from .common import TYPE_CHECKING, __version__, mask_key, redact
from .errors import APIConnectionError, APIError, APIStatusError, ContextBudgetError, ContextLengthError, OpenAIError
from .files import atomic_write
from .history import format_round
from .keypool import AKPool
from .logbook import Logbook, LogbookError, logbook_since, logbook_unavailable
from .store import (
    DEFAULT_SESSION,
    SessionConflictError,
    SessionLock,
    SessionLockedError,
    Store,
    StoreError,
    check_role_name,
    check_session_name,
)
from .terminal import DeferInterrupt, LineEditor, supports_color, terminal_width
from .tools import ToolSet

if TYPE_CHECKING:
    from typing import IO, Any, Sequence

    from .tools import ToolCall

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 130
DEFAULT_MODEL = "gpt-4o-mini"

_CLI_STYLES = {
    "dim": "\033[2m",
    "bold": "\033[1m",
    "prompt": "\033[1;32m",
    "assistant": "\033[1;36m",
    "error": "\033[1;31m",
    "note": "\033[33m",
}
_CLI_RESET = "\033[0m"

_CLI_SLASH_HELP = """\
Commands (type them at the prompt):
  /help                 this list
  /exit, /quit          leave (also: quit, Ctrl-D)
  /new                  archive this conversation and start a new one (also: new)
  /undo [N]             remove the last N rounds (default 1) and show the round now last
  /retry                remove the last round and send its question again
  /system [TEXT]        show or set the system prompt (kept pinned at the start)
  /model [NAME]         show or change the model
  /set [NAME [VALUE]]   show parameters, set one (VALUE parsed as JSON when possible,
                        e.g. /set temperature 0.3), or unset it (no VALUE)
  /pin [INDEX...]       show pinned messages, or pin some (trimming never drops them)
  /unpin [INDEX...]     unpin messages (no INDEX: all)
  /history              the conversation, with message indexes (* = pinned)
  /save FILE            write the conversation to FILE (an archive Chat.load reads)
  /load FILE            append the messages of an archive FILE
  /limit [N]            show or set how many messages are kept (MsgMaxCount; 0: no limit)
  /tokens               what the next request sends: its tokens, the budget, messages sent
  /usage                tokens of the last answer and of this run
  /role [NAME]          show the role in use, or use one (its system prompt and parameters)
  /attach [FILE...]     attach text files, images or a folder to the next message; alone: list
  /detach               drop the attachments not sent yet
  /edit [TEXT]          write the next message in $VISUAL/$EDITOR (empty file: nothing sent)
  /tools                the tools the model may call (--functions FILE.py)
A block between lines of three double quotes (\"\"\") is sent as one multi-line message.
Start a message with // to send a line that begins with a slash."""


class _CliUsageError(Exception):
    """A mistake in the command line or a command: exit status 2."""


class _CliOutput:
    """Every byte the CLI shows goes through here: colour only on terminals (``NO_COLOR``
    honoured), keys masked, and a record of whether the cursor is at the start of a line."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out = out
        self.err = err
        self.color_out = supports_color(out)
        self.color_err = supports_color(err)
        self.secrets: list[str] = []
        #: keys found on the command line, masked in argparse's messages
        self.argv_secrets: list[str] = []
        self._fresh = {id(out): True, id(err): True}
        self._held = {False: "", True: ""}  # streamed text held back: it may begin a key
        self._held_style: dict[bool, str | None] = {False: None, True: None}

    def _style(self, text: str, style: str | None, stream: IO[str]) -> str:
        colour = self.color_err if stream is self.err else self.color_out
        if style and colour and text:
            return _CLI_STYLES[style] + text + _CLI_RESET
        return text

    def write(self, text: str, style: str | None = None, *, err: bool = False) -> None:
        """Write ``text`` (keys masked) and flush."""
        stream = self.err if err else self.out
        if not text:
            return
        if self.secrets:
            text = redact(text, self.secrets)
        styled = self._style(text, style, stream)
        try:
            stream.write(styled)
        except UnicodeEncodeError:
            # a character the terminal's encoding cannot show (LANG=C, PYTHONIOENCODING=ascii):
            # shown as "?" rather than ending the run (the session file keeps the real text)
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write(styled.encode(encoding, "replace").decode(encoding, "replace"))
        stream.flush()
        self._fresh[id(stream)] = text.endswith("\n")

    def piece(self, text: str, style: str | None = None, *, err: bool = False) -> None:
        """Write one piece of a streamed text.  A key split across pieces must still be masked,
        so the end of the text that could be the start of a key is held back until the next
        piece (or :meth:`flush_pieces`) shows whether it is one."""
        pending = self._held[err] + text
        hold = 0
        for secret in self.secrets:
            for k in range(min(len(secret) - 1, len(pending)), hold, -1):
                if pending.endswith(secret[:k]):
                    hold = k
                    break
        self._held[err] = pending[len(pending) - hold :] if hold else ""
        self._held_style[err] = style
        self.write(pending[: len(pending) - hold], style, err=err)

    def flush_pieces(self, *, err: bool = False) -> None:
        """Write what :meth:`piece` held back (the streamed text has ended)."""
        held, self._held[err] = self._held[err], ""
        self.write(held, self._held_style[err], err=err)

    def line(self, text: str = "", style: str | None = None, *, err: bool = False) -> None:
        """Write ``text`` and a newline."""
        self.write(text, style, err=err)
        self.write("\n", err=err)

    def end_line(self) -> None:
        """Finish a partly written line on stdout (after a streamed answer)."""
        if not self._fresh.get(id(self.out), True):
            self.write("\n")

    def error(self, message: str) -> None:
        """``openai2: error: <one line>`` on stderr."""
        self.end_line()
        one = " ".join(str(message).split())
        self.line("openai2: error: " + one, "error", err=True)

    def note(self, message: str) -> None:
        """An informational line on stderr (kept out of stdout so scripts get only answers)."""
        self.line(message, "note", err=True)


def _cli_argv_secrets(argv: Sequence[str]) -> list[str]:
    """Keys on the command line: ``--api-key`` values and key-shaped ``sk-…`` tokens, longest
    first (so a key containing another is masked whole)."""
    found: list[str] = []
    take_next = False
    for token in argv:
        if take_next:
            found.append(token.strip())
            take_next = False
            continue
        name, eq, value = token.partition("=")
        if len(name) > 5 and "--api-key".startswith(name):  # argparse accepts unique prefixes
            if eq:
                found.append(value.strip())
            else:
                take_next = True
            continue
        for word in token.replace("=", " ").split():
            if word.startswith("sk-") and len(word) >= 11:
                found.append(word)
    return sorted({k for k in found if k}, key=len, reverse=True)


def _cli_decode(raw: bytes, what: str) -> tuple[str, str | None]:
    """``raw`` as UTF-8 text (a BOM is dropped), and a note when it was not UTF-8: the invalid
    bytes are replaced by U+FFFD (a diff of a file in another encoding is still worth sending)
    and the note says how many, where the first was, and how to convert the input."""
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        first = exc.start
    text = raw.decode("utf-8-sig", "replace")
    replaced = text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")  # minus real U+FFFD characters
    return text, (
        "openai2: note: %s is not UTF-8 text: %d invalid byte sequence%s (the first at byte %d) "
        "replaced by U+FFFD; to send the real characters, convert the text to UTF-8 first "
        "(e.g. `iconv -f GBK -t UTF-8 FILE | openai2 chat`)" % (what, replaced, "" if replaced == 1 else "s", first)
    )


def _cli_clean_text(text: str, what: str) -> tuple[str, str | None]:
    """``text`` with lone surrogates (Python's stand-ins for non-UTF-8 bytes of argv or of a
    stdin decoded with ``surrogateescape``) turned back into bytes and decoded as
    :func:`_cli_decode` does, so a request body can always be encoded."""
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (e.g. from a JSON "\\ud800")
        raw = text.encode("utf-8", "surrogatepass")
    return _cli_decode(raw, what)


def _cli_read_stdin(stream: Any, what: str = "stdin") -> tuple[str, str | None]:
    """All of ``stream``, read as bytes when it has a ``buffer`` (so the terminal's locale
    cannot break it), as UTF-8; see :func:`_cli_decode`."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return _cli_decode(buffer.read(), what)
    return _cli_clean_text(stream.read(), what)


def _cli_isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# argparse
# ---------------------------------------------------------------------------------------------


def _cli_build_parser(out: _CliOutput) -> Any:
    import argparse

    class _CliParser(argparse.ArgumentParser):
        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                out.write(redact(message, out.argv_secrets), err=file is sys.stderr)

        def error(self, message: str) -> Any:
            """One line, ``openai2: error: ...`` (keys masked), then exit status 2."""
            one = " ".join(redact(message, out.argv_secrets).split())
            self.exit(EXIT_USAGE, "openai2: error: %s (see `%s --help`)\n" % (one, self.prog))

    common = _CliParser(add_help=False)
    S = argparse.SUPPRESS
    g = common.add_argument_group("options for chat, newchat and demo")
    g.add_argument("--model", default=S, help="model name (default: $OPENAI2_MODEL or %s)" % DEFAULT_MODEL)
    g.add_argument("--system", default=S, metavar="TEXT", help="system prompt (pinned at the start)")
    g.add_argument(
        "--base-url",
        default=S,
        metavar="URL",
        help="API base URL (default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    g.add_argument("--api-key", default=S, metavar="KEY", help="API key (wins over $OPENAI_API_KEY and the key file)")
    g.add_argument("--temperature", type=float, default=S, metavar="T", help="sampling temperature")
    g.add_argument("--max-tokens", type=int, default=S, metavar="N", help="limit on the answer's tokens")
    g.add_argument(
        "--timeout", type=float, default=S, metavar="SECONDS", help="connect and read timeout (default 10 and 600)"
    )
    g.add_argument(
        "--proxy",
        default=S,
        metavar="URL",
        help="http://, https://, socks5:// or socks5h:// proxy (default: environment)",
    )
    g.add_argument("--ca-file", default=S, metavar="PEM", help="trust these CA certificates (corporate proxies)")
    g.add_argument(
        "--max-messages",
        type=int,
        default=S,
        metavar="N",
        help="keep at most N messages in the history (MsgMaxCount; pinned ones stay)",
    )
    g.add_argument(
        "--max-history-tokens",
        type=int,
        default=S,
        metavar="N",
        help="send at most N tokens of the conversation (the session keeps all of it); default: learn the "
        "model's window from its first refusal; 0: no limit",
    )
    g.add_argument(
        "--summarize",
        action="store_true",
        default=S,
        help="send a summary of what the token budget leaves out (one extra request; kept in the session file)",
    )
    g.add_argument(
        "--session", default=S, metavar="NAME", help="named conversation to use (default: %s)" % DEFAULT_SESSION
    )
    g.add_argument(
        "--no-stream", action="store_true", default=S, help="wait for the whole answer instead of streaming it"
    )
    g.add_argument("--json", action="store_true", default=S, help="print the full response as JSON (one question only)")
    g.add_argument(
        "--no-save",
        action="store_true",
        default=S,
        help="use the saved conversation but save nothing (no session file, no lock)",
    )
    g.add_argument("--hide-reasoning", action="store_true", default=S, help="do not show reasoning text on stderr")
    g.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        default=S,
        help="run the interactive prompt even when stdin is not a terminal",
    )

    _cli_add_input_options(common, S)
    _cli_add_tool_options(common, S)

    parser = _CliParser(
        prog="openai2",
        parents=[common],
        description="Chat with OpenAI-compatible APIs from the terminal (standard library only).",
        epilog=(
            "Keys: --api-key, then $OPENAI_API_KEY, then the keys stored by add_apikey (a pool). "
            "Files live in $OPENAI2_HOME (default: ~/.config/openai2, %APPDATA%\\openai2 on Windows). "
            "Exit status: 0 ok, 1 API error, 2 usage error, 3 storage problem, 130 interrupted. "
            "OPENAI2_DEBUG=1 shows tracebacks. Without a command, runs chat."
        ),
    )
    parser.add_argument("--version", action="version", version="openai2 %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, aliases: Sequence[str] = ()) -> Any:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text, aliases=list(aliases))

    p = add("chat", "continue the saved conversation (TEXT or stdin: answer once and exit)")
    p.add_argument("text", nargs="*", metavar="TEXT", help="a question to answer once")
    p = add("newchat", "archive the saved conversation and start a new one", ["new-chat"])
    p.add_argument("text", nargs="*", metavar="TEXT", help="a question to answer once")
    p = add(
        "add_apikey", "store an API key (argument, hidden prompt, or stdin); several keys form a pool", ["add-apikey"]
    )
    p.add_argument("key", nargs="?", metavar="KEY", help="the key (omit it to keep it out of shell history)")
    add("read_apikey", "show the stored keys (masked) and where the active key comes from", ["read-apikey"])
    add("clear_apikey", "remove the stored keys", ["clear-apikey"])
    add("demo", "a short offline conversation with a built-in scripted model (no key needed)")
    p = add("serve", "run a local OpenAI-compatible gateway (key pool, failover, proxy) for other programs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--token", metavar="TOKEN", help="clients must send Authorization: Bearer TOKEN (or api-key)")
    p.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="URL[=ENVVAR]",
        help="base URL tried when the upstream fails (connection error, 5xx); =ENVVAR: its own keys from that variable",
    )
    p.add_argument(
        "--alias", action="append", default=[], metavar="NAME=MODEL", help="a model name sent upstream as MODEL"
    )
    p.add_argument(
        "--cors", metavar="ORIGIN", help="send CORS headers allowing this origin (default: none; '*' needs --token)"
    )
    p.add_argument("--no-ui", action="store_true", help="no page at / (404)")
    p.add_argument("--quiet", action="store_true", help="no access log on stderr")
    p.add_argument(
        "--max-body", type=_cli_parse_size, metavar="SIZE", help="largest request body (default 16M; larger: 413)"
    )
    p.add_argument(
        "--max-workers", type=int, metavar="N", help="requests served at once (default 64; more wait, then 503)"
    )
    p.add_argument(
        "--organization", metavar="ORG", help="OpenAI-Organization for the upstream (default $OPENAI_ORG_ID)"
    )
    p.add_argument("--project", metavar="ID", help="OpenAI-Project for the upstream (default $OPENAI_PROJECT_ID)")
    p.add_argument(
        "--forward-org-headers",
        action="store_true",
        help="forward a client's own OpenAI-Organization/OpenAI-Project (default: dropped)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="SECONDS",
        help="on Ctrl-C/SIGTERM, how long open requests may finish (default 5)",
    )
    p = add("sessions", "list, show, delete or export named conversations")
    ss = p.add_subparsers(dest="action", metavar="ACTION")
    ss.required = True
    ss.add_parser("list", help="list saved conversations")
    q = ss.add_parser("show", help="print a conversation (default: --session or %s)" % DEFAULT_SESSION)
    q.add_argument("name", nargs="?", metavar="NAME")
    q.add_argument("--session", default=S, metavar="NAME", help=argparse.SUPPRESS)
    q = ss.add_parser("delete", help="delete a conversation")
    q.add_argument("name", metavar="NAME")
    q = ss.add_parser(
        "export", help="export a conversation as JSON or Markdown (default: --session or %s)" % DEFAULT_SESSION
    )
    q.add_argument("name", nargs="?", metavar="NAME")
    q.add_argument("--session", default=S, metavar="NAME", help=argparse.SUPPRESS)
    q.add_argument("--format", choices=("json", "markdown", "md"), default="json")
    q.add_argument("-o", "--output", metavar="FILE", help="write to FILE (a regular file; - is stdout), not stdout")
    p = add("logs", "list, search and show the logged exchanges; turn logging on or off")
    p.add_argument(
        "action", nargs="?", choices=("show", "on", "off", "status", "path"), metavar="show ID|on|off|status|path"
    )
    p.add_argument("id", nargs="?", type=int, metavar="ID", help=argparse.SUPPRESS)
    p.add_argument("-n", type=int, default=10, metavar="N", help="how many exchanges (default 10, newest last)")
    p.add_argument("-q", "--query", metavar="TEXT", help="only exchanges whose question or answer contains TEXT")
    p.add_argument("--since", metavar="AGE_OR_DATE", help="only exchanges since 30m, 12h, 7d, 2w ago or a date")
    p.add_argument("-r", "--response", action="store_true", help="print only the last answer (for scripts)")
    _cli_add_roles_parser(add)
    return parser


def _cli_concise_schema(spec: str) -> dict[str, Any]:
    """llm's concise schema syntax as a JSON Schema object: fields separated by commas or new
    lines, each ``name [int|float|bool|str][: description]`` (``str`` when no type is given),
    every field required: ``'name, age int, bio: one sentence'``.

    :raises _CliUsageError: an empty spec, a field without a name, an unknown type, a repeated name
    """
    kinds = {
        "str": "string",
        "string": "string",
        "int": "integer",
        "integer": "integer",
        "float": "number",
        "number": "number",
        "bool": "boolean",
        "boolean": "boolean",
    }
    properties: dict[str, Any] = {}
    separator = "\n" if "\n" in spec else ","
    for raw in spec.split(separator):
        field = raw.strip()
        if not field:
            continue
        head, colon, description = field.partition(":")
        words = head.split()
        if not words or len(words) > 2:
            raise _CliUsageError(
                "--schema: %r is not a field: write `name`, `name type` or `name type: description` "
                "(types: str, int, float, bool)" % field
            )
        name = words[0]
        kind = kinds.get(words[1].lower()) if len(words) == 2 else "string"
        if kind is None:
            raise _CliUsageError("--schema: unknown type %r for %s (use str, int, float or bool)" % (words[1], name))
        if name in properties:
            raise _CliUsageError("--schema: the field %s is given twice" % name)
        prop: dict[str, Any] = {"type": kind}
        if colon and description.strip():
            prop["description"] = " ".join(description.split())
        properties[name] = prop
    if not properties:
        raise _CliUsageError("--schema needs at least one field, e.g. --schema 'name, age int'")
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _cli_schema(spec: str, multi: bool) -> dict[str, Any]:
    """``--schema SPEC``: a JSON Schema file, inline JSON, or llm's concise syntax; ``--schema-multi``
    asks for a list of such items."""
    import json

    text = spec.strip()
    if os.path.isfile(spec):
        try:
            with open(spec, "rb") as handle:
                data = handle.read().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise _CliUsageError("--schema %s: %s" % (spec, getattr(exc, "strerror", None) or exc)) from None
        try:
            schema = json.loads(data)
        except ValueError as exc:
            raise _CliUsageError("--schema %s is not JSON: %s" % (spec, exc)) from None
    elif text.startswith("{"):
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise _CliUsageError("--schema: the inline JSON Schema is not JSON: %s" % exc) from None
    else:
        schema = _cli_concise_schema(text)
    if not isinstance(schema, dict):
        raise _CliUsageError("--schema must be a JSON Schema object, not %s" % type(schema).__name__)
    return {"type": "array", "items": schema} if multi else schema


def _cli_parse_once(ctx: _CliContext, conv: _CliConversation, question: Any, schema: dict[str, Any]) -> int:
    """``chat --schema``: the answer parsed into the schema, printed as JSON (nothing else on stdout)."""
    import json

    chat = conv.chat
    ctx.tokens.before(chat)
    before, started, history = chat.last_request, time.monotonic(), chat.fetch_messages()
    try:
        try:
            value = chat.parse(question, schema)
        except (TypeError, ValueError) as exc:  # a schema the validator cannot check
            raise _CliUsageError(str(exc)) from None
        ctx.out.line(json.dumps(value, ensure_ascii=False, indent=2))
        conv.save()
    except BaseException as exc:
        conv.log(question, history, before, started, exc)
        raise
    conv.log(question, history, before, started, None)
    return EXIT_OK


def _cli_add_tool_options(common: Any, S: Any) -> None:
    """chat's tool options: --functions and --yes."""
    g = common.add_argument_group("tools: let the model call Python functions (chat, newchat)")
    g.add_argument(
        "--functions",
        action="append",
        default=S,
        metavar="FILE.py|CODE",
        help="every public function defined in FILE.py (or in this Python code) becomes a tool; repeatable",
    )
    g.add_argument("--yes", action="store_true", default=S, help="run the model's tool calls without asking")
    g.add_argument(
        "--schema",
        default=S,
        metavar="SPEC",
        help="print the answer as JSON matching SPEC: a JSON Schema file, inline JSON, or fields like "
        "'name, age int, bio: one sentence'",
    )
    g.add_argument("--schema-multi", action="store_true", default=S, help="with --schema: a list of such items")


def _cli_add_input_options(common: Any, S: Any) -> None:
    """chat's roles, attachments, editor and --continue options."""
    g = common.add_argument_group("roles, attachments, the editor and the log (chat, newchat)")
    g.add_argument("--role", default=S, metavar="NAME", help="use a role: its system prompt and parameters")
    g.add_argument(
        "-a",
        "--attach",
        action="append",
        default=S,
        metavar="FILE",
        help="attach a text file (fenced, with its name), an image (PNG, JPEG, GIF, WebP), a folder's "
        "text files, or - (stdin); repeatable",
    )
    g.add_argument(
        "--max-attach",
        type=_cli_parse_size,
        default=S,
        metavar="SIZE",
        help="largest text file, and a folder's total, that -a and /attach take (default 256k; e.g. 2M)",
    )
    g.add_argument(
        "-e", "--edit", action="store_true", default=S, help="write the question in $VISUAL/$EDITOR, then send it"
    )
    g.add_argument(
        "--continue",
        dest="continue_id",
        type=int,
        default=S,
        metavar="ID",
        help="go on with the conversation of logged exchange ID (see `openai2 logs`) in a new session",
    )
    g.add_argument(
        "-c", dest="continue_last", action="store_true", default=S, help="--continue with the latest logged exchange"
    )


def _cli_add_roles_parser(add: Any) -> None:
    p = add("roles", "list, show, add, edit or delete roles (saved system prompts with parameters)")
    rs = p.add_subparsers(dest="action", metavar="ACTION")
    rs.required = True
    rs.add_parser("list", help="the roles (built-in ones marked)")
    q = rs.add_parser("show", help="a role's system prompt and parameters")
    q.add_argument("name", metavar="NAME")
    q = rs.add_parser("add", help="save a role (the same name as a built-in overrides it)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--system", required=True, metavar="TEXT", help="the system prompt (- reads it from stdin)")
    q.add_argument("--model", metavar="M", help="the model this role uses")
    q.add_argument("--temperature", type=float, metavar="T", help="its sampling temperature")
    q.add_argument("--max-tokens", type=int, metavar="N", help="its limit on the answer's tokens")
    q = rs.add_parser("edit", help="edit a role's system prompt in $VISUAL/$EDITOR")
    q.add_argument("name", metavar="NAME")
    q = rs.add_parser("delete", help="delete your role (a built-in of that name comes back)")
    q.add_argument("name", metavar="NAME")


# ---------------------------------------------------------------------------------------------
# Context: options, keys, the chat
# ---------------------------------------------------------------------------------------------


class _CliContext:
    def __init__(
        self, args: Any, out: _CliOutput, stdin: IO[str], store: Store, sleep: Any = None, transport: Any = None
    ) -> None:
        self.args = args
        self.out = out
        self.stdin = stdin
        self.store = store
        self.sleep = sleep  # the client's pause between retries (None: the real one)
        self.transport = transport  # the client's transport (None: HTTP; tests: MemoryTransport)
        self.tools: _CliTools | None = None  # --functions: the tools, how calls are asked and shown
        self.stdin_is_question = False  # the one-shot question was read from stdin
        self.key_used: Any = None  # what make_chat() used: a key, or a description of a pool
        self._logbook: Logbook | None = None
        self._log_failed = False
        self.tokens = _CliTokens(self)

    def logbook(self) -> Logbook | None:
        """The exchange log, or None when it is off (``OPENAI2_LOG=0``, ``logs off``, no
        sqlite3, or it failed earlier in this run)."""
        if self._log_failed or os.environ.get("OPENAI2_LOG", "").strip() in ("0", "off", "false", "no"):
            return None
        if self._logbook is None:
            if os.path.lexists(self.store.logs_off_path) or logbook_unavailable():
                return None
            self._logbook = Logbook(self.store.logs_path)
        return self._logbook

    def log_failed(self, exc: BaseException) -> None:
        """Warn once that the log failed; logging is off for the rest of this run."""
        self._log_failed = True
        self.out.end_line()
        self.out.note("openai2: warning: the exchange was not logged: %s" % _cli_error_text(exc))

    def close_logbook(self) -> None:
        if self._logbook is not None:
            self._logbook.close()

    def opt(self, name: str, default: Any = None) -> Any:
        return getattr(self.args, name, default)

    def clean(self, text: str, what: str) -> str:
        """``text`` safe to send (see :func:`_cli_clean_text`), with the note on stderr if needed."""
        text, note = _cli_clean_text(text, what)
        if note:
            self.out.note(note)
        return text

    def session_name(self, explicit: str | None = None) -> str:
        try:
            return check_session_name(explicit or self.opt("session") or DEFAULT_SESSION)
        except StoreError as exc:
            raise _CliUsageError(str(exc)) from None

    def resolve_key(self) -> tuple[str | AKPool | None, str]:
        """The key to use and a description of where it comes from (precedence: flag, env, file)."""
        stored: list[str] = []
        try:
            stored = self.store.load_keys()
        except StoreError as exc:
            if self.opt("api_key") is None and not os.environ.get("OPENAI_API_KEY", "").strip():
                raise
            self.out.note("openai2: note: %s" % exc)
        self.out.secrets.extend(stored)
        flag = self.opt("api_key")
        env = os.environ.get("OPENAI_API_KEY", "").strip()
        if env:
            self.out.secrets.append(env)
        if flag is not None:
            flag = flag.strip()
            if not flag:
                raise _CliUsageError("--api-key is empty")
            self.out.secrets.append(flag)
            return flag, "the --api-key option"
        if env:
            return env, "the OPENAI_API_KEY environment variable"
        if len(stored) == 1:
            return stored[0], "the key file %s" % self.store.keys_path
        if stored:
            return AKPool(stored), "the key file %s (%d keys, used in turn)" % (self.store.keys_path, len(stored))
        return None, "nowhere (no --api-key, no OPENAI_API_KEY, no stored key)"

    def mask_known_keys(self) -> None:
        """Mask every key this run knows (the ``--api-key`` option, ``OPENAI_API_KEY``, the key
        file) in all output, for commands that use no key but print conversations, where a
        server may have echoed one (``sessions show`` / ``export``)."""
        try:
            self.out.secrets.extend(self.store.load_keys())
        except StoreError as exc:
            self.out.note("openai2: note: %s" % exc)
        for value in (os.environ.get("OPENAI_API_KEY", ""), self.opt("api_key") or ""):
            if value.strip():
                self.out.secrets.append(value.strip())

    def make_chat(self) -> Chat:
        key, _ = self.resolve_key()
        model = self.opt("model") or os.environ.get("OPENAI2_MODEL") or DEFAULT_MODEL
        params: dict[str, Any] = {"model": self.clean(model, "the model name")}
        if self.opt("temperature") is not None:
            params["temperature"] = self.opt("temperature")
        if self.opt("max_tokens") is not None:
            params["max_tokens"] = self.opt("max_tokens")
        options: dict[str, Any] = {}
        for name in ("base_url", "timeout", "proxy", "ca_file"):
            if self.opt(name) is not None:
                options[name] = self.opt(name)
        if self.sleep is not None:
            options["sleep"] = self.sleep
        if self.transport is not None:
            options["transport"] = self.transport
        self.key_used = "a pool of %d keys" % len(key) if isinstance(key, AKPool) else key
        specs = self.opt("functions") or []
        if specs:
            self.tools = _CliTools(self, _cli_load_functions(specs), yes=bool(self.opt("yes", False)))
            params.update(self.tools.chat_options())
        budget = self.opt("max_history_tokens")
        if budget is not None and budget < 0:
            raise _CliUsageError("--max-history-tokens must be a number of tokens (0: no limit), not %d" % budget)
        try:
            # "" (not None) when there is no key: OPENAI_API_KEY was already considered above.
            # The session keeps every message: the token budget trims only what is sent.
            return Chat(
                key if key is not None else "",
                MsgMaxCount=self.opt("max_messages"),
                MsgMaxTokens="auto" if budget is None else (budget or None),
                trim_history=False,
                summarize=bool(self.opt("summarize", False)),
                **options,
                **params,
            )
        except (ValueError, TypeError) as exc:
            raise _CliUsageError(str(exc)) from None


#: a smaller window read from tokens.json is not believed (every request would be refused up front)
_CLI_MIN_WINDOW = 256


class _CliTokens:
    """What the command line keeps of each server's token counts between runs (the store's
    ``tokens.json``, per base URL and model): the window learned from a refusal and the
    calibration, put into the Chat's client before a model's first request and saved after a
    request that taught something new.  A cache: a problem with it is one note, never an error."""

    def __init__(self, ctx: _CliContext) -> None:
        self.ctx = ctx
        self._known: dict[str, tuple[Any, ...]] = {}  # model -> what the file holds (as last seen)
        self._warned = False

    def _problem(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            self.ctx.out.note(
                "openai2: note: what was learned of the token counts is not kept: %s" % _cli_error_text(exc)
            )

    def before(self, chat: Chat) -> None:
        """Give ``chat``'s client what earlier runs learned of its model (once per model)."""
        from .tokens import Calibration

        model = str(chat.params.get("model") or "")
        if model in self._known:
            return
        self._known[model] = (None, None, 0)
        try:
            state = self.ctx.store.load_token_state(chat.client.base_url, model)
        except (StoreError, OSError) as exc:
            self._problem(exc)
            return
        window, calibration = state.get("window"), state.get("calibration")
        if isinstance(window, int) and window >= _CLI_MIN_WINDOW:
            chat.client.learn_window(model, window)
        elif isinstance(window, int):  # surely wrong (no chat model is that small): learn it afresh
            self.ctx.out.note(
                "openai2: note: %s holds a %d-token window for %s, too small to be right; it is ignored and "
                "learned again from the server" % (self.ctx.store.tokens_path, window, model)
            )
        if calibration:
            try:
                chat.client.adopt_calibration(model, Calibration.from_dict(calibration))
            except ValueError:
                calibration = None
        self._known[model] = self._now(chat, model)

    @staticmethod
    def _now(chat: Chat, model: str) -> tuple[Any, ...]:
        calibration = chat.client.token_calibration(model)
        return (chat.client.learned_window(model), round(calibration.ratio, 4), calibration.samples)

    def after(self, chat: Chat) -> None:
        """Save what this run learned of the model's token counts, when it changed."""
        model = str(chat.params.get("model") or "")
        now = self._now(chat, model)
        if now == self._known.get(model) or (now[0] is None and not now[2]):
            return
        self._known[model] = now
        calibration = chat.client.token_calibration(model)
        try:
            with DeferInterrupt():
                self.ctx.store.save_token_state(
                    chat.client.base_url,
                    model,
                    window=now[0],
                    calibration=calibration.to_dict() if calibration.samples else None,
                )
        except KeyboardInterrupt:  # raised by DeferInterrupt only once the write has completed
            pass
        except (StoreError, OSError) as exc:
            self._problem(exc)


def _cli_budget_text(chat: Chat) -> str:
    """The token budget in force, for people: a number, and where it comes from."""
    setting = chat.MsgMaxTokens
    if setting is None:
        return "none (everything is sent; --max-history-tokens N sets one)"
    if setting != "auto":
        return "%s tokens (--max-history-tokens)" % setting
    window = chat.client.learned_window(str(chat.params.get("model") or ""))
    if window is None:
        return "not known yet: everything is sent until the server refuses a request as too long"
    return "%d tokens (learned from the server's refusal; --max-history-tokens N fixes it)" % window


def _cli_set_system(chat: Chat, text: str) -> None:
    """Make ``text`` the pinned system prompt at index 0 (replacing one already there)."""
    chat.set_system(text)


def _cli_replace_history(chat: Chat, messages: list[dict[str, Any]], pins: list[int]) -> None:
    chat.replace_messages(messages, pins)


def _cli_finish_reason(response: Any) -> str | None:
    """choices[0].finish_reason of an answer, when it has one."""
    try:
        reason = response["choices"][0]["finish_reason"]
    except (KeyError, IndexError, TypeError):
        return None
    return reason if isinstance(reason, str) else None


def _cli_error_text(exc: BaseException, base_url: str = "") -> str:
    if isinstance(exc, APIStatusError):
        if exc.status_code in (401, 403) and exc.hint and "No API key" in exc.hint:
            return (
                "the server needs an API key (HTTP %d): give one with --api-key KEY, set OPENAI_API_KEY, "
                "or store one with `openai2 add_apikey`" % exc.status_code
            )
        text = "HTTP %d: %s" % (exc.status_code, exc.message)
        if exc.request_id:
            text += " (request id %s)" % exc.request_id
        if exc.hint:
            text += " — " + exc.hint
        if isinstance(exc, ContextLengthError):
            text += (
                " — the conversation does not fit the model's context window even with the oldest messages "
                "left out: unpin some (/unpin), /undo, /new, or a smaller --max-history-tokens"
            )
        return text
    if isinstance(exc, ContextBudgetError):
        return (
            "the system prompt, the pinned messages and the new message alone need about %d tokens, more than "
            "the token budget of %d (--max-history-tokens, or the window learned from the server): unpin some "
            "(/unpin), send a shorter message, start over (/new), or raise --max-history-tokens if you set it too low"
            % (exc.required, exc.budget)
        )
    if isinstance(exc, APIConnectionError):
        text = str(exc)
        if base_url and base_url not in text:
            text += " (base URL %s)" % base_url
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return "%s: %s" % (exc.filename, exc.strerror) if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# One turn: stream or wait, reasoning on stderr, Ctrl-C keeps the partial answer
# ---------------------------------------------------------------------------------------------


_CLI_RETRY_KEPT = "[stopped: the retry did not finish, nothing of it is kept; the previous answer is kept]"


class _CliConversation:
    """A Chat plus where it is saved (``name`` None: not saved) and how answers are shown."""

    def __init__(self, ctx: _CliContext, chat: Chat, name: str | None, *, interactive: bool) -> None:
        self.ctx = ctx
        self.out = ctx.out
        self.chat = chat
        self.name = name
        self.interactive = interactive
        self.stream = not ctx.opt("no_stream", False)
        self.show_reasoning = not ctx.opt("hide_reasoning", False)
        self.piece_delay = 0.0  # the demo slows pieces down a little on a terminal
        self._reasoning_open = False  # reasoning written on stderr, its line not ended yet
        self._settled = False  # see ask()
        self._summary_failure: BaseException | None = None  # the last one noted

    def save(self) -> None:
        """Save the conversation; a Ctrl-C meanwhile waits for the save to end, then is dropped.

        The interrupt has nothing left to stop: what it would have cut is complete and on disk
        (a one-shot run exits 0, the prompt comes back), so memory and file stay the same.
        """
        if self.name is None:
            return
        try:
            with DeferInterrupt():
                chat = self.chat
                self.ctx.store.write_session(self.name, chat.fetch_messages(), chat.pinned_indexes(), chat.summary)
        except KeyboardInterrupt:  # raised by DeferInterrupt only once the save has completed
            self.out.end_line()
            self.out.note("[Ctrl-C during the save: the save finished, nothing was lost]")

    def _reasoning(self, text: str) -> None:
        if self.show_reasoning and text:
            self.out.piece(text, "dim", err=True)
            self._reasoning_open = True

    def _end_reasoning(self) -> None:
        """End the reasoning line on stderr (before the answer, or at the end)."""
        if self._reasoning_open:
            self._reasoning_open = False
            self.out.flush_pieces(err=True)
            if not self.out._fresh.get(id(self.out.err), True):
                self.out.write("\n", err=True)

    def ask(self, text: Any, restore: tuple[list[dict[str, Any]], list[int]] | None = None, rollback: int = 0) -> bool:
        """Answer ``text``; True if complete, False if stopped with Ctrl-C (partial kept, saved).

        :param restore: ``(messages, pins)`` to put back whenever the new answer does not
            complete (a failed request, Ctrl-C before or during the answer: a partial answer is
            not kept then), before anything is saved (``/retry``); once the answer is in the
            Chat nothing is put back, whatever happens while saving it
        :param rollback: rounds to roll back first, inside the region ``restore`` protects (a
            Ctrl-C between the rollback and the request puts the round back)
        :raises APIError: the request failed; the history is unchanged (or ``restore``d)
        """
        self._settled = False  # True once memory holds what is to be saved (answer committed)
        self.ctx.tokens.before(self.chat)
        before, started = self.chat.last_request, time.monotonic()
        history = None
        try:
            if rollback:
                self.chat.rollback(rollback)
            history = self.chat.fetch_messages()
            complete = self._ask(text, restore)
        except BaseException as exc:
            if restore is not None and not self._settled:
                _cli_replace_history(self.chat, restore[0], restore[1])
                if isinstance(exc, KeyboardInterrupt):
                    self.out.end_line()
                    self.out.note(_CLI_RETRY_KEPT)
            if history is not None:
                self.log(text, history, before, started, exc)
            raise
        self.log(text, history, before, started, None if complete else KeyboardInterrupt())
        return complete

    def log(
        self, text: Any, history: list[dict[str, Any]], before: Any, started: float, exc: BaseException | None
    ) -> None:
        """Append this exchange to the log, after the answer was shown and saved; a failure
        of the log is a warning, never a lost answer.

        :param history: the messages before the question; :param before: ``last_request`` then
        """
        self.after_request(before)
        if not isinstance(exc, (type(None), KeyboardInterrupt, BrokenPipeError, APIError, OpenAIError, StoreError)):
            return  # no request was made (one that could not be built)
        if self.name is None:
            return  # --no-save and the demo: nothing is written, the log included
        if exc is not None and not os.path.isdir(self.ctx.store.home):
            return  # a first run that failed creates no config folder just for its error
        book = self.ctx.logbook()
        if book is None:
            return
        chat = self.chat
        body = chat.last_request
        answered = body is not None and body is not before
        fields: dict[str, Any] = {}
        if answered:
            assert body is not None
            messages = list(body.get("messages") or [])
            now = chat.fetch_messages()
            reply = now[-1] if now and now[-1].get("role") == "assistant" else {}
            content = reply.get("content")
            fields.update(
                answer=content if isinstance(content, str) else None,
                tool_calls=reply.get("tool_calls"),
                reasoning=chat.last_reasoning,
                usage=chat.last_usage,
                finish_reason=_cli_finish_reason(chat.last_response),
            )
        else:
            messages = list(history) + [{"role": "user", "content": text}]
        if exc is None:
            status = "ok"
        elif isinstance(exc, (KeyboardInterrupt, BrokenPipeError)):
            status = "interrupted"
        elif isinstance(exc, StoreError) and answered:
            status = "ok"  # the answer is complete; only its save failed
        else:
            status = "error"
            fields["error"] = _cli_error_text(exc, chat.client.base_url)
        from urllib.parse import urlsplit

        host = urlsplit(chat.client.base_url).hostname
        try:
            # a Ctrl-C while the exchange is written waits for the write, then is dropped: the
            # answer was complete, shown and saved (as for the save itself)
            with DeferInterrupt():
                book.append(
                    messages=messages,
                    session=self.name or self.ctx.session_name(),
                    model=str((body if answered and body else chat.params).get("model") or ""),
                    host=host,
                    latency=round(time.monotonic() - started, 3),
                    status=status,
                    key=self.ctx.key_used,
                    secrets=self.out.secrets,
                    **fields,
                )
        except KeyboardInterrupt:  # raised by DeferInterrupt only once the write has completed
            self.out.end_line()
            self.out.note("[Ctrl-C while logging: the exchange was logged, nothing was lost]")
        except (LogbookError, OSError) as failure:
            self.ctx.log_failed(failure)
        if book.moved_aside:
            self.out.note(
                "openai2: warning: %s was corrupted; it was kept as %s and a fresh log started"
                % (book.path, book.moved_aside)
            )
            book.moved_aside = None

    def after_request(self, before: Any) -> None:
        """After a request: keep what it taught of the token counts (a saved session only),
        and say in one dim line on stderr when the token budget left messages out of it."""
        chat = self.chat
        if self.name is not None:
            self.ctx.tokens.after(chat)
        failure = chat.last_summary_error
        if failure is not None and failure is not self._summary_failure:
            self._summary_failure = failure
            self.out.end_line()
            self.out.note(
                "openai2: note: the earlier messages could not be summarised (%s); they were left out without a "
                "summary" % _cli_error_text(failure, chat.client.base_url)
            )
        if chat.last_request is before or not chat.last_left_out:
            return
        n = chat.last_left_out
        budget = chat.MsgMaxTokens
        if budget == "auto":
            budget = chat.client.learned_window(str(chat.params.get("model") or ""))
        summarised = chat.last_summarised
        self.out.end_line()
        self.out.line(
            "(%d earlier message%s not sent, to fit %s tokens%s; the session keeps them all)"
            % (n, "" if n == 1 else "s", budget, "; a summary stood for %d of them" % summarised if summarised else ""),
            "dim",
            err=True,
        )

    def _ask(self, text: Any, restore: tuple[list[dict[str, Any]], list[int]] | None) -> bool:
        out = self.out
        if self.interactive:
            out.write("Assistant: ", "assistant")
        if not self.stream:
            answer = self.chat.request(text)
            self._settled = True
            try:
                if self.chat.last_reasoning:
                    self._reasoning(self.chat.last_reasoning + "\n")
                out.write(answer)
                out.end_line()
            except BrokenPipeError:
                self.save()  # the reader left (``| head``): the answer is complete, keep it
                raise
            self.save()
            return True
        self._reasoning_open = False
        tools = self.ctx.tools
        hold = tools is not None and not self.interactive  # one-shot: stdout gets the final answer only
        if tools is not None:
            tools.start_answer(hold)
        ts = self.chat.stream_request(text, on_reasoning=self._reasoning)
        try:
            for piece in ts:
                if piece:
                    self._end_reasoning()
                if hold:
                    tools.held.append(piece)  # type: ignore[union-attr]
                else:
                    out.piece(piece)
                if self.piece_delay:
                    time.sleep(self.piece_delay)
            self._end_reasoning()
            if hold:
                out.piece(tools.take_held())  # type: ignore[union-attr]
            out.flush_pieces()
        except KeyboardInterrupt:
            # ChatTextStream keeps the question and the partial answer ("stop generating")
            ts.close()
            self._end_reasoning()
            out.flush_pieces()
            out.end_line()
            if restore is not None:
                # a retry that did not complete: the previous, complete answer wins over a
                # partial new one (and over nothing)
                _cli_replace_history(self.chat, restore[0], restore[1])
                out.note(_CLI_RETRY_KEPT)
            elif self.chat.last_request is ts._body:
                out.note("[stopped: the partial answer is kept]")
            else:
                out.note("[stopped before the answer began: nothing kept]")
            self._settled = True
            self.save()
            return False
        except BrokenPipeError:
            # the reader went away (``openai2 chat ... | head -c 20``): what arrived is kept and
            # saved as after a Ctrl-C, then main() ends quietly; nothing more goes to stdout
            ts.close()
            if restore is not None:
                _cli_replace_history(self.chat, restore[0], restore[1])
            self._settled = True
            self.save()
            raise
        except BaseException:
            self._end_reasoning()
            out.flush_pieces()
            out.end_line()
            raise
        self._settled = True  # the stream ran to its end: the answer is in the Chat
        out.end_line()
        self.save()
        return True


# ---------------------------------------------------------------------------------------------
# Tools: --functions, --yes, /tools
# ---------------------------------------------------------------------------------------------


def _cli_load_functions(specs: Sequence[str]) -> list[Any]:
    """The public functions defined in each ``--functions`` spec: a ``.py`` file (or any file
    that exists), else Python code given inline.  Functions imported into it, classes and names
    starting with ``_`` are not tools.

    :raises _CliUsageError: the file cannot be read, the code fails to run, or a function cannot
        be a tool (its error names the function and the parameter); nothing is sent
    """
    import inspect
    import types

    found: dict[str, Any] = {}
    for number, spec in enumerate(specs, 1):
        if os.path.isfile(spec) or spec.endswith(".py"):
            try:
                with open(spec, "rb") as handle:
                    code, where = handle.read().decode("utf-8", "replace"), spec
            except OSError as exc:
                raise _CliUsageError("--functions %s: %s" % (spec, exc.strerror or exc)) from None
        else:
            code, where = spec, "<--functions %d>" % number
        module = types.ModuleType("openai2_functions_%d" % number)
        module.__file__ = where
        try:
            exec(compile(code, where, "exec"), module.__dict__)  # noqa: S102 - the user's own code, as `python FILE.py`
        except BaseException as exc:  # SyntaxError, or anything its top level raises (even SystemExit)
            if isinstance(exc, KeyboardInterrupt):
                raise
            line = getattr(exc, "lineno", None)
            raise _CliUsageError(
                "--functions %s%s: %s: %s" % (where, " line %s" % line if line else "", type(exc).__name__, exc)
            ) from None
        defined = [
            value
            for name, value in vars(module).items()
            if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module.__name__
        ]
        if not defined:
            raise _CliUsageError("--functions %s defines no public function (def name(...): at its top level)" % where)
        for function in defined:
            found[function.__name__] = function  # a later spec's function of the same name wins
    try:
        ToolSet(list(found.values()))
    except (TypeError, ValueError) as exc:
        raise _CliUsageError("--functions: %s" % exc) from None
    return list(found.values())


class _CliTools:
    """The CLI's side of tool calls: asking before each call (unless ``--yes``), showing calls
    and results dimmed on stderr, and holding a one-shot run's text of tool rounds off stdout."""

    def __init__(self, ctx: _CliContext, functions: list[Any], *, yes: bool) -> None:
        self.ctx = ctx
        self.out = ctx.out
        self.functions = functions
        self.yes = yes
        self.held: list[str] = []  # a one-shot run's text of the round in progress
        self.hold = False
        self._asked: set[str] = set()  # calls whose question showed them already

    def chat_options(self) -> dict[str, Any]:
        return {
            "tools": self.functions,
            "confirm": self.confirm,
            "on_tool_call": self.show_call,
            "on_tool_result": self.show_result,
        }

    def start_answer(self, hold: bool) -> None:
        self.hold = hold
        self.held = []
        self._asked = set()

    def take_held(self) -> str:
        text, self.held = "".join(self.held), []
        return text

    def _before_tool_lines(self) -> None:
        """Text of the round before its calls: on stderr when held (one-shot), and the line ended."""
        if self.hold and self.held:
            self.out.line(self.take_held().rstrip("\n"), "dim", err=True)
        self.out.flush_pieces()
        self.out.end_line()

    def confirm(self, call: ToolCall) -> bool:
        """``Run name(args)? [y/N]`` on stderr, the answer read from the terminal."""
        if self.yes:
            return True
        self._before_tool_lines()
        self._asked.add(call.id)
        question = "Run %s(%s)? [y/N] " % (call.name, call.call_text())
        answer = self._read_answer(question)
        if answer is None:
            self.out.note(
                "openai2: %s(...) not run: no terminal to ask on (use --yes to run tools unasked)" % call.name
            )
            return False
        return answer.strip().lower() in ("y", "yes")

    def _read_answer(self, question: str) -> str | None:
        """A line typed in answer to ``question`` (stdin, unless it held the question; else the
        controlling terminal); None when there is nowhere to ask."""
        self.out.write(question, "note", err=True)
        if not self.ctx.stdin_is_question:
            line = self.ctx.stdin.readline()
            if not line or not _cli_isatty(self.ctx.stdin):
                self.out.write("\n", err=True)  # no echo of a typed Enter to end the line
            return line
        try:
            with open("/dev/tty", encoding="utf-8", errors="replace") as tty:
                return tty.readline()
        except OSError:
            self.out.write("\n", err=True)
            return None

    def show_call(self, call: ToolCall) -> None:
        self._before_tool_lines()
        if call.id not in self._asked and not call.failed:
            self.out.line("tool: %s(%s)" % (call.name, call.call_text()), "dim", err=True)

    def show_result(self, call: ToolCall) -> None:
        text = " ".join((call.result or "").split())
        if len(text) > 200:
            text = text[:199] + "…"
        if call.declined:
            shown = "not run (declined)"
        elif call.failed:
            shown = "failed: " + text
        else:
            shown = "-> " + text
        named = call.failed and call.id not in self._asked  # its call line was not shown
        name = call.name if call.name.isprintable() else repr(call.name)  # the model chose it
        self.out.line(("  %s %s" % (name, shown)) if named else "  " + shown, "dim", err=True)

    def listing(self) -> str:
        lines = ["Tools the model may call (%s):" % ("run without asking: --yes" if self.yes else "each asks first")]
        for entry in ToolSet(self.functions).schemas():
            spec = entry["function"]
            params = spec.get("parameters", {}).get("properties", {})
            required = set(spec.get("parameters", {}).get("required", []))
            shown = ", ".join(name if name in required else name + "?" for name in params)
            lines.append(
                "  %s(%s)%s" % (spec["name"], shown, "  " + spec["description"] if spec.get("description") else "")
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Roles, attachments, the editor, continuing a logged conversation
# ---------------------------------------------------------------------------------------------

_CLI_ATTACH_MAX = 256 * 1024  # default --max-attach: one text file, and a folder's total
_CLI_IMAGE_MAX = 20 * 1024 * 1024  # the API's own limit for an image
_CLI_BINARY_SNIFF = 8192  # a NUL byte in the first this-many bytes: a binary file
_CLI_LIST_SHOWN = 20  # at most this many names listed per line on stderr
_CLI_UNSET = object()  # a parameter a role set was not set before


class _CliInputError(ValueError):
    """An attachment, the editor or a role could not be used: one line; exit 2 on the command
    line, an error line at the prompt (which goes on)."""


def _cli_builtin_roles() -> dict[str, dict[str, Any]]:
    """The built-in roles (a user role of the same name wins)."""
    import platform

    windows = os.name == "nt"
    system_name = platform.system() or ("Windows" if windows else "Linux")
    shell = os.path.basename(os.environ.get("SHELL", "").strip()) or ("PowerShell" if windows else "sh")
    return {
        "translate": {
            "system": (
                "You are a translator. Translate the text the user sends: Chinese into English, any other "
                "language into Chinese, unless the user names the target language. Keep the formatting exactly "
                "as it is: Markdown, headings, lists, tables, line breaks, links, code blocks, inline code, "
                "placeholders and file names stay unchanged, and code is not translated. Answer with the "
                "translation only: no notes, no explanations, no quotation marks around it."
            ),
            "temperature": 0.2,
        },
        "shell": {
            "system": (
                "You write shell commands. Answer every request with exactly one command for %s on %s, on one "
                "line: no prose, no explanation, no Markdown, no code fences, no leading $ prompt. Join steps "
                "with && or pipes when several are needed. If the request cannot be done in one command, answer "
                "with one line starting with # that says why." % (shell, system_name)
            ),
            "temperature": 0,
        },
        "review": {
            "system": (
                "You are a careful code reviewer. Review the code or diff the user sends. First list the real "
                "problems, most serious first: bugs, security holes, data loss, races, wrong error handling, "
                "each with where it is (file and line or function) and a concrete fix. Then, briefly, smaller "
                "points: clarity, naming, missing tests. Do not rewrite the whole code and do not praise it; "
                "if you find nothing important, say so in one sentence."
            ),
        },
    }


def _cli_role_params(role: dict[str, Any]) -> str:
    return ", ".join("%s %s" % (k, role[k]) for k in ("model", "temperature", "max_tokens") if k in role)


def _cli_find_role(ctx: _CliContext, name: str) -> tuple[dict[str, Any], bool]:
    """The role ``name`` and whether it is a built-in one (the user's own wins)."""
    user = ctx.store.load_roles()
    if name in user:
        return user[name], False
    builtin = _cli_builtin_roles()
    if name in builtin:
        return builtin[name], True
    known = sorted(set(user) | set(builtin))
    raise _CliInputError("no role named %r (roles: %s; see `openai2 roles list`)" % (name, ", ".join(known)))


def _cli_apply_role(chat: Chat, role: dict[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
    """Set the role's system prompt (pinned) and parameters (those in ``keep`` stay: given as
    flags); returns what the parameters were before, for :func:`_cli_undo_role`."""
    _cli_set_system(chat, role["system"])
    undo: dict[str, Any] = {}
    for name in ("model", "temperature", "max_tokens"):
        if name in role and name not in keep:
            undo[name] = chat.params.get(name, _CLI_UNSET)
            chat.params[name] = role[name]
    return undo


def _cli_undo_role(chat: Chat, undo: dict[str, Any]) -> None:
    for name, value in undo.items():
        if value is _CLI_UNSET:
            chat.params.pop(name, None)
        else:
            chat.params[name] = value


def _cli_size_text(size: int) -> str:
    if size < 1024:
        return "%d bytes" % size
    if size < 1024 * 1024:
        return "%.1f KiB" % (size / 1024.0) if size % 1024 else "%d KiB" % (size // 1024)
    return "%.1f MiB" % (size / 1048576.0) if size % 1048576 else "%d MiB" % (size // 1048576)


def _cli_parse_size(text: str) -> int:
    """``--max-attach``: bytes, or a number with k/K (KiB) or m/M (MiB), e.g. 500k, 2M."""
    import argparse

    raw = text.strip().lower()
    for tail in ("ib", "b"):
        if raw.endswith(tail) and raw[: -len(tail)][-1:] in ("k", "m"):
            raw = raw[: -len(tail)]
    factor = {"k": 1024, "m": 1024 * 1024}.get(raw[-1:], 1)
    number = raw[:-1] if factor > 1 else raw
    try:
        value = int(float(number) * factor)
    except ValueError:
        value = -1
    if value < 1 or number.lower() in ("nan", "inf", "infinity"):
        raise argparse.ArgumentTypeError("give a size such as 300000, 500k or 2M, not %r" % text)
    return value


class _CliAttachment:
    """One attached file: text (sent fenced, with its name) or an image (an image part)."""

    __slots__ = ("name", "text", "part", "size")

    def __init__(self, name: str, size: int, text: str | None = None, part: dict[str, Any] | None = None) -> None:
        self.name = name
        self.size = size
        self.text = text
        self.part = part

    def describe(self) -> str:
        kind = "image" if self.part is not None else "text"
        return "%s (%s, %s)" % (_cli_shown_name(self.name), kind, _cli_size_text(self.size))


def _cli_shown_name(name: str) -> str:
    """A file name safe to print and to label a fence: control and invisible characters (a
    newline, ESC, a bidi override) escaped, so a folder's hostile file name cannot drive the
    terminal (clear it, set the clipboard) or pass for another name."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _cli_is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in (".png", ".jpg", ".jpeg", ".gif", ".webp")


def _cli_read_limited(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit + 1`` of them (a FIFO or a device
    is refused before it is opened: ``/dev/zero`` would never end)."""
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        raise _CliInputError("cannot attach %s: %s" % (path, exc.strerror or exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _CliInputError("cannot attach %s: it is not a regular file (a FIFO, a device or a socket)" % path)
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise _CliInputError("cannot attach %s: %s" % (path, exc.strerror or exc)) from None


def _cli_text_attachment(out: _CliOutput, name: str, raw: bytes, limit: int) -> _CliAttachment:
    if len(raw) > limit:
        raise _CliInputError(
            "%s is over the %s limit for an attached text file; raise it with --max-attach SIZE "
            "(e.g. --max-attach %dk), or attach a part of it (head -c %d FILE | openai2 chat -a -)"
            % (name, _cli_size_text(limit), max(2 * limit // 1024, 1), limit)
        )
    if b"\0" in raw[:_CLI_BINARY_SNIFF]:
        raise _CliInputError(
            "%s is a binary file (it holds NUL bytes): only text files and PNG, JPEG, GIF or WebP images "
            "can be attached" % name
        )
    text, note = _cli_decode(raw, name)
    if note:
        out.note(note)
    return _CliAttachment(name, len(raw), text=text)


def _cli_attach(out: _CliOutput, spec: str, limit: int, stdin: Any = None) -> list[_CliAttachment]:
    """What ``-a SPEC`` / ``/attach SPEC`` attaches: ``-`` (stdin, with ``stdin``), an image, a
    text file, or a folder's text files (listed on stderr, with what was skipped and why).

    :raises _CliInputError: a missing, binary or too large file, a folder with no text file
    """
    if spec == "-":
        if stdin is None:
            raise _CliInputError(
                "/attach - would read stdin, which is this prompt: pipe the text in with `openai2 chat -a -`"
            )
        buffer = getattr(stdin, "buffer", None)
        raw = buffer.read(limit + 1) if buffer is not None else stdin.read(limit + 1).encode("utf-8", "surrogateescape")
        return [_cli_text_attachment(out, "stdin", raw, limit)]
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return _cli_attach_folder(out, path, limit)
    if _cli_is_image(path):
        raw = _cli_read_limited(path, _CLI_IMAGE_MAX)
        if len(raw) > _CLI_IMAGE_MAX:
            raise _CliInputError("%s is over %s, the API's limit for an image" % (spec, _cli_size_text(_CLI_IMAGE_MAX)))
        import base64

        mime = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".gif": "gif", ".webp": "webp"}
        url = "data:image/%s;base64,%s" % (
            mime[os.path.splitext(path)[1].lower()],
            base64.b64encode(raw).decode("ascii"),
        )
        return [_CliAttachment(spec, len(raw), part={"type": "image_url", "image_url": {"url": url}})]
    return [_cli_text_attachment(out, spec, _cli_read_limited(path, limit), limit)]


def _cli_attach_folder(out: _CliOutput, folder: str, limit: int) -> list[_CliAttachment]:
    """The text files under ``folder`` (sorted, hidden files and folders, images and binary or
    non-UTF-8 files skipped) up to ``limit`` bytes in all."""
    import stat

    found: list[_CliAttachment] = []
    skipped: list[str] = []
    total = 0
    capped = False
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for d in [d for d in dirs if d.startswith(".")]:
            dirs.remove(d)
            skipped.append(os.path.join(root, d) + os.sep + " (hidden)")
        for d in [d for d in dirs if os.path.islink(os.path.join(root, d))]:  # os.walk does not enter them
            dirs.remove(d)
            skipped.append(os.path.join(root, d) + os.sep + " (a symbolic link: attach it by name)")
        for entry in sorted(files):
            path = os.path.join(root, entry)
            if entry.startswith("."):
                skipped.append(path + " (hidden)")
                continue
            if _cli_is_image(entry):
                skipped.append(path + " (an image: attach it by name)")
                continue
            try:
                st = os.lstat(path)
            except OSError as exc:
                skipped.append("%s (%s)" % (path, exc.strerror or exc))
                continue
            if stat.S_ISLNK(st.st_mode):
                # a link in a cloned repository may point anywhere (~/.ssh/id_rsa): never followed
                skipped.append(path + " (a symbolic link: attach it by name)")
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(path + " (not a regular file)")
                continue
            if total + st.st_size > limit:
                capped = True
                skipped.append("%s (%s: over the %s cap)" % (path, _cli_size_text(st.st_size), _cli_size_text(limit)))
                continue
            try:
                # O_NOFOLLOW: not a link put there since the check above either
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
                with os.fdopen(fd, "rb") as handle:
                    raw = handle.read(limit - total + 1)
            except OSError as exc:
                skipped.append("%s (%s)" % (path, exc.strerror or exc))
                continue
            if len(raw) > limit - total:
                capped = True
                skipped.append("%s (grew past the %s cap)" % (path, _cli_size_text(limit)))
                continue
            if b"\0" in raw[:_CLI_BINARY_SNIFF]:
                skipped.append(path + " (binary)")
                continue
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                skipped.append(path + " (not UTF-8 text)")
                continue
            total += len(raw)
            found.append(_CliAttachment(path, len(raw), text=text))

    def listing(items: list[str]) -> str:
        more = len(items) - _CLI_LIST_SHOWN
        shown = ", ".join(_cli_shown_name(item) for item in items[:_CLI_LIST_SHOWN])
        return shown + (", and %d more" % more if more > 0 else "")

    if found:
        out.note(
            "openai2: attached %d file%s from %s (%s): %s"
            % (
                len(found),
                "" if len(found) == 1 else "s",
                _cli_shown_name(folder),
                _cli_size_text(total),
                listing([a.name for a in found]),
            )
        )
    if skipped:
        out.note(
            "openai2: skipped in %s: %s%s"
            % (
                _cli_shown_name(folder),
                listing(skipped),
                "; the cap is %s in all, raise it with --max-attach SIZE" % _cli_size_text(limit) if capped else "",
            )
        )
    if not found:
        raise _CliInputError("no text file to attach in %s (hidden, binary and image files are skipped)" % folder)
    return found


def _cli_fence(name: str, text: str) -> str:
    """``text`` as a fenced code block whose info string is the file name; the fence is longer
    than any run of backticks inside."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    label = " ".join(_cli_shown_name(name.replace("`", "'")).split())
    return "%s%s\n%s%s%s" % (fence, label, text, "" if text.endswith("\n") or not text else "\n", fence)


def _cli_compose(text: str, attachments: Sequence[_CliAttachment]) -> Any:
    """The message content: the text, then each text file fenced with its name; with images, a
    list of parts (the text part first, then the images)."""
    blocks = [text] if text.strip() else []
    blocks += [_cli_fence(a.name, a.text) for a in attachments if a.text is not None]
    body = "\n\n".join(blocks)
    images = [a.part for a in attachments if a.part is not None]
    if not images:
        return body
    return ([{"type": "text", "text": body}] if body else []) + images


def _cli_edit(out: _CliOutput, initial: str = "") -> str | None:
    """Open ``$VISUAL`` (else ``$EDITOR``) on a private temporary file holding ``initial``;
    return what was saved, or None (with a note) when it was left empty or the editor failed.
    The file (0600, in a 0700 folder) is removed afterwards, whatever happens; Ctrl-C belongs
    to the editor while it runs (as git does).

    :raises _CliInputError: no editor is set, or it cannot be started
    """
    import shlex
    import shutil
    import signal
    import subprocess
    import tempfile

    variable = "VISUAL" if os.environ.get("VISUAL", "").strip() else "EDITOR"
    command = os.environ.get(variable, "").strip()
    if not command:
        raise _CliInputError("no editor: set $VISUAL or $EDITOR (e.g. export EDITOR=nano)")
    try:
        argv = shlex.split(command, posix=os.name != "nt")
    except ValueError as exc:
        raise _CliInputError("cannot read $%s (%r): %s" % (variable, command, exc)) from None
    folder = tempfile.mkdtemp(prefix="openai2-edit-")  # 0700; any backup the editor leaves goes too
    try:
        path = os.path.join(folder, "message.md")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(initial.encode("utf-8", "surrogateescape"))
        previous: Any = None
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread
            previous = None
        ended: dict[int, Any] = {}  # SIGTERM, SIGHUP (a dropped SSH link): exit, the draft removed

        def _end(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        for name in ("SIGTERM", "SIGHUP") if previous is not None else ():
            number = getattr(signal, name, None)
            if number is not None:
                ended[number] = signal.signal(number, _end)
        try:
            extra: dict[str, Any] = {}
            if os.name != "nt" and previous is not None:
                extra["preexec_fn"] = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                process = subprocess.Popen(argv + [path], **extra)
            except OSError as exc:
                raise _CliInputError(
                    "cannot start the editor %r (from $%s): %s"
                    % (argv[0] if argv else command, variable, exc.strerror or exc)
                ) from None
            try:
                status = process.wait()
            except SystemExit:  # openai2 is ending: so does the editor of a draft about to be removed
                process.terminate()
                try:
                    process.wait(2.0)
                except subprocess.TimeoutExpired:
                    pass
                raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            for number, handler in ended.items():
                signal.signal(number, handler)
        if status != 0:
            out.note("openai2: the editor exited with status %d: nothing sent" % status)
            return None
        with open(path, "rb") as edited:
            raw = edited.read()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text, note = _cli_decode(raw, "the edited text")
    if note:
        out.note(note)
    if not text.strip():
        out.note("openai2: nothing sent: the text was left empty")
        return None
    return text.rstrip().lstrip("\r\n")


class _CliContinued:
    """A logged conversation to go on with (``--continue ID`` / ``-c``) in a new session."""

    def __init__(
        self, exchange_id: int, name: str, messages: list[dict[str, Any]], note: str, left_out: str | None = None
    ) -> None:
        self.exchange_id = exchange_id
        self.name = name
        self.messages = messages
        self.note = note
        self.left_out = left_out  # the question of a failed exchange, not restored

    def describe(self, out: _CliOutput) -> str:
        """The note naming the new session; a left-out question shortened once the keys are
        known (masked before the cut)."""
        return self.note + ("" if self.left_out is None else _cli_one_line(out, self.left_out, 200))


def _cli_continue_source(ctx: _CliContext, new: bool) -> _CliContinued | None:
    """``--continue ID`` / ``-c``: the conversation the exchange belonged to, rebuilt from the
    log, and the new session that will hold it (``--session`` if given and unused, else
    ``<session>-<id>``, ``-2``… when taken); None without those options."""
    exchange_id = ctx.opt("continue_id")
    latest = ctx.opt("continue_last", False)
    if exchange_id is None and not latest:
        return None
    if exchange_id is not None and latest:
        raise _CliUsageError("give --continue ID or -c (the latest exchange), not both")
    if new:
        raise _CliUsageError("--continue starts a new session by itself: use it with chat, not newchat")
    missing = logbook_unavailable()
    if missing:
        raise _CliUsageError("--continue needs the log, and it is off: %s" % missing)
    path = ctx.store.logs_path
    if not os.path.lexists(path):
        raise _CliUsageError("nothing to continue: nothing is logged yet (%s does not exist)" % path)
    try:
        with Logbook(path) as book:
            if exchange_id is None:
                latest_rows = book.exchanges(limit=1)
                if not latest_rows:
                    raise _CliUsageError(
                        "nothing to continue: the log is empty (%s)" % path
                        if not book.moved_aside
                        else "nothing to continue: the log %s was corrupted; it was kept as %s and a fresh "
                        "one started" % (path, book.moved_aside)
                    )
                exchange_id = latest_rows[-1]["id"]
            record = book.get(exchange_id)
            messages = book.conversation(exchange_id) if record is not None else None
    except LogbookError as exc:
        raise StoreError(str(exc)) from None
    if record is None or messages is None:
        if book.moved_aside:
            raise StoreError(
                "no exchange %d: the log %s was corrupted; it was kept as %s and a fresh one started"
                % (exchange_id, path, book.moved_aside)
            )
        raise _CliUsageError("no exchange %d in the log (see `openai2 logs`)" % exchange_id)
    dropped, left_out = "", None
    if messages and messages[-1].get("role") == "user":  # a failed exchange: no answer to go on from
        messages = messages[:-1]
        dropped = "; it had no answer (%s), so its question is left out: " % record["status"]
        left_out = record["question"] or ""
    session = record["session"] or "log"
    explicit = ctx.opt("session")
    if explicit:
        name = ctx.session_name(explicit)
        if os.path.exists(ctx.store.session_path(name)):
            raise _CliUsageError(
                "session %r already exists: --continue makes a new session; give an unused --session NAME "
                "or none (one is named after the exchange)" % name
            )
    else:
        stem = "%s-%d" % (session[:50], exchange_id)
        try:
            check_session_name(stem)
        except StoreError:
            stem = "log-%d" % exchange_id
        name, n = stem, 2
        while os.path.lexists(ctx.store.session_path(name)):
            name, n = "%s-%d" % (stem, n), n + 1
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["time"]))
    note = "Continuing exchange #%d (session %s, %s, model %s) in the new session %s: %d message%s%s" % (
        exchange_id,
        record["session"] or "-",
        when,
        record["model"] or "?",
        name,
        len(messages),
        "" if len(messages) == 1 else "s",
        dropped,
    )
    return _CliContinued(exchange_id, name, messages, note, left_out)


def _cli_start_attachments(ctx: _CliContext) -> list[_CliAttachment]:
    """The ``-a`` attachments of the command line (errors: exit 2)."""
    found: list[_CliAttachment] = []
    limit = ctx.opt("max_attach") or _CLI_ATTACH_MAX
    specs = ctx.opt("attach") or []
    if specs.count("-") > 1:
        raise _CliUsageError("-a - (stdin) can be given once")
    for spec in specs:
        try:
            found.extend(_cli_attach(ctx.out, spec, limit, ctx.stdin))
        except _CliInputError as exc:
            raise _CliUsageError(str(exc)) from None
    return found


class _CliReplInputs:
    """The prompt's /role, /attach, /detach and /edit (mixed into the REPL): a role's prompt and
    parameters, attachments waiting for the next message, a message written in an editor."""

    conv: _CliConversation
    out: _CliOutput
    role: str | None
    role_undo: dict[str, Any]
    pending: list[_CliAttachment]

    def send(self, text: Any) -> bool:  # pragma: no cover - _CliRepl's
        raise NotImplementedError

    def message_with_pending(self, text: Any) -> Any:
        """``text`` with the pending attachments (which are then sent: the caller clears them)."""
        if not self.pending or not isinstance(text, str):
            return text
        return _cli_compose(text, self.pending)

    def _note_pending(self) -> None:
        if self.pending:
            count = len(self.pending)
            self.out.note(
                "(the %d attachment%s stay%s for your next message; /detach drops them)"
                % (count, "" if count == 1 else "s", "s" if count == 1 else "")
            )

    def _cmd_role(self, rest: str) -> None:
        chat = self.conv.chat
        if not rest:
            if self.role is None:
                self.out.line("No role (`openai2 roles list` shows them; /role NAME uses one).")
                return
            role, builtin = _cli_find_role(self.conv.ctx, self.role)
            params = _cli_role_params(role)
            self.out.line(
                "Role: %s%s%s" % (self.role, " (built-in)" if builtin else "", "; " + params if params else "")
            )
            return
        role, builtin = _cli_find_role(self.conv.ctx, rest)
        _cli_undo_role(chat, self.role_undo)
        self.role_undo = _cli_apply_role(chat, role)
        self.role = rest
        self.conv.save()
        params = _cli_role_params(role)
        self.out.line(
            "Role %s%s: its system prompt is pinned as message 0%s."
            % (rest, " (built-in)" if builtin else "", "; " + params if params else "")
        )

    def _cmd_attach(self, rest: str) -> None:
        import shlex

        if not rest:
            if not self.pending:
                self.out.line("Nothing attached. /attach FILE (a text file, an image, or a folder) adds one.")
                return
            self.out.line("Attached, sent with your next message (/detach drops them):")
            for i, item in enumerate(self.pending, 1):
                self.out.line("  %d. %s" % (i, item.describe()))
            return
        if os.path.exists(os.path.expanduser(rest)):
            specs = [rest]
        else:
            try:
                specs = shlex.split(rest, posix=os.name != "nt")
            except ValueError as exc:
                raise _CliInputError("cannot read the file names: %s" % exc) from None
        limit = self.conv.ctx.opt("max_attach") or _CLI_ATTACH_MAX
        added: list[_CliAttachment] = []
        for spec in specs:
            added.extend(_cli_attach(self.out, spec, limit))
        self.pending.extend(added)
        self.out.line(
            "Attached %s; sent with your next message (%d pending; /attach lists them)."
            % (", ".join(a.describe() for a in added), len(self.pending))
        )

    def _cmd_detach(self, rest: str) -> None:
        count, self.pending[:] = len(self.pending), []
        self.out.line("Dropped %d attachment%s." % (count, "" if count == 1 else "s") if count else "Nothing attached.")

    def _cmd_edit(self, rest: str) -> None:
        text = _cli_edit(self.out, rest)
        if text is None:
            return
        lines = text.count("\n") + 1
        first = text.split("\n", 1)[0]
        self.out.line(
            "(sending the edited text: %s%s)"
            % (first[:60] + ("…" if len(first) > 60 else ""), ", %d lines" % lines if lines > 1 else ""),
            "dim",
        )
        self.send(text)


# ---------------------------------------------------------------------------------------------
# The interactive prompt
# ---------------------------------------------------------------------------------------------


_CLI_SET_MAX_DEPTH = 32  # /set values nested deeper are refused (no API parameter is this deep)


class _CliBadValue(ValueError):
    pass


def _cli_parse_value(name: str, raw: str) -> Any:
    """A ``/set`` value: JSON when it reads as JSON, else the text itself; NaN, Infinity (also as
    ``1e999``) and values nested more than :data:`_CLI_SET_MAX_DEPTH` deep are refused here,
    since no request could carry them (strict JSON has no NaN)."""
    import json
    import math

    def refuse(word: str) -> Any:
        raise _CliBadValue("%s = %s: JSON has no NaN or Infinity; give a finite number" % (name, word))

    def finite(text: str) -> float:
        number = float(text)
        if math.isinf(number) or math.isnan(number):
            refuse(text)
        return number

    try:
        value = json.loads(raw, parse_constant=refuse, parse_float=finite)
    except _CliBadValue:
        raise
    except RecursionError:
        value = None
        depth = _CLI_SET_MAX_DEPTH + 1
    except ValueError:
        return raw  # not JSON: the text itself (``/set stop END``)
    else:
        depth = _cli_depth(value)
    if depth > _CLI_SET_MAX_DEPTH:
        raise ValueError("%s: the value is nested too deeply (more than %d levels)" % (name, _CLI_SET_MAX_DEPTH))
    return value


def _cli_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    todo = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (list, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > _CLI_SET_MAX_DEPTH:
                break
            todo.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class _CliRepl(_CliReplInputs):
    def __init__(self, conv: _CliConversation, editor: LineEditor | None, system: str | None) -> None:
        self.conv = conv
        self.out = conv.out
        self.editor = editor
        self.system = system
        self.role: str | None = None  # the role in use (/role), and what its parameters replaced
        self.role_undo: dict[str, Any] = {}
        self.pending: list[_CliAttachment] = []  # /attach: sent with the next message

    @property
    def chat(self) -> Chat:
        return self.conv.chat

    def prompt(self, continuation: bool = False) -> str:
        text = "... " if continuation else "You: "
        if not self.out.color_out:
            return text
        code = _CLI_STYLES["dim" if continuation else "prompt"]
        if self.editor is not None and self.editor.readline is not None:
            # \001 \002 tell readline the escape codes take no room on the line.
            return "\001%s\002%s\001%s\002" % (code, text, _CLI_RESET)
        return code + text + _CLI_RESET

    def read_message(self) -> str:
        assert self.editor is not None
        line = self.editor.read(self.prompt())
        if not line.strip().startswith('"""'):
            return line
        first = line.strip()[3:]
        if first.endswith('"""'):
            return first[:-3]
        lines = [first] if first else []
        while True:
            more = self.editor.read(self.prompt(True))
            if more.rstrip().endswith('"""'):
                tail = more.rstrip()[:-3]
                if tail:
                    lines.append(tail)
                return "\n".join(lines)
            lines.append(more)

    def banner(self) -> None:
        chat = self.chat
        conv = self.conv
        where = (
            "saved after every answer to %s" % self.conv.ctx.store.session_path(conv.name)
            if conv.name is not None
            else "not saved"
        )
        count = len(chat.fetch_messages())
        self.out.line(
            "openai2 %s — model %s, session %s%s (%d message%s so far; %s)"
            % (
                __version__,
                chat.params.get("model"),
                conv.name or "-",
                ", role %s" % self.role if self.role else "",
                count,
                "" if count == 1 else "s",
                where,
            ),
            "dim",
        )
        self.out.line(
            "Type a message and press Enter. /help lists commands. "
            "Type new (or /new) to start over, quit (or /exit, Ctrl-D) to leave; Ctrl-C stops an answer.",
            "dim",
        )
        if self.pending:
            count = len(self.pending)
            self.out.line(
                "%d attachment%s go%s with your first message (/attach lists them, /detach drops them)."
                % (count, "" if count == 1 else "s", "es" if count == 1 else ""),
                "dim",
            )

    def run(self) -> int:
        self.banner()
        while True:
            try:
                text = self.read_message()
                text, note = _cli_clean_text(text, "the line")
                if note:
                    self.out.note(note)
            except EOFError:
                self.out.end_line()
                self.out.write("\n")
                return EXIT_OK
            except KeyboardInterrupt:
                self.out.write("\n")
                self.out.line("(To quit, type quit or /exit, or press Ctrl-D.)", "dim")
                continue
            try:
                if not self.handle(text):
                    return EXIT_OK
            except KeyboardInterrupt:
                self.out.end_line()
                self.out.line("(interrupted)", "dim")

    def handle(self, text: str) -> bool:
        """Act on one entered message or command; False means leave."""
        stripped = text.strip()
        if not stripped:
            return True
        word = stripped.lower()
        if word in ("quit", "exit"):
            return False
        if word == "new":
            return self.slash("/new")
        if stripped.startswith("//"):
            text = text.lstrip()[1:]
        elif stripped.startswith("/"):
            return self.slash(stripped)
        return self.send(text)

    def send(self, text: Any) -> bool:
        """Ask ``text`` (with the pending attachments: dropped once the question is in the
        conversation, kept when the request failed); errors are shown, the prompt goes on."""
        try:
            self.conv.ask(self.message_with_pending(text))
            self.pending[:] = []
        except (APIError, OpenAIError) as exc:
            self.out.error(_cli_error_text(exc, self.chat.client.base_url))
            self._note_pending()
        except (ValueError, TypeError, RecursionError) as exc:
            # a request that could not be built (a parameter no JSON can carry): say so, go on
            self.out.error("the request could not be sent: %s (see /set to change a parameter)" % exc)
            self._note_pending()
        except (SessionConflictError, SessionLockedError):
            raise  # the session belongs to another process now: every later save would fail too
        except (OSError, StoreError) as exc:
            # the answer was shown and is in memory; a full disk or a missing folder is no reason
            # to lose it: say so, and the next answer tries to save again
            self.pending[:] = []
            self.out.error(_cli_error_text(exc))
            self.out.note("the conversation is still here: /save FILE keeps a copy (the next answer saves again)")
        return True

    # -- slash commands ---------------------------------------------------------------------
    def slash(self, line: str) -> bool:
        parts = line.split(None, 1)
        name = parts[0].lower()
        rest = parts[1].strip() if len(parts) > 1 else ""
        handler = getattr(self, "_cmd_" + name[1:], None) if name[1:].isalpha() else None
        if handler is None:
            self.out.error(
                "unknown command %s; /help lists the commands (start with // to send a line beginning with /)"
                % parts[0]
            )
            return True
        try:
            result = handler(rest)
        except (SessionConflictError, SessionLockedError):
            raise  # the session belongs to another process now: every later save would fail too
        except (ValueError, IndexError, TypeError, StoreError, OSError) as exc:
            self.out.error("%s: %s" % (name, _cli_error_text(exc)))
            return True
        except (APIError, OpenAIError) as exc:
            self.out.error(_cli_error_text(exc, self.chat.client.base_url))
            return True
        return result is not False

    def _cmd_help(self, rest: str) -> None:
        self.out.line(_CLI_SLASH_HELP)

    def _cmd_tools(self, rest: str) -> None:
        tools = self.conv.ctx.tools
        if tools is None:
            self.out.line("No tools (start with --functions FILE.py: its public functions become tools).")
            return
        self.out.line(tools.listing())

    def _cmd_exit(self, rest: str) -> bool:
        return False

    _cmd_quit = _cmd_exit

    def _cmd_new(self, rest: str) -> None:
        conv = self.conv
        system = self._current_system()
        archived = None
        if conv.name is not None:
            conv.save()
            archived = conv.ctx.store.archive_session(conv.name)
        _cli_replace_history(self.chat, [], [])
        if system is not None:
            _cli_set_system(self.chat, system)
        conv.save()
        if archived:
            self.out.line("New conversation started; the previous one is archived at %s" % archived, "dim")
        else:
            self.out.line("New conversation started.", "dim")

    def _current_system(self) -> str | None:
        messages = self.chat.fetch_messages()
        if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
            return messages[0]["content"]  # type: ignore[no-any-return]
        return None

    def _cmd_undo(self, rest: str) -> None:
        try:
            n = int(rest) if rest else 1
        except ValueError:
            raise ValueError("give a whole number of rounds, e.g. /undo 2 (not %r)" % rest) from None
        if n < 1:
            raise ValueError("give a number of rounds, 1 or more")
        rounds = sum(1 for m in self.chat.fetch_messages() if m.get("role") == "user")
        if not rounds:
            self.out.line("Nothing to undo: no question has been asked yet.")
            return
        done = min(n, rounds)
        shown = self.chat.rollback(n)
        self.conv.save()
        if str(shown):
            end = "Now last: %s" % shown
        elif self.chat.fetch_messages():
            end = "No rounds are left (the system prompt stays)."
        else:
            end = "The conversation is now empty."
        self.out.line(
            "Rolled back %d round%s%s. %s"
            % (done, "" if done == 1 else "s", " (all there were)" if n > done else "", end)
        )

    def _cmd_retry(self, rest: str) -> None:
        messages = self.chat.fetch_messages()
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last_user is None:
            self.out.line("Nothing to retry: no question has been asked yet.")
            return
        # Nothing is saved until the new answer is in: a failed or interrupted retry puts the
        # round back (memory and file), so the last answer is never lost.
        snapshot = (messages, self.chat.pinned_indexes())
        content = last_user.get("content")
        self.out.line("Retrying: %s" % format_round([last_user]), "dim")
        self.conv.ask(content, restore=snapshot, rollback=1)

    def _cmd_system(self, rest: str) -> None:
        if not rest:
            current = self._current_system()
            self.out.line(
                "System prompt: %s" % current
                if current is not None
                else "No system prompt (set one with /system TEXT)."
            )
            return
        _cli_set_system(self.chat, rest)
        self.conv.save()
        self.out.line("System prompt set (pinned as message 0).")

    def _cmd_model(self, rest: str) -> None:
        if rest:
            self.chat.params["model"] = rest
            self.out.line("Model: %s" % rest)
        else:
            self.out.line("Model: %s" % self.chat.params.get("model"))

    def _cmd_set(self, rest: str) -> None:
        import json

        if not rest:
            self.out.line("Request parameters: %s" % json.dumps(self.chat.params, ensure_ascii=False, sort_keys=True))
            return
        parts = rest.split(None, 1)
        name = parts[0]
        if name in ("messages", "stream") or "key" in name.lower():
            raise ValueError("%s cannot be set here" % name)
        if len(parts) == 1:
            if name == "model":
                raise ValueError("the model cannot be unset; use /model NAME")
            self.chat.params.pop(name, None)
            self.out.line("Unset %s." % name)
            return
        raw = parts[1].strip()
        value: Any = _cli_parse_value(name, raw)
        self.chat.params[name] = value
        self.out.line("%s = %s" % (name, json.dumps(value, ensure_ascii=False)))

    def _parse_indexes(self, rest: str) -> list[int]:
        try:
            return [int(x) for x in rest.replace(",", " ").split()]
        except ValueError:
            raise ValueError("message indexes are whole numbers (see /history), e.g. /pin 0 1 -1") from None

    def _cmd_pin(self, rest: str) -> None:
        if not rest:
            pins = self.chat.pinned_indexes()
            self.out.line("Pinned: %s" % (" ".join(map(str, pins)) if pins else "nothing"))
            return
        self.chat.pin_messages(*self._parse_indexes(rest))
        self.conv.save()
        self.out.line("Pinned: %s" % " ".join(map(str, self.chat.pinned_indexes())))

    def _cmd_unpin(self, rest: str) -> None:
        indexes = self._parse_indexes(rest) if rest else self.chat.pinned_indexes()
        if indexes:
            self.chat.unpin_messages(*indexes)
        self.conv.save()
        pins = self.chat.pinned_indexes()
        self.out.line("Pinned: %s" % (" ".join(map(str, pins)) if pins else "nothing"))

    def _cmd_history(self, rest: str) -> None:
        messages = self.chat.fetch_messages()
        if not messages:
            self.out.line("(the conversation is empty)")
            return
        pins = set(self.chat.pinned_indexes())
        width = terminal_width(self.out.out)
        for i, msg in enumerate(messages):
            text = format_round([msg]).replace("\n", " ")
            row = "%3d %s %s" % (i, "*" if i in pins else " ", text)
            if len(row) > width - 1 and width > 20:
                row = row[: width - 2] + "…"
            self.out.line(row)
        limit = self.chat.MsgMaxCount
        self.out.line(
            "(%d message%s%s; * = pinned)"
            % (len(messages), "" if len(messages) == 1 else "s", ", at most %d kept" % limit if limit else ""),
            "dim",
        )

    def _cmd_limit(self, rest: str) -> None:
        if rest:
            value = int(rest)
            if value < 0:
                raise ValueError("the limit is a number of messages, 0 for none")
            before = len(self.chat)
            self.chat.MsgMaxCount = value or None
            self.conv.save()
            dropped = before - len(self.chat)
            if dropped:
                self.out.line("(%d older message%s dropped)" % (dropped, "" if dropped == 1 else "s"), "dim")
        limit = self.chat.MsgMaxCount
        self.out.line("History limit: %s" % ("%d messages (pinned ones always stay)" % limit if limit else "none"))

    def _cmd_save(self, rest: str) -> None:
        if not rest:
            raise ValueError("give a file name: /save FILE")
        path = os.path.expanduser(rest)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError("cannot write %s: the folder %s does not exist" % (path, folder))
        self.chat.dump(path, private=True)  # conversations are private: 0600
        self.out.line("Saved %d messages to %s" % (len(self.chat), path))

    def _cmd_load(self, rest: str) -> None:
        if not rest:
            raise ValueError("give a file name: /load FILE")
        path = os.path.expanduser(rest)
        before = len(self.chat)
        self.chat.load(path)
        self.conv.save()
        self.out.line("Loaded %s: %d messages now (%d before)." % (path, len(self.chat), before))

    def _cmd_usage(self, rest: str) -> None:
        def show(usage: Any) -> str:
            if not usage:
                return "not reported"
            return "prompt %s, completion %s, total %s tokens" % (
                usage.get("prompt_tokens", "?"),
                usage.get("completion_tokens", "?"),
                usage.get("total_tokens", "?"),
            )

        self.out.line("Last answer: %s" % show(self.chat.last_usage))
        self.out.line("This run: %s" % show(self.chat.total_usage))
        if not self.chat.last_usage and self.conv.stream:
            self.out.line(
                '(streamed answers report usage only if asked: /set stream_options {"include_usage": true})', "dim"
            )

    def _cmd_tokens(self, rest: str) -> None:
        chat = self.chat
        self.conv.ctx.tokens.before(chat)
        try:
            report = chat.budget_report()
        except ContextBudgetError as exc:
            self.out.line("Next request: cannot be sent: %s" % _cli_error_text(exc))
            self.out.line("Budget: %s" % _cli_budget_text(chat))
            return
        if report["samples"]:
            how = "the estimate x %.3f, calibrated on %d answer%s" % (
                report["ratio"],
                report["samples"],
                "" if report["samples"] == 1 else "s",
            )
            measured = report["measured"]
            if measured:  # counted by the server before: only the rest is estimated
                how = "%d message%s as the server counted %s, the rest %s" % (
                    measured,
                    "" if measured == 1 else "s",
                    "it" if measured == 1 else "them",
                    how,
                )
        else:
            how = "estimated; calibrated once an answer reports its prompt tokens"
        self.out.line("Next request: about %d tokens before your message (%s)" % (report["tokens"], how))
        self.out.line("Budget: %s" % _cli_budget_text(chat))
        stored, sent = report["stored"], report["sent"]
        line = "Messages: %d in the session, %d sent" % (stored, sent)
        if stored > sent:
            summarised = report["summarised"]
            parts = []
            if summarised:
                parts.append("%d as a summary" % summarised)
            if stored - sent - summarised > 0:
                parts.append("%d left out" % (stored - sent - summarised))
            line += " (%s)" % ", ".join(parts)
        self.out.line(line)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _cli_cmd_add_apikey(ctx: _CliContext) -> int:
    key = ctx.opt("key")
    if key is not None:
        keys = [key]
        if _cli_isatty(ctx.stdin):
            ctx.out.note(
                "Tip: run `openai2 add_apikey` without the key to type it hidden and keep it out of your shell history."
            )
    elif _cli_isatty(ctx.stdin):
        import getpass

        try:
            keys = [getpass.getpass("API key (input hidden): ", stream=ctx.out.err)]  # type: ignore[arg-type]
        except EOFError:
            keys = []
        except KeyboardInterrupt:
            ctx.out.write("\n", err=True)  # getpass leaves the cursor after the prompt
            raise
    else:
        text, note = _cli_read_stdin(ctx.stdin)
        if note:
            raise _CliUsageError("the keys on stdin are not UTF-8 text (a key is letters, digits and dashes)")
        keys = [line for line in text.splitlines() if line.strip()]
    keys = [k.strip() for k in keys]
    if any(_cli_clean_text(k, "key")[1] for k in keys):
        raise _CliUsageError("the key is not UTF-8 text (a key is letters, digits and dashes)")
    if not keys or not all(keys):
        raise _CliUsageError("no key given: pass it as an argument, type it at the prompt, or pipe it on stdin")
    ctx.out.secrets.extend(keys)
    try:
        added, skipped = ctx.store.add_keys(keys)
    except ValueError as exc:
        raise _CliUsageError("%s: %s" % (exc, ", ".join(mask_key(k) for k in keys))) from None
    for k in added:
        ctx.out.line("Stored key %s" % mask_key(k))
    for k in skipped:
        ctx.out.line("Key %s was already stored" % mask_key(k))
    total = len(ctx.store.load_keys())
    ctx.out.line(
        "%d key%s in %s%s"
        % (total, "" if total == 1 else "s", ctx.store.keys_path, " (used in turn as a pool)" if total > 1 else "")
    )
    return EXIT_OK


def _cli_cmd_read_apikey(ctx: _CliContext) -> int:
    out = ctx.out
    failed = False
    try:
        stored = ctx.store.load_keys()
    except StoreError as exc:
        out.error(str(exc))
        stored = []
        failed = True
    out.secrets.extend(stored)
    if stored:
        out.line("Stored keys (%s):" % ctx.store.keys_path)
        for i, key in enumerate(stored, 1):
            out.line("  %d. %s" % (i, mask_key(key)))
    else:
        out.line("No stored keys (%s does not exist)." % ctx.store.keys_path)
    env = os.environ.get("OPENAI_API_KEY", "").strip()
    if env:
        out.secrets.append(env)
    out.line("OPENAI_API_KEY: %s" % (mask_key(env) if env else "not set"))
    flag = ctx.opt("api_key")
    if flag is not None and flag.strip():
        out.secrets.append(flag.strip())
        out.line("--api-key: %s" % mask_key(flag.strip()))
    active, source = ctx.resolve_key()
    shown = repr(active) if isinstance(active, AKPool) else mask_key(active) if active else "none"
    out.line("Active key: %s, from %s." % (shown, source))
    out.line("Precedence: the --api-key option, then OPENAI_API_KEY, then the stored keys.")
    return EXIT_STORAGE if failed else EXIT_OK


def _cli_cmd_clear_apikey(ctx: _CliContext) -> int:
    removed = ctx.store.clear_keys()
    if removed:
        ctx.out.line("Removed the stored keys (%s)." % ", ".join(removed))
    else:
        ctx.out.line("No stored keys to remove.")
    if os.environ.get("OPENAI_API_KEY", "").strip():
        ctx.out.line("Note: OPENAI_API_KEY is still set in this environment.")
    return EXIT_OK


def _cli_question(ctx: _CliContext, attached: bool = False) -> str | None:
    """The one-shot question (TEXT words, else stdin when it is not a terminal), or None.

    :param attached: files are attached (``-a``): an empty stdin then sends them alone
    """
    words = ctx.opt("text") or []
    if words:
        return ctx.clean(" ".join(words), "the TEXT argument")
    if ctx.opt("interactive", False) or _cli_isatty(ctx.stdin):
        return None
    text, note = _cli_read_stdin(ctx.stdin)
    ctx.stdin_is_question = True
    if not text.strip() and attached:
        return ""
    if not text.strip():
        raise _CliUsageError(
            "nothing to ask: give TEXT, pipe a question on stdin, or use -i for the interactive prompt"
        )
    if note:
        ctx.out.note(note)
    return text


def _cli_cmd_chat(ctx: _CliContext, new: bool) -> int:
    role_name = ctx.opt("role")
    role = None
    if role_name is not None:
        try:
            role = _cli_find_role(ctx, role_name)[0]
        except _CliInputError as exc:
            raise _CliUsageError(str(exc)) from None
    continued = _cli_continue_source(ctx, new)
    attachments = _cli_start_attachments(ctx)
    editing = bool(ctx.opt("edit", False))
    if editing or "-" in (ctx.opt("attach") or []):
        # the editor writes the question (TEXT is its first draft); with -a -, stdin was the attachment
        question: Any = "" if editing else ctx.clean(" ".join(ctx.opt("text") or []), "the TEXT argument")
    else:
        question = _cli_question(ctx, attached=bool(attachments))
    schema = _cli_schema(ctx.opt("schema"), bool(ctx.opt("schema_multi", False))) if ctx.opt("schema") else None
    if ctx.opt("schema_multi", False) and schema is None:
        raise _CliUsageError("--schema-multi needs --schema SPEC (the fields of one item)")
    if question is None and schema is not None:
        raise _CliUsageError("--schema needs a question (TEXT or stdin): it prints one parsed JSON answer")
    if question is None and ctx.opt("json", False):
        raise _CliUsageError("--json needs a question (TEXT or stdin)")
    name = continued.name if continued is not None else ctx.session_name()
    saving = not ctx.opt("no_save", False)
    chat = ctx.make_chat()
    lock: SessionLock | None = ctx.store.lock_session(name) if saving else None
    try:
        if editing:
            try:
                question = _cli_edit(ctx.out, " ".join(ctx.opt("text") or []))
            except _CliInputError as exc:
                raise _CliUsageError(str(exc)) from None
            if question is None:
                return EXIT_OK  # left empty: cancelled, nothing touched (the note said so)
        if attachments and question is not None:
            question = _cli_compose(question, attachments)
        archived = None
        if new:
            if saving:
                archived = ctx.store.archive_session(name)
        elif continued is not None:
            try:
                pins = [0] if continued.messages and continued.messages[0].get("role") == "system" else []
                _cli_replace_history(chat, continued.messages, pins)
            except (ValueError, TypeError, IndexError) as exc:
                raise StoreError("exchange %d cannot be restored: %s" % (continued.exchange_id, exc)) from None
            ctx.out.note(continued.describe(ctx.out) + ("" if saving else " (not saved: --no-save)"))
        else:
            saved = ctx.store.read_session(name, move_aside=saving)
            if saved is not None:
                # the very content the store read (and will compare before the next save), not
                # a second read of the file that another process may have replaced meanwhile
                _cli_replace_history(chat, saved["messages"], saved["pinned"])
                chat.summary = saved.get("summary")
        role_undo: dict[str, Any] = {}
        if role is not None:
            flags = [k for k in ("model", "temperature", "max_tokens") if ctx.opt(k) is not None]
            role_undo = _cli_apply_role(chat, role, keep=flags)
        system = ctx.opt("system")
        if system is not None:
            system = ctx.clean(system, "the --system text")
            _cli_set_system(chat, system)
        conv = _CliConversation(ctx, chat, name if saving else None, interactive=question is None)
        if archived:
            ctx.out.note("The previous conversation is archived at %s" % archived)
        if saving and (new or system is not None or role is not None or continued is not None):
            conv.save()
        if question is None:
            editor = LineEditor(
                ctx.stdin, ctx.out.out, history_path=ctx.store.history_path if saving else None, secrets=ctx.out.secrets
            )
            repl = _CliRepl(conv, editor, system)
            repl.role, repl.role_undo, repl.pending = role_name, role_undo, attachments
            try:
                return repl.run()
            finally:
                if editor.new_lines and saving:
                    ctx.store.ensure_home()
                    try:
                        editor.save()
                    except OSError:
                        pass
        if schema is not None:
            return _cli_parse_once(ctx, conv, question, schema)
        if ctx.opt("json", False):
            import json

            conv.stream = False
            ctx.tokens.before(chat)
            before, started, history = chat.last_request, time.monotonic(), chat.fetch_messages()
            try:
                chat.request(question)
                ctx.out.line(json.dumps(chat.last_response, ensure_ascii=False, indent=2))
                conv.save()  # after the answer is shown: a refused save still leaves it on stdout
            except BaseException as exc:
                conv.log(question, history, before, started, exc)
                raise
            conv.log(question, history, before, started, None)
            return EXIT_OK
        return EXIT_OK if conv.ask(question) else EXIT_INTERRUPTED
    finally:
        ctx.close_logbook()
        if lock is not None:
            lock.release()


def _cli_markdown(name: str, messages: list[dict[str, Any]], pinned: Sequence[int]) -> str:
    lines = ["# openai2 session: %s" % name, ""]
    pins = set(pinned)
    for i, msg in enumerate(messages):
        lines.append("### %s%s" % (msg.get("role", "?"), " (pinned)" if i in pins else ""))
        lines.append("")
        content = msg.get("content")
        text = content if isinstance(content, str) else format_round([msg]).split(":", 1)[-1]
        lines.append(text if text else "_(empty)_")
        lines.append("")
    return "\n".join(lines)


def _cli_cmd_sessions(ctx: _CliContext) -> int:
    import json

    out = ctx.out
    action = ctx.opt("action")
    store = ctx.store
    ctx.mask_known_keys()
    if action == "list":
        infos = store.list_sessions()
        if not infos:
            out.line("No saved sessions (in %s)." % store.sessions_dir)
            return EXIT_OK
        for info in infos:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.modified))
            what = (
                ("%d message%s" % (info.messages, "" if info.messages == 1 else "s"))
                if info.messages is not None
                else "unreadable: %s" % info.error
            )
            out.line("%-20s %s  %s" % (info.name, when, what))
        return EXIT_OK
    name = ctx.session_name(ctx.opt("name"))
    if action == "delete":
        path = store.delete_session(name)
        out.line("Deleted session %s (%s)." % (name, path))
        return EXIT_OK
    data = store.read_session(name)
    if data is None:
        raise StoreError("no session named %r (see `openai2 sessions list`)" % name)
    messages, pins = data["messages"], data["pinned"]
    if action == "show":
        for i, msg in enumerate(messages):
            content = msg.get("content")
            text = content if isinstance(content, str) else format_round([msg]).split(":", 1)[-1]
            out.line("[%d%s %s]" % (i, "*" if i in pins else "", msg.get("role")), "bold")
            out.line(text)
        if not messages:
            out.line("(the conversation is empty)")
        return EXIT_OK
    fmt = ctx.opt("format", "json")
    if data.get("summary") is None:
        data.pop("summary", None)  # an export is the session file as it is: a summary only when one is kept
    text = (
        json.dumps(data, ensure_ascii=False, indent=2) + "\n" if fmt == "json" else _cli_markdown(name, messages, pins)
    )
    target = ctx.opt("output")
    if target and target != "-":  # "-o -" is stdout, as in most tools
        # an export is for sharing: keys are masked in it as on the terminal (the session file
        # itself keeps the conversation as it was)
        text = redact(text, out.secrets)
        atomic_write(os.path.expanduser(target), text.encode("utf-8"), private=True)  # conversations are private
        out.note("Exported session %s to %s" % (name, target))
    else:
        out.write(text)
    return EXIT_OK


def _cli_cmd_logs(ctx: _CliContext) -> int:
    import json

    out = ctx.out
    store = ctx.store
    action = ctx.opt("action")
    if action == "path":
        out.line(store.logs_path)
        return EXIT_OK
    if action in ("on", "off"):
        if action == "off":
            store.ensure_home()
            atomic_write(store.logs_off_path, b"logging turned off by `openai2 logs off`\n", private=True)
        elif os.path.lexists(store.logs_off_path):
            os.unlink(store.logs_off_path)
        out.line("Logging is %s (%s)." % (action, store.logs_path))
        return EXIT_OK
    missing = logbook_unavailable()
    if action == "status":
        if missing:
            out.line("Logging is off: %s." % missing)
        elif os.path.lexists(store.logs_off_path):
            out.line("Logging is off (`openai2 logs on` turns it on); the log is %s." % store.logs_path)
        elif os.environ.get("OPENAI2_LOG", "").strip() in ("0", "off", "false", "no"):
            out.line("Logging is off for this run (OPENAI2_LOG=0); the log is %s." % store.logs_path)
        else:
            out.line("Logging is on: %s." % store.logs_path)
        if not missing and os.path.lexists(store.logs_path):
            try:
                with Logbook(store.logs_path) as book:
                    count = len(book.exchanges(limit=None))
                    mode = book.search_mode
            except LogbookError as exc:
                raise StoreError(str(exc)) from None
            out.line("%d exchange%s logged; search: %s." % (count, "" if count == 1 else "s", mode))
        return EXIT_OK
    if missing:
        raise _CliUsageError("the log is off: %s" % missing)
    ctx.mask_known_keys()
    if not os.path.lexists(store.logs_path):  # a dangling link is not "nothing": Logbook says what it is
        out.line("Nothing logged yet (%s does not exist)." % store.logs_path)
        return EXIT_OK
    try:
        with Logbook(store.logs_path) as book:
            if action == "show":
                if ctx.opt("id") is None:
                    raise _CliUsageError("give the exchange's number: openai2 logs show ID (see `openai2 logs`)")
                record = book.get(ctx.opt("id"))
                if record is None:
                    raise StoreError("no exchange %d in the log (see `openai2 logs`)" % ctx.opt("id"))
                if ctx.opt("json", False):
                    out.line(json.dumps(record, ensure_ascii=False, indent=2))
                    return EXIT_OK
                _cli_show_exchange(out, record)
                return EXIT_OK
            since = ctx.opt("since")
            try:
                when = logbook_since(since) if since else None
            except ValueError as exc:
                raise _CliUsageError(str(exc)) from None
            # a query typed in a GBK or LANG=C terminal: its bytes that are not UTF-8 become
            # U+FFFD, with the note, as for TEXT (SQLite refuses text that is not Unicode)
            query, session, model = (
                ctx.clean(value, what) if value is not None else None
                for value, what in (
                    (ctx.opt("query"), "the -q text"),
                    (ctx.opt("session"), "the --session name"),
                    (ctx.opt("model"), "the --model name"),
                )
            )
            records = book.exchanges(
                limit=1 if ctx.opt("response") else ctx.opt("n"),
                query=query,
                session=session,
                model=model,
                since=when,
            )
    except LogbookError as exc:
        raise StoreError(str(exc)) from None
    if ctx.opt("response"):
        if records:
            out.line(records[-1]["answer"] or "")
        return EXIT_OK
    if ctx.opt("json", False):
        out.line(json.dumps(records, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not records:
        out.line("No logged exchange matches.")
    for record in records:
        _cli_show_exchange(out, record, brief=True)
    return EXIT_OK


def _cli_usage_text(usage: Any) -> str:
    if not isinstance(usage, dict):
        return str(usage)
    return "%s+%s tokens" % (usage.get("prompt_tokens", "?"), usage.get("completion_tokens", "?"))


def _cli_one_line(out: _CliOutput, text: str | None, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (then "…"), keys masked before the
    cut: a key across the cut would otherwise show its first characters, unmasked."""
    one = " ".join(redact(text or "", out.secrets).split())
    return one[:width] + ("…" if len(one) > width else "")


def _cli_show_exchange(out: _CliOutput, record: dict[str, Any], *, brief: bool = False) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["time"]))
    state = "" if record["status"] == "ok" else " [%s]" % record["status"]
    out.line(
        "#%d  %s  %s  %s @ %s%s"
        % (record["id"], when, record["session"] or "-", record["model"] or "?", record["host"] or "?", state),
        "bold",
    )
    if brief:
        for label, text in (("Q", record["question"]), ("A", record["answer"] or record["error"])):
            out.line("  %s: %s" % (label, _cli_one_line(out, text, 200)))
        return
    if record.get("incomplete"):
        out.line("[incomplete: %s; the messages before are missing]" % record["incomplete"], "error")
    for msg in record.get("messages", []):
        content = msg.get("content")
        out.line("[%s]" % msg.get("role"), "dim")
        out.line(content if isinstance(content, str) else format_round([msg]).split(":", 1)[-1])
    if record["reasoning"]:
        out.line("[reasoning]", "dim")
        out.line(record["reasoning"])
    out.line("[answer]", "assistant")
    out.line(record["answer"] or "")
    if record["error"]:
        out.line("[error] %s" % record["error"], "error")
    details = [
        "finish reason %s" % record["finish_reason"] if record["finish_reason"] else "",
        "%.2f s" % record["latency"] if record["latency"] is not None else "",
        "usage %s" % _cli_usage_text(record["usage"]) if record["usage"] else "",
        "key %s" % record["key_fingerprint"] if record["key_fingerprint"] else "",
    ]
    out.line("(%s)" % ", ".join(d for d in details if d), "dim")


def _cli_cmd_roles(ctx: _CliContext) -> int:
    """``openai2 roles list|show|add|edit|delete``: the user's roles (``Store.load_roles``) over
    the built-in ones."""
    out = ctx.out
    store = ctx.store
    action = ctx.opt("action")
    ctx.mask_known_keys()  # a prompt is printed as written: a key pasted into one is masked
    builtin = _cli_builtin_roles()
    user = store.load_roles()
    if action == "list":
        width = max(len(n) for n in set(user) | set(builtin))
        for name in sorted(set(user) | set(builtin)):
            role = user.get(name) or builtin[name]
            mark = (
                "yours, overrides the built-in"
                if name in user and name in builtin
                else ("yours" if name in user else "built-in")
            )
            params = _cli_role_params(role)
            summary = redact(" ".join(role["system"].split()), out.secrets)  # mask first, then cut
            summary = summary if len(summary) <= 70 else summary[:69] + "…"  # `roles show` has it all
            out.line("%-*s  [%s]  %s%s" % (width, name, mark, params + " · " if params else "", summary))
        return EXIT_OK
    name = ctx.opt("name")
    try:
        check_role_name(name)
    except StoreError as exc:
        raise _CliUsageError(str(exc)) from None
    if action == "show":
        try:
            role, is_builtin = _cli_find_role(ctx, name)
        except _CliInputError as exc:
            raise _CliUsageError(str(exc)) from None
        mark = "built-in" if is_builtin else ("yours, overrides the built-in" if name in builtin else "yours")
        out.line("Role %s (%s)" % (name, mark), "bold")
        for key in ("model", "temperature", "max_tokens"):
            out.line("%s: %s" % (key, role[key] if key in role else "(not set: the chat's own)"))
        out.line("System prompt:", "bold")
        out.line(role["system"])
        return EXIT_OK
    if action == "delete":
        if not store.delete_role(name):
            if name in builtin:
                raise _CliUsageError(
                    "%s is a built-in role and cannot be deleted; `openai2 roles add %s --system TEXT` overrides it"
                    % (name, name)
                )
            raise _CliUsageError("no role of yours named %r (see `openai2 roles list`)" % name)
        out.line("Deleted your role %s%s." % (name, "; the built-in %s is back" % name if name in builtin else ""))
        return EXIT_OK
    if action == "add":
        system = ctx.opt("system")
        if system == "-":
            system, note = _cli_read_stdin(ctx.stdin)
            if note:
                out.note(note)
        role = {"system": ctx.clean(system, "the --system text").strip()}
        for key in ("model", "temperature", "max_tokens"):
            if ctx.opt(key) is not None:
                role[key] = ctx.opt(key)
    else:  # edit: the role's prompt (the built-in's, or nothing for a new name) in the editor
        role = dict(user.get(name) or builtin.get(name) or {"system": ""})
        try:
            edited = _cli_edit(out, role["system"] + ("\n" if role["system"] else ""))
        except _CliInputError as exc:
            raise _CliUsageError(str(exc)) from None
        if edited is None:
            out.line("Role %s unchanged." % name)
            return EXIT_OK
        if edited == role["system"]:
            out.line("Role %s unchanged (the text is the same)." % name)
            return EXIT_OK
        role["system"] = edited
    try:
        replaced = store.save_role(name, role)
    except ValueError as exc:
        raise _CliUsageError(str(exc)) from None
    how = "Replaced your role" if replaced else "Saved the role"
    extra = (
        "; it overrides the built-in %s (`openai2 roles delete %s` brings that back)" % (name, name)
        if name in builtin and not replaced
        else ""
    )
    out.line("%s %s (%s)%s." % (how, name, store.roles_path, extra))
    return EXIT_OK


_CLI_DEMO_SCRIPT = (
    "What comes after the natural number 50?",
    "And the next?",
    "And the next?",
    "/undo",
    "And the next?",
    "/pin 1",
    "/limit 4",
    "What is the capital of Japan?",
    "/history",
)


def _cli_cmd_demo(ctx: _CliContext) -> int:
    out = ctx.out
    out.line("openai2 demo: a conversation with a tiny scripted model on a local fake server.", "bold")
    out.line("No key, no network, nothing saved. Answers stream in piece by piece, /undo rolls a", "dim")
    out.line("round back, and a pinned message survives a 4-message history limit (MsgMaxCount).", "dim")
    # Deliberately lazy: only `demo` needs the fake server, and `openai2 --help` should not
    # load it. (In the single-file build the names are already defined and this line is cut.)
    from .demo import DemoBrain
    from .testing import FakeServer

    with FakeServer(handler=DemoBrain()) as server:
        chat = Chat("", base_url=server.base_url, model="demo", system="You are the openai2 demo.")
        conv = _CliConversation(ctx, chat, None, interactive=True)
        conv.stream = True
        conv.piece_delay = 0.03 if _cli_isatty(out.out) else 0.0
        repl = _CliRepl(conv, None, None)
        for line in _CLI_DEMO_SCRIPT:
            out.write("You: ", "prompt")
            out.line(line)
            repl.handle(line)
            chat.client.close()
    out.line("That was all offline. Try it for real: openai2 add_apikey, then openai2 chat.", "bold")
    return EXIT_OK


def _cli_serve_pairs(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise _CliUsageError("%s wants NAME=VALUE, got %r" % (what, item))
        pairs.append((name.strip(), value.strip()))
    return pairs


def _cli_cmd_serve(ctx: _CliContext) -> int:
    """``openai2 serve``: the gateway in the foreground until Ctrl-C or SIGTERM."""
    import signal

    # Deliberately lazy: only `serve` needs http.server and the gateway.
    from .gateway import Gateway, GatewayError, gateway_keys_from_env

    key, where = ctx.resolve_key()
    token = ctx.opt("token")
    if token:
        ctx.out.secrets.append(token)
    fallbacks: list[Any] = []
    for item in ctx.opt("fallback") or []:
        url, sep, env = item.rpartition("=")
        if sep and env.replace("_", "").isalnum() and not env[:1].isdigit() and "/" not in env:
            fallbacks.append((url, gateway_keys_from_env(env)))
        else:
            fallbacks.append(item)
    try:
        gateway = Gateway(
            ctx.opt("base_url"),
            key,
            fallbacks=fallbacks,
            token=token,
            host=ctx.opt("host"),
            port=ctx.opt("port"),
            aliases=dict(_cli_serve_pairs(ctx.opt("alias") or [], "--alias")),
            cors=ctx.opt("cors"),
            proxy=ctx.opt("proxy"),
            ca_file=ctx.opt("ca_file"),
            timeout=ctx.opt("timeout"),
            ui=not ctx.opt("no_ui"),
            quiet=bool(ctx.opt("quiet")),
            log=ctx.out.err,
            organization=ctx.opt("organization"),
            project=ctx.opt("project"),
            forward_org_headers=bool(ctx.opt("forward_org_headers")),
            **{
                name: ctx.opt(name)
                for name in ("max_body", "max_workers", "shutdown_grace")
                if ctx.opt(name) is not None
            },
        )
        gateway.start()
    except (GatewayError, ValueError, TypeError) as exc:
        raise _CliUsageError(str(exc)) from None

    def _on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _on_term)
    except (ValueError, OSError):  # not the main thread
        previous = None
    ctx.out.line("openai2 serve: %s (keys: %s); Ctrl-C stops" % (gateway.base_url, where), err=True)
    try:
        gateway.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    ctx.out.line("openai2 serve: stopped", err=True)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    sleep: Any = None,
    transport: Any = None,
) -> int:
    """Run the command line; returns the exit status (0 ok, 1 API error, 2 usage error,
    3 storage problem, 130 interrupted).

    :param argv: the arguments (default ``sys.argv[1:]``)
    :param stdin: where questions and keys are read (default ``sys.stdin``)
    :param stdout: where answers go (default ``sys.stdout``)
    :param stderr: where errors, notes and reasoning go (default ``sys.stderr``)
    :param sleep: ``sleep(seconds, cancel_scope)``, the pause between retries of a failed
        request (default: a real, cancellable one; tests inject one)
    :param transport: the transport of the chat commands' client (default: HTTP; tests pass a
        :class:`openai2.testing.MemoryTransport` to run the CLI without sockets)
    """
    out = _CliOutput(sys.stdout if stdout is None else stdout, sys.stderr if stderr is None else stderr)
    if stdin is None:
        stdin = sys.stdin
        try:
            # lines typed at the prompt in another encoding: decoded as surrogates, then
            # replaced with a note (_cli_clean_text), never a UnicodeDecodeError
            stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass
    debug = os.environ.get("OPENAI2_DEBUG", "") not in ("", "0")
    base_url = ""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        out.argv_secrets = _cli_argv_secrets(argv)
        parser = _cli_build_parser(out)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
        if getattr(args, "api_key", None):
            out.secrets.append(args.api_key.strip())
        base_url = getattr(args, "base_url", None) or os.environ.get("OPENAI_BASE_URL") or ""
        ctx = _CliContext(args, out, stdin, Store(), sleep, transport)
        command = args.command or "chat"
        if command in ("chat", "newchat", "new-chat"):
            import warnings

            with warnings.catch_warnings():
                # a failed summary is one note on this stderr (after_request), not a Python warning
                warnings.filterwarnings(
                    "ignore", "openai2: the earlier messages could not be summarised", RuntimeWarning
                )
                return _cli_cmd_chat(ctx, new=command != "chat")
        if command in ("add_apikey", "add-apikey"):
            return _cli_cmd_add_apikey(ctx)
        if command in ("read_apikey", "read-apikey"):
            return _cli_cmd_read_apikey(ctx)
        if command in ("clear_apikey", "clear-apikey"):
            return _cli_cmd_clear_apikey(ctx)
        if command == "sessions":
            return _cli_cmd_sessions(ctx)
        if command == "demo":
            return _cli_cmd_demo(ctx)
        if command == "serve":
            return _cli_cmd_serve(ctx)
        if command == "logs":
            return _cli_cmd_logs(ctx)
        if command == "roles":
            return _cli_cmd_roles(ctx)
        raise _CliUsageError("unknown command %r" % command)  # pragma: no cover - argparse checks
    except BrokenPipeError:
        # The reader went away (``openai2 chat ... | head``): stop quietly; point stdout at
        # devnull so the interpreter's final flush does not complain again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.out.fileno())
        except (OSError, AttributeError, ValueError):
            pass
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        _cli_debug(out, debug)
        out.end_line()
        out.line("openai2: interrupted", err=True)
        return EXIT_INTERRUPTED
    except _CliUsageError as exc:
        _cli_debug(out, debug)
        out.error(str(exc))
        return EXIT_USAGE
    except (StoreError, OSError) as exc:
        _cli_debug(out, debug)
        out.error(_cli_error_text(exc))
        return EXIT_STORAGE
    except (APIError, OpenAIError) as exc:
        _cli_debug(out, debug)
        out.error(_cli_error_text(exc, base_url))
        return EXIT_API_ERROR
    except Exception as exc:  # one line for the user; the traceback on request
        if debug:
            raise
        out.error("unexpected %s: %s (set OPENAI2_DEBUG=1 for the traceback)" % (type(exc).__name__, exc))
        return EXIT_API_ERROR


def _cli_debug(out: _CliOutput, debug: bool) -> None:
    if debug:
        import traceback

        out.write(traceback.format_exc(), err=True)
