"""``GroupChat``: a multi-role group-chat simulation tied to a client.

A :class:`GroupChat` holds a cast (``roles``: name -> description), the dialog recorded so far
(remarks ``{"speaker", "audiences", "remark"}``, oldest first, trimmed to ``MaxRemarks``) and an
:class:`OpenAI` client.  ``request(turns)`` asks the model to write the next remark of each
requested ``(speaker, [audiences])`` and returns its text (a JSON array when the model obeys);
``request_remarks(turns)`` parses and validates that array.

The prompt is built from the roles, the recorded dialog and the requested turns only, in
Chinese when the group's text is mostly Chinese and in English otherwise: a system message
with the task and the output shape, and one user message with the cast, the dialog and the
turns (see README "Group chat" for the exact text).
"""

from __future__ import annotations

import os

from .chat import write_archive_file
from .client import OpenAI, require_choices
from .common import TYPE_CHECKING
from .completion import accumulator_from_completion
from .conversation import BaseConversation
from .files import read_json_file
from .history import check_json_text, valid_unicode
from .keypool import AKPool
from .objects import to_attr

if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Sequence, Tuple, Union

    _GCTurn = Union[Tuple[str, Union[str, Sequence[str]]], Mapping[str, Any]]

GROUPCHAT_ARCHIVE_FORMAT = "openai2.groupchat"
GROUPCHAT_ARCHIVE_VERSION = 1

# The prompts.  The headings of the user message are also what DemoBrain (testing.py) looks for.
_GC_SYSTEM_ZH = (
    "你负责模拟一个多人群聊。用户会给出角色设定、已有的对话和需要写出的发言；"
    "请以说话人的身份、贴合其角色设定，接着已有的对话写出每一条需要的发言。\n"
    "只输出一个 JSON 数组，不要输出任何其他文字，也不要用代码块包裹。"
    "每条需要的发言对应数组中的一个对象，顺序与要求一致，格式为：\n"
    '{"speaker": "说话人", "audiences": ["听众", ...], "remark": "发言内容"}\n'
    "speaker 和 audiences 必须与要求中的名字完全一致。"
)
_GC_SYSTEM_EN = (
    "You simulate a group chat. The user gives the roles, the conversation so far and the "
    "remarks to write; write each requested remark in the voice of its speaker, true to the "
    "role, continuing the conversation.\n"
    "Output only a JSON array, with no other text and no code fence. One object per requested "
    "remark, in the requested order, of the form:\n"
    '{"speaker": "speaker\'s name", "audiences": ["audience\'s name", ...], "remark": "what the speaker says"}\n'
    "speaker and audiences must be exactly the names given in the request."
)
_GC_HEADINGS = {
    "zh": (
        "角色设定：",
        "已有的对话（按时间顺序）：",
        "已有的对话：（暂无）",
        "需要写出的发言（按此顺序）：",
        "：",
        "（无描述）",
    ),
    "en": (
        "Roles:",
        "Conversation so far (oldest first):",
        "Conversation so far: (none yet)",
        "Remarks to write (in this order):",
        ": ",
        "(no description)",
    ),
}
_GC_SPLIT_AUDIENCES = ",，、;；"


class GroupChatReplyError(ValueError):
    """The model's reply to a group-chat request cannot be used.

    :ivar raw: the reply text, exactly as received
    :ivar problems: what is wrong, one sentence each
    """

    def __init__(self, message: str, raw: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.raw = raw
        self.problems = list(problems)


def _gc_is_han(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F
    )


def _gc_detect_language(texts: Iterable[str]) -> str:
    """``"zh"`` when the texts hold at least as many Han characters as Latin words, else ``"en"``.

    A Han character carries about as much as a word, so an English cast with one Chinese name
    stays English while the seed's all-Chinese group gets a Chinese prompt.
    """
    han = 0
    words = 0
    for text in texts:
        in_word = False
        for ch in text:
            if _gc_is_han(ch):
                han += 1
                in_word = False
            elif ("a" <= ch <= "z") or ("A" <= ch <= "Z"):
                if not in_word:
                    words += 1
                in_word = True
            else:
                in_word = False
    return "zh" if han and han >= words else "en"


def _gc_check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("%s must be a non-empty string naming a role, not %r" % (what, name))
    return name


def _gc_check_roles(roles: object, where: str = "roles") -> dict[str, str]:
    """A validated copy of a roles mapping (name -> description; None means no description)."""
    if not isinstance(roles, dict):
        raise ValueError("%s must be a dict of role name -> description, not %s" % (where, type(roles).__name__))
    out: dict[str, str] = {}
    for name, description in roles.items():
        _gc_check_name(name, "%s: a role name" % where)
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise ValueError(
                "%s: the description of %r must be a string, not %s" % (where, name, type(description).__name__)
            )
        check_json_text(name, where, ("a role name",))
        check_json_text(description, where, ("the description of %r" % name,))
        out[name] = description
    return out


def _gc_audiences(value: object, what: str) -> list[str]:
    """Audiences as a list of names: a single name string is one audience; duplicates dropped."""
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError("%s: audiences must be a list of role names, not %s" % (what, type(value).__name__))
    out: list[str] = []
    for item in items:
        name = _gc_check_name(item, "%s: an audience" % what)
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("%s: audiences is empty; name at least one role the speaker talks to" % what)
    return out


def _gc_unknown(names: Iterable[str], roles: Mapping[str, str]) -> list[str]:
    unknown: list[str] = []
    for name in names:
        if name not in roles and name not in unknown:
            unknown.append(name)
    return unknown


def _gc_raise_unknown(unknown: Sequence[str], roles: Mapping[str, str], where: str) -> None:
    known = ", ".join(map(repr, roles)) or "none yet"
    raise ValueError(
        "%s: unknown role%s %s; add %s to group.roles first (known roles: %s)"
        % (
            where,
            "s" if len(unknown) > 1 else "",
            ", ".join(map(repr, unknown)),
            "them" if len(unknown) > 1 else "it",
            known,
        )
    )


def _gc_check_remark(item: object, roles: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    """A validated ``{"speaker", "audiences", "remark"}`` copy of one dialog entry.

    ``roles=None`` (an archive being loaded) accepts names that are not in the cast: a remark
    stays part of the dialog after its speaker or audience left the cast.
    """
    if not isinstance(item, dict):
        raise ValueError(
            '%s: a remark must be a dict {"speaker", "audiences", "remark"}, not %s' % (where, type(item).__name__)
        )
    missing = [k for k in ("speaker", "audiences", "remark") if k not in item]
    if missing:
        raise ValueError("%s: the remark has no %s" % (where, ", ".join(map(repr, missing))))
    return _gc_make_remark(item["speaker"], item["audiences"], item["remark"], roles, where)


def _gc_make_remark(
    speaker: object, audiences: object, remark: object, roles: Mapping[str, str] | None, where: str
) -> dict[str, Any]:
    name = _gc_check_name(speaker, "%s: the speaker" % where)
    listeners = _gc_audiences(audiences, where)
    if not isinstance(remark, str):
        raise ValueError("%s: the remark must be a string, not %s" % (where, type(remark).__name__))
    check_json_text(name, where, ("the speaker",))
    check_json_text(listeners, where, ("audiences",))
    check_json_text(remark, where, ("the remark",))
    if roles is not None:
        unknown = _gc_unknown([name] + listeners, roles)
        if unknown:
            _gc_raise_unknown(unknown, roles, where)
    if name in listeners:
        raise ValueError("%s: %r cannot be among their own audiences" % (where, name))
    return {"speaker": name, "audiences": listeners, "remark": remark}


def _gc_check_turns(turns: object, roles: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """Requested turns as ``[(speaker, [audiences]), ...]``; every name must be a role."""
    if isinstance(turns, (str, bytes)) or not isinstance(turns, (list, tuple)):
        raise ValueError("turns must be a list such as [('苏轼', ['李清照'])], not %s" % type(turns).__name__)
    if not turns:
        raise ValueError("no turns requested: pass a list such as [('苏轼', ['李清照'])]")
    out: list[tuple[str, list[str]]] = []
    names: list[str] = []
    for i, turn in enumerate(turns):
        where = "turn %d" % (i + 1)
        if isinstance(turn, dict):
            speaker, audiences = turn.get("speaker"), turn.get("audiences")
        elif isinstance(turn, (list, tuple)) and len(turn) == 2:
            speaker, audiences = turn
        else:
            raise ValueError("%s: a turn is a pair (speaker, [audiences]), not %r" % (where, turn))
        name = _gc_check_name(speaker, "%s: the speaker" % where)
        listeners = _gc_audiences(audiences, where)
        if name in listeners:
            raise ValueError("%s: %r cannot be among their own audiences" % (where, name))
        out.append((name, listeners))
        names.append(name)
        names.extend(listeners)
    unknown = _gc_unknown(names, roles)
    if unknown:
        _gc_raise_unknown(unknown, roles, "request")
    return out


def _gc_json_line(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def build_groupchat_messages(
    roles: Mapping[str, str],
    dialogs: Sequence[Mapping[str, Any]],
    turns: Sequence[tuple[str, Sequence[str]]],
    language: str | None = None,
) -> list[dict[str, str]]:
    """The chat messages a group-chat request sends: a system message and a user message.

    :param roles: name -> description (every role is listed, with its description)
    :param dialogs: the recorded remarks, oldest first
    :param turns: the requested ``(speaker, [audiences])`` pairs, in order
    :param language: ``"zh"`` or ``"en"``; None picks Chinese when the roles and remarks are
        mostly Chinese (Han characters at least as many as Latin words), else English
    :returns: ``[{"role": "system", ...}, {"role": "user", ...}]``
    """
    if language is None:
        texts: list[str] = []
        for name, description in roles.items():
            texts.append(name)
            texts.append(description)
        texts.extend(str(d.get("remark", "")) for d in dialogs)
        language = _gc_detect_language(texts)
    if language not in _GC_HEADINGS:
        raise ValueError("language must be 'zh', 'en' or None (automatic), not %r" % (language,))
    roles_h, dialog_h, no_dialog_h, turns_h, colon, _ = _GC_HEADINGS[language]
    lines = [roles_h]
    for name, description in roles.items():
        lines.append("- " + name + (colon + description if description else ""))
    lines.append("")
    if dialogs:
        lines.append(dialog_h)
        for d in dialogs:
            lines.append(
                _gc_json_line({"speaker": d["speaker"], "audiences": list(d["audiences"]), "remark": d["remark"]})
            )
    else:
        lines.append(no_dialog_h)
    lines.append("")
    lines.append(turns_h)
    for speaker, audiences in turns:
        lines.append(_gc_json_line({"speaker": speaker, "audiences": list(audiences)}))
    system = _GC_SYSTEM_ZH if language == "zh" else _GC_SYSTEM_EN
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def _gc_find_array(raw: str) -> Any:
    """The JSON value the reply carries: the whole text, a fenced block, or, in text around it,
    the first array holding objects, else the first non-empty object (one remark, or an object
    wrapping the array).  Bracketed words and lists of names that the model quoted from the
    prompt are skipped."""
    from .structured import find_json

    found, value = find_json(raw, ("[", "{"), _gc_remarks_like)
    if not found:
        found, value = find_json(raw, ())  # the whole text or a fence, whatever it holds
    if found:
        return value
    raise GroupChatReplyError(
        "the model's reply holds no JSON array of remarks; got: %s" % _gc_preview(raw), raw, ["no JSON array found"]
    )


def _gc_remarks_like(value: object) -> bool:
    return (isinstance(value, list) and any(isinstance(v, dict) for v in value)) or (
        isinstance(value, dict) and bool(value)
    )


def _gc_preview(raw: str) -> str:
    text = " ".join(raw.split())
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _gc_reply_audiences(value: object, roles: Mapping[str, str]) -> list[str] | None:
    """Audiences as the model wrote them: a list, one name, or names joined by commas."""
    if isinstance(value, str):
        if value in roles:
            return [value]
        parts = [value]
        for sep in _GC_SPLIT_AUDIENCES:
            parts = [piece for part in parts for piece in part.split(sep)]
        names = [p.strip() for p in parts if p.strip()]
        return names or None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        out: list[str] = []
        for v in value:
            if v not in out:
                out.append(v)
        return out
    return None


def parse_groupchat_reply(
    raw: str, turns: Sequence[tuple[str, Sequence[str]]], roles: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Parse and check a model's reply to a group-chat request.

    Tolerates a ```json fence, text around the array, an object wrapping the array (as
    ``response_format={"type": "json_object"}`` forces) and audiences given as one string.

    :param raw: the reply text
    :param turns: the requested ``(speaker, [audiences])`` pairs
    :param roles: the cast (used to tell one name from names joined by commas)
    :returns: one ``{"speaker", "audiences", "remark"}`` dict per requested turn, in the requested
        order, with the names exactly as requested
    :raises GroupChatReplyError: no array, a malformed item, a turn missing, or an extra remark
    """
    try:
        return _gc_parse_reply(raw, turns, roles or {})
    except RecursionError:
        # a reply of "[[[[..." 100,000 levels deep: no remark array, whatever else it is
        raise GroupChatReplyError(
            "the model's reply is nested too deeply to be a JSON array of remarks; got: %s" % _gc_preview(raw),
            raw,
            ["nested too deeply"],
        ) from None


def _gc_parse_reply(
    raw: str, turns: Sequence[tuple[str, Sequence[str]]], roles: Mapping[str, str]
) -> list[dict[str, Any]]:
    value = _gc_find_array(raw)
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if "speaker" in value:
            value = [value]
        elif len(lists) == 1:
            value = lists[0]
    if not isinstance(value, list):
        raise GroupChatReplyError(
            "the model's reply is JSON but not an array of remarks; got: %s" % _gc_preview(raw), raw, ["not an array"]
        )
    problems: list[str] = []
    wanted: list[tuple[str, frozenset[str]]] = [(s, frozenset(a)) for s, a in turns]
    remarks: list[str | None] = [None] * len(turns)
    for i, item in enumerate(value):
        where = "item %d" % (i + 1)
        if not isinstance(item, dict):
            problems.append("%s is not an object: %s" % (where, _gc_preview(_gc_json_line(item))))
            continue
        speaker = item.get("speaker")
        audiences = _gc_reply_audiences(item.get("audiences"), roles)
        remark = item.get("remark")
        if not isinstance(speaker, str) or audiences is None:
            problems.append("%s lacks a speaker name or audience names: %s" % (where, _gc_preview(_gc_json_line(item))))
            continue
        if not isinstance(remark, str) or not remark.strip():
            problems.append("%s (%s) has no remark text" % (where, speaker))
            continue
        key = (speaker, frozenset(audiences))
        slot = next((j for j, w in enumerate(wanted) if w == key and remarks[j] is None), None)
        if slot is None:
            again = any(w == key for w in wanted)
            problems.append(
                "%s is %s: %s to %s"
                % (where, "one remark too many" if again else "not a requested turn", speaker, ", ".join(audiences))
            )
            continue
        remarks[slot] = remark
    for j, (wanted_speaker, wanted_audiences) in enumerate(turns):
        if remarks[j] is None:
            problems.append("no remark for turn %d: %s to %s" % (j + 1, wanted_speaker, ", ".join(wanted_audiences)))
    if problems:
        raise GroupChatReplyError("the model's reply does not fit the request: %s" % "; ".join(problems), raw, problems)
    # a lone surrogate (a broken escape in the model's JSON) would make the dialog unarchivable
    return [{"speaker": s, "audiences": list(a), "remark": valid_unicode(r or "")} for (s, a), r in zip(turns, remarks)]


def _gc_check_max(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("MaxRemarks must be a whole number or None, not %s" % type(value).__name__)
    if value < 0:
        raise ValueError("MaxRemarks must be 0 or more (0 or None: no limit), got %d" % value)
    return value or None


class GroupChat(BaseConversation):
    """A group chat of several roles, played by the model one requested remark at a time.

    ``GroupChat(api_key, model=..., MaxRemarks=..., **params)``: client options (``base_url``,
    ``timeout``, ``max_retries``, ``proxy``, ``organization``, ``project``, ``default_headers``,
    ``verify``, ``ca_file``, ``max_response_bytes``, ``transport``) configure the client; every
    other keyword (``model``, ``temperature``, ``response_format``, …) becomes a default request
    parameter, which per-call keywords of ``request``/``request_remarks``/``async_*`` override.

    :param api_key: a key or an :class:`AKPool` (None: ``OPENAI_API_KEY``, or no key)
    :param roles: the initial cast, name -> description (``group.roles`` can be edited any time)
    :param MaxRemarks: keep at most this many recorded remarks, dropping the oldest first;
        ``max_remarks`` is accepted too; None or 0 means no limit
    :param language: the prompt's language, ``"zh"`` or ``"en"``; None (default) follows the
        roles and remarks
    :param client: an existing :class:`OpenAI` client to share (then no client options)
    """

    def __init__(
        self,
        api_key: str | AKPool | None = None,
        *,
        roles: Mapping[str, str] | None = None,
        MaxRemarks: int | None = None,  # noqa: N803 - named like Chat's MsgMaxCount
        max_remarks: int | None = None,
        language: str | None = None,
        client: OpenAI | None = None,
        **kwargs: Any,
    ) -> None:
        if MaxRemarks is not None and max_remarks is not None and MaxRemarks != max_remarks:
            raise ValueError("give MaxRemarks or max_remarks, not both")
        super().__init__(api_key, client, kwargs, "GroupChat")
        if language not in (None, "zh", "en"):
            raise ValueError("language must be 'zh', 'en' or None (automatic), not %r" % (language,))
        self.roles: dict[str, str] = _gc_check_roles(dict(roles or {}))
        self.language = language
        self._max = _gc_check_max(MaxRemarks if MaxRemarks is not None else max_remarks)
        self._dialogs: list[dict[str, Any]] = []

    # -- configuration ------------------------------------------------------------------------
    @property
    def MaxRemarks(self) -> int | None:  # noqa: N802 - named like Chat's MsgMaxCount
        """The dialog limit (None: unlimited); setting it trims at once."""
        return self._max

    @MaxRemarks.setter
    def MaxRemarks(self, value: int | None) -> None:  # noqa: N802
        checked = _gc_check_max(value)
        with self._lock:
            self._max = checked
            self._trim()

    max_remarks = MaxRemarks

    def __repr__(self) -> str:
        return "<GroupChat model=%r roles=%d remarks=%d client=%r>" % (
            self.params.get("model"),
            len(self.roles),
            len(self._dialogs),
            self._client,
        )

    def __len__(self) -> int:
        return len(self._dialogs)

    # -- dialog -------------------------------------------------------------------------------
    def _trim(self) -> None:
        if self._max is not None and len(self._dialogs) > self._max:
            del self._dialogs[: len(self._dialogs) - self._max]

    def _roles(self) -> dict[str, str]:
        return _gc_check_roles(self.roles, "group.roles")

    def add_dialog(self, speaker: str, audiences: Sequence[str] | str, remark: str) -> None:
        """Record a remark: ``speaker`` said ``remark`` to ``audiences`` (role names).

        :param audiences: a list of role names (a single name string is accepted too)
        :raises ValueError: a name is not in ``roles`` (the error names it), audiences is empty,
            or the remark is not a string; nothing is recorded
        """
        entry = _gc_make_remark(speaker, audiences, remark, self._roles(), "add_dialog")
        with self._lock:
            self._dialogs.append(entry)
            self._trim()

    def export_dialogs(self) -> list[dict[str, Any]]:
        """A copy of the recorded dialog: ``[{"speaker", "audiences": [...], "remark"}, ...]``."""
        with self._lock:
            return [
                {"speaker": d["speaker"], "audiences": list(d["audiences"]), "remark": d["remark"]}
                for d in self._dialogs
            ]

    def import_dialogs(self, dialogs: Sequence[Mapping[str, Any]]) -> None:
        """Append remarks (as given by ``export_dialogs``) to the dialog, oldest first.

        :raises ValueError: an entry is malformed or names an unknown role (the error says which
            entry); nothing is recorded
        """
        if isinstance(dialogs, (str, bytes, dict)) or not isinstance(dialogs, (list, tuple)):
            raise ValueError("import_dialogs needs a list of remarks, not %s" % type(dialogs).__name__)
        roles = self._roles()
        checked = [_gc_check_remark(d, roles, "remark %d" % (i + 1)) for i, d in enumerate(dialogs)]
        with self._lock:
            self._dialogs.extend(checked)
            self._trim()

    def clear_dialogs(self) -> None:
        """Forget the recorded dialog (the roles stay)."""
        with self._lock:
            self._dialogs.clear()

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Save the whole group (roles and dialog) to ``path`` as UTF-8 JSON, atomically.

        The file is written beside ``path``, fsynced and renamed, so a crash never leaves a
        half-written archive.  The whole dialog is saved, remarks of roles no longer in
        ``roles`` included, and :meth:`load` reads it back.

        :raises ValueError: ``roles`` holds something ``load`` would refuse (a description that
            is not a string, an empty name): the error names it and nothing is written
        :raises FileNotFoundError: the folder does not exist (the error names ``path``)
        :raises OSError: the file cannot be written (named too); the old file is untouched
        """
        roles = self._roles()  # refuse up front what load would refuse
        with self._lock:
            data = {
                "format": GROUPCHAT_ARCHIVE_FORMAT,
                "version": GROUPCHAT_ARCHIVE_VERSION,
                "roles": roles,
                "dialogs": [
                    {"speaker": d["speaker"], "audiences": list(d["audiences"]), "remark": d["remark"]}
                    for d in self._dialogs
                ],
            }
        write_archive_file(path, data)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace the roles and the dialog with those saved in ``path`` by ``dump``.

        The dialog is then trimmed to ``MaxRemarks``.  Remarks whose speaker or audiences are
        no longer in the saved ``roles`` (a role deleted or renamed before ``dump``) are kept:
        they are what was said, and requests show them in the conversation as they are.

        :raises FileNotFoundError: no such file
        :raises ValueError: the file is not valid JSON or not a group-chat archive; the group is unchanged
        """
        path = os.fspath(path)
        data = read_json_file(path, "group-chat archive")
        if not isinstance(data, dict) or data.get("format") != GROUPCHAT_ARCHIVE_FORMAT:
            raise ValueError(
                "%s is not a group-chat archive (written by GroupChat.dump); the group was not changed" % path
            )
        if data.get("version") != GROUPCHAT_ARCHIVE_VERSION:
            raise ValueError("%s: unsupported group-chat archive version %r" % (path, data.get("version")))
        try:
            roles = _gc_check_roles(data.get("roles"), "roles")
            dialogs = data.get("dialogs")
            if not isinstance(dialogs, list):
                raise ValueError("'dialogs' must be a list of remarks")
            checked = [_gc_check_remark(d, None, "remark %d" % (i + 1)) for i, d in enumerate(dialogs)]
        except ValueError as exc:
            raise ValueError("%s: %s; the group was not changed" % (path, exc)) from None
        with self._lock:
            self.roles = roles
            self._dialogs = checked
            self._trim()

    # -- requests -----------------------------------------------------------------------------
    def build_messages(self, turns: Sequence[_GCTurn]) -> list[dict[str, str]]:
        """The messages ``request(turns)`` would send now (nothing is sent).

        :raises ValueError: a turn is malformed or names an unknown role
        """
        roles = self._roles()
        checked = _gc_check_turns(turns, roles)
        with self._lock:
            dialogs = list(self._dialogs)
        return build_groupchat_messages(roles, dialogs, checked, self.language)

    def _prepare(
        self, turns: Sequence[_GCTurn], params: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, list[str]]], dict[str, str], dict[str, Any]]:
        if "messages" in params:
            raise TypeError("messages= is managed by GroupChat; use add_dialog() to change the dialog")
        if params.get("stream"):
            raise TypeError("GroupChat does not stream: its answer is only usable once complete")
        params.pop("stream", None)
        roles = self._roles()
        checked = _gc_check_turns(turns, roles)
        body, options = self._request_body(params)
        with self._lock:
            dialogs = list(self._dialogs)
        body["messages"] = build_groupchat_messages(roles, dialogs, checked, self.language)
        return body, checked, roles, options

    def _finish(self, body: dict[str, Any], result: dict[str, Any]) -> str:
        require_choices(result)
        acc = accumulator_from_completion(result)
        usage = result.get("usage")
        with self._lock:
            self._note_answer(body, to_attr(result), usage)
        return acc.content

    def _record(self, remarks: list[dict[str, Any]]) -> None:
        with self._lock:
            self._dialogs.extend(
                {"speaker": r["speaker"], "audiences": list(r["audiences"]), "remark": r["remark"]} for r in remarks
            )
            self._trim()

    def request(self, turns: Sequence[_GCTurn], **params: Any) -> str:
        """Ask the model for the next remark of each requested ``(speaker, [audiences])``.

        The dialog is not changed (use ``request_remarks(..., record=True)`` for that).

        :param turns: ``[(speaker, [audiences]), ...]`` role names (``{"speaker", "audiences"}``
            dicts and a single audience string are accepted too)
        :param params: request parameters for this call (override the group's defaults)
        :returns: the model's text, as it answered (a JSON array when it followed the prompt)
        :raises ValueError: a turn names an unknown role (nothing is sent)
        :raises APIError: the request failed (after retries)
        """
        body, _, _, options = self._prepare(turns, params)
        return self._finish(body, self._send(body, options))

    def request_remarks(self, turns: Sequence[_GCTurn], *, record: bool = False, **params: Any) -> list[dict[str, Any]]:
        """``request``, then parse and check the answer: one remark per requested turn.

        :param record: append the generated remarks to the dialog (then trimmed to
            ``MaxRemarks``), so the next request continues the scene
        :returns: ``[{"speaker", "audiences": [...], "remark"}, ...]`` in the requested order
        :raises GroupChatReplyError: (a ValueError) the answer is unusable; ``.raw`` holds its
            text and nothing is recorded
        :raises APIError: the request failed (after retries)
        """
        body, checked, roles, options = self._prepare(turns, params)
        raw = self._finish(body, self._send(body, options))
        remarks = parse_groupchat_reply(raw, checked, roles)
        if record:
            self._record(remarks)
        return remarks

    async def async_request(self, turns: Sequence[_GCTurn], **params: Any) -> str:
        """``request`` as a coroutine: the network part runs in a worker thread.

        Cancelling the awaiting task closes the connection at once.
        """
        body, _, _, options = self._prepare(turns, params)
        result = await self._send_async(body, options)
        return self._finish(body, result)

    async def async_request_remarks(
        self, turns: Sequence[_GCTurn], *, record: bool = False, **params: Any
    ) -> list[dict[str, Any]]:
        """``request_remarks`` as a coroutine (a cancelled request records nothing)."""
        body, checked, roles, options = self._prepare(turns, params)
        result = await self._send_async(body, options)
        remarks = parse_groupchat_reply(self._finish(body, result), checked, roles)
        if record:
            self._record(remarks)
        return remarks
