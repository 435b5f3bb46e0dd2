"""The offline demo model: ``DemoBrain``, a tiny deterministic rule-based "model".

It gives the documented answers of the user's seed examples (``自然数50的后面是几?`` -> ``51``),
so ``openai2 demo`` and the README examples run offline, without a key.  A product feature, not
test machinery: the fake servers of ``openai2.testing`` use it as their default handler.

Also ``content_text(content)``: the text of a message's ``content`` (a string or a list of
content parts), which the fake wire uses for its usage estimates too.

Nothing heavy is imported at module level (``re`` and ``json`` are imported on first use).
"""

from __future__ import annotations

from .common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Sequence


def content_text(content: object) -> str:
    """The text of a message's ``content``: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


_DEMO_APOLOGY_ZH = "非常抱歉，我刚才的回答有些不适当。1+1=2, 10+10=20。非常抱歉给你带来困扰！"
_DEMO_APOLOGY_EN = "I am very sorry, my previous answer was inappropriate. 1+1=2 and 10+10=20. Sorry for the trouble!"

#: Questions of the seed documents -> their documented answers (keys normalised on first use).
_DEMO_FACTS_ZH = {
    "英国的首都是什么？": "伦敦",
    "日本首都是什么？": "东京",
    "意大利的首都是什么？": "罗马",
    "美国的首都是什么？": "华盛顿",
    "世界上国土面积最大的国家是哪个？": "俄罗斯",
    "法国的首都叫什么？": "巴黎",
    "青蛙的幼体叫什么？": "蝌蚪",
    "世界上最大的海洋是什么？": "太平洋",
    "世界上最大的海洋是哪个?": "世界上最大的海洋是太平洋。",
    "哦吼, 你还敢骂我呀?": _DEMO_APOLOGY_ZH,
}

_DEMO_CAPITALS_EN = {
    "uk": "London",
    "united kingdom": "London",
    "britain": "London",
    "great britain": "London",
    "england": "London",
    "japan": "Tokyo",
    "italy": "Rome",
    "france": "Paris",
    "united states": "Washington, D.C.",
    "us": "Washington, D.C.",
    "usa": "Washington, D.C.",
    "america": "Washington, D.C.",
    "china": "Beijing",
    "germany": "Berlin",
    "russia": "Moscow",
}

_demo_demo_cache: dict[str, Any] = {}


def _demo_normalise(text: str) -> str:
    """Fold a question for lookup: no spaces, ASCII punctuation, no trailing ?!. marks, lower case."""
    table = {"？": "?", "，": ",", "！": "!", "。": ".", "：": ":", "；": ";"}
    folded = "".join(table.get(ch, ch) for ch in text if not ch.isspace())
    return folded.rstrip("?!.").lower()


def _demo_demo_patterns() -> dict[str, Any]:
    """Compile the demo's patterns once, on first use (``re`` is not imported at module level)."""
    if not _demo_demo_cache:
        import re

        _demo_demo_cache.update(
            successor_zh=re.compile(r"自然数\s*(-?\d+)\s*的?后面是几"),
            successor_en=re.compile(r"what\s+comes\s+after\s+(?:the\s+)?(?:natural\s+)?(?:number\s+)?(-?\d+)", re.I),
            next_zh=re.compile(r"^(?:那)?再?往后(?:是几|呢|是多少)?[?？!！。.]*$|^下一个(?:是几|呢)?[?？]*$"),
            next_en=re.compile(r"^(?:and\s+)?(?:the\s+|what\s+comes\s+|what'?s\s+)?(?:next|after\s+that)\b", re.I),
            number=re.compile(r"-?\d+"),
            capital_en=re.compile(
                r"^what(?:\s+is|'s)\s+the\s+capital\s+(?:city\s+)?of\s+(?:the\s+)?([a-z .]+?)[?.!\s]*$", re.I
            ),
            largest_country_en=re.compile(r"\blargest\s+country\b", re.I),
            frog_en=re.compile(r"\b(?:baby|young)\s+(?:of\s+a\s+)?frogs?\b|\bfrogs?\b.*\b(?:young|larva|baby)\b", re.I),
            ocean_en=re.compile(r"\b(?:largest|biggest)\s+ocean\b", re.I),
            insult_en=re.compile(r"\bhow\s+dare\s+you\b|\binsult", re.I),
            facts={_demo_normalise(k): v for k, v in _DEMO_FACTS_ZH.items()},
        )
    return _demo_demo_cache


# ---- GroupChat prompts (groupchat.py): answer with a JSON array of remarks -----------------
_DEMO_GROUPCHAT_HEADINGS = ("需要写出的发言（按此顺序）：", "Remarks to write (in this order):")
_DEMO_GROUPCHAT_REMARKS: dict[tuple[str, tuple[str, ...]], str] = {
    ("苏轼", ("李清照",)): "最近我在写一首新的诗，题目是《听雨》",
    ("苏轼", ("杜甫",)): "那首《茅屋为秋风所破歌》已经写好啦，我在信里寄给你了，请查收",
}


def _demo_groupchat_answer(text: str) -> str | None:
    """Answer a GroupChat prompt: one remark per requested turn, as a JSON array (else None).

    The requested turns are the JSON lines after the last heading; the seed 001 turns get the
    seed's documented remarks, any other turn a ``(demo) …`` line naming speaker and audiences.
    """
    import json

    for heading in _DEMO_GROUPCHAT_HEADINGS:
        at = text.rfind(heading)
        if at >= 0:
            break
    else:
        return None
    zh = heading == _DEMO_GROUPCHAT_HEADINGS[0]
    remarks: list[dict[str, Any]] = []
    for line in text[at + len(heading) :].splitlines():
        try:
            turn = json.loads(line)
        except ValueError:
            continue
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("speaker"), str)
            or not isinstance(turn.get("audiences"), list)
        ):
            continue
        speaker, audiences = turn["speaker"], [str(a) for a in turn["audiences"]]
        remark = _DEMO_GROUPCHAT_REMARKS.get((speaker, tuple(audiences)))
        if remark is None:
            remark = (
                "(demo) %s对%s说的话" % (speaker, "、".join(audiences))
                if zh
                else "(demo) %s's remark to %s" % (speaker, ", ".join(audiences))
            )
        remarks.append({"speaker": speaker, "audiences": audiences, "remark": remark})
    return json.dumps(remarks, ensure_ascii=False, indent=4) if remarks else None


# ---- end of GroupChat prompts ----------------------------------------------------------------


class DemoToolCalls:
    """An answer of :class:`DemoBrain` that calls tools: ``content`` (text before the calls, may
    be empty) and ``tool_calls`` (``[{"id", "type", "function": {"name", "arguments"}}]``).  The
    fake wire sends it as a ``Reply`` with those tool calls, streamed or not."""

    __slots__ = ("content", "tool_calls")

    def __init__(self, tool_calls: list[dict[str, Any]], content: str = "") -> None:
        self.content = content
        self.tool_calls = tool_calls

    def __repr__(self) -> str:
        return "DemoToolCalls(%r)" % [c["function"]["name"] for c in self.tool_calls]


#: Place names the demo model recognises as tool arguments (Chinese text has no capitals).
_DEMO_PLACES_ZH = (
    "北京",
    "上海",
    "广州",
    "深圳",
    "杭州",
    "南京",
    "成都",
    "武汉",
    "西安",
    "香港",
    "东京",
    "巴黎",
    "伦敦",
    "纽约",
    "罗马",
)


#: English tool words and the Chinese a question may use for them.
_DEMO_WORDS_ZH = {"weather": "天气", "time": "时间", "price": "价格", "stock": "股票", "search": "搜索", "file": "文件"}


def _demo_has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _demo_tool_words(spec: dict[str, Any]) -> set[str]:
    """What a tool is about: the words of its name and description (lower case), and the
    two-character pieces of Chinese text in them."""
    import re

    text = "%s %s" % (str(spec.get("name", "")).replace("_", " "), spec.get("description") or "")
    words = {w for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in ("the", "and", "for", "get", "with")}
    for run in re.findall(r"[\u4e00-\u9fff]+", text):
        words.update(run[i : i + 2] for i in range(len(run) - 1))
    words.update(_DEMO_WORDS_ZH[w] for w in list(words) if w in _DEMO_WORDS_ZH)
    return words


def _demo_choose_tool(text: str, tools: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The tool the question is about (most of its words in the text), or None."""
    lowered = text.lower()
    best, best_score = None, 0
    for entry in tools:
        spec = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue
        score = 3 if spec["name"].lower() in lowered else 0
        score += sum(1 for word in _demo_tool_words(spec) if word in lowered)
        if score > best_score:
            best, best_score = spec, score
    return best


def _demo_string_values(text: str) -> list[str]:
    """The values a question names: quoted text, else places (Chinese) or capitalised words
    after the first word (English, ``Paris and Rome`` gives two)."""
    import re

    quoted = re.findall(r"[\"“'‘]([^\"”'’]+)[\"”'’]", text)
    if quoted:
        return quoted
    if _demo_has_cjk(text):
        places = [p for p in _DEMO_PLACES_ZH if p in text]
        places.sort(key=text.index)
        return places or [re.sub(r"[^\u4e00-\u9fff]", "", text)[:2]]
    words = re.findall(r"(?<!^)(?<![.?!] )\b([A-Z][\w'-]*(?: [A-Z][\w'-]*)*)", text.strip())
    return words or [text.strip().rstrip("?!.").split(" ")[-1]]


def _demo_arguments(spec: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """Arguments for the chosen tool: one call per value named for its first required string
    parameter (at most 4), numbers from the text, enums' first value."""
    import re

    found = spec.get("parameters")
    params: dict[str, Any] = found if isinstance(found, dict) else {}
    found = params.get("properties")
    props: dict[str, Any] = found if isinstance(found, dict) else {}
    required = [n for n in params.get("required", []) if n in props]
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    base: dict[str, Any] = {}
    spread = None
    for name in required:
        prop = props[name] if isinstance(props[name], dict) else {}
        kind = prop.get("type")
        kind = kind[0] if isinstance(kind, list) and kind else kind
        if "enum" in prop and prop["enum"]:
            base[name] = prop["enum"][0]
        elif kind in ("integer", "number"):
            value = float(numbers.pop(0)) if numbers else 1
            base[name] = int(value) if kind == "integer" else value
        elif kind == "boolean":
            base[name] = True
        elif kind in ("array",):
            base[name] = []
        elif kind == "object":
            base[name] = {}
        elif spread is None:
            spread = name
        else:
            base[name] = text
    if spread is None:
        return [base]
    return [dict(base, **{spread: value}) for value in _demo_string_values(text)[:4]]


def _demo_tool_answer(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], last_user: int) -> Any:
    """Call a tool the question is about, or, once its results are in, answer with them."""
    import json

    text = content_text(messages[last_user].get("content")).strip()
    results = [
        content_text(m.get("content"))
        for m in messages[last_user + 1 :]
        if isinstance(m, dict) and m.get("role") == "tool"
    ]
    if results:
        if _demo_has_cjk(text):
            return "查询结果：" + "；".join(r.rstrip("。.") for r in results) + "。"
        return "Here is what the tools said: " + "; ".join(r.rstrip(".") for r in results) + "."
    spec = _demo_choose_tool(text, tools)
    if spec is None:
        return None
    calls = []
    for n, arguments in enumerate(_demo_arguments(spec, text)):
        call_id = "call_demo_%d_%d" % (last_user, n + 1)
        arguments_text = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": spec["name"], "arguments": arguments_text}}
        )
    return DemoToolCalls(calls)


class DemoAnswer:
    """A text answer of :class:`DemoBrain` with its ``usage`` (the demo server's own counts)."""

    __slots__ = ("content", "usage")

    def __init__(self, content: str, usage: dict[str, Any]) -> None:
        self.content = content
        self.usage = usage

    def __repr__(self) -> str:
        return "DemoAnswer(%r)" % self.content


class DemoError:
    """An answer of :class:`DemoBrain` that is an HTTP error (``status``, JSON ``body``): how the
    servers it imitates refuse a ``response_format`` they do not support."""

    __slots__ = ("status", "body")

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return "DemoError(%d)" % self.status


#: How real servers refuse a ``response_format`` type (status, body, where it was reported):
#: ``DemoBrain(server=...)`` answers so.  The bodies are the servers' own words.
DEMO_FORMAT_REFUSALS: dict[str, dict[str, tuple[int, object]]] = {
    # llm-exe/llm-exe#662, khoj-ai/khoj#1336: every deepseek-chat/-v4 request with json_schema
    "deepseek": {
        "json_schema": (
            400,
            {
                "error": {
                    "message": "This response_format type is unavailable now",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
            },
        )
    },
    # browser-use/browser-use#215 (DeepSeek's earlier 422 from its request parser)
    "deepseek-422": {
        "json_schema": (
            422,
            (
                "Failed to deserialize the JSON body into the target type: response_format: "
                "response_format.type `json_schema` is unavailable now at line 1 column 12440"
            ),
        )
    },
    # ggml-org/llama.cpp#9522: llama-server before structured outputs
    "llama.cpp": {
        "json_schema": (
            500,
            {
                "error": {
                    "code": 500,
                    "message": 'response_format type must be one of "text" or "json_object", but got: json_schema',
                    "type": "server_error",
                }
            },
        )
    },
    # lmstudio-ai/lmstudio-bug-tracker#169, Zazza/sd-ai#2: LM Studio refuses json_object
    "lmstudio": {"json_object": (400, {"error": "'response_format.type' must be 'json_schema' or 'text'"})},
    # langchain-ai/langchain#31490, mrwadams/stride-gpt#19: Azure OpenAI deployments of older
    # models refuse both types
    "azure-gpt-4": {
        "json_schema": (
            400,
            {
                "error": {
                    "message": "Invalid parameter: 'response_format' of type 'json_schema' is not supported with "
                    "this model. Learn more about supported models at the Structured Outputs guide: "
                    "https://platform.openai.com/docs/guides/structured-outputs",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        "json_object": (
            400,
            {
                "error": {
                    "message": "Invalid parameter: 'response_format' of type 'json_object' is not supported "
                    "with this model.",
                    "type": "invalid_request_error",
                    "param": "response_format",
                    "code": None,
                }
            },
        ),
    },
    # ollama/ollama#8126: Ollama 0.5.2
    "ollama-0.5.2": {"json_schema": (400, {"error": 'invalid format: expected "json" or a JSON schema'})},
}

_DEMO_SENTENCE_STARTS = frozenset(
    "A An The I It He She They We You What Who Where When Which How Is Are Do Does Tell Give List Show "
    "Please Find Name Describe Make Write".split()
)
_DEMO_CJK_NAME_ENDS = ("今年", "是", "住在", "在", "的", "，", ",", "。", "有")


def _demo_json_schema_of(body: dict[str, Any], messages: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON Schema a request asks the answer to match: ``response_format.json_schema``, or the
    one a system message states after "JSON Schema:" (as a model reading its prompt would)."""
    import json

    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {}
    for msg in messages:
        text = content_text(msg.get("content")) if isinstance(msg, dict) and msg.get("role") == "system" else ""
        at = text.find("JSON Schema:")
        if at >= 0:
            start = text.find("{", at)
            try:
                value, _ = json.JSONDecoder().raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {}
    return None


class _DemoPools:
    """The values a question names, handed out in order: text pieces and numbers."""

    def __init__(self, text: str) -> None:
        import re

        quoted = re.findall(r"[\"“]([^\"”]+)[\"”]", text)
        if _demo_has_cjk(text):
            places = sorted((p for p in _DEMO_PLACES_ZH if p in text), key=text.index)
            head = re.match(r"[\u4e00-\u9fff]+", text)
            name = head.group(0) if head else ""
            for end in _DEMO_CJK_NAME_ENDS:
                name = name.split(end)[0]
            words = ([name] if name and name not in places else []) + places
        else:
            words = [
                w
                for w in re.findall(r"\b[A-Z][a-zA-Z'-]*(?: [A-Z][a-zA-Z'-]*)*", text)
                if w not in _DEMO_SENTENCE_STARTS
            ]
        self.strings = quoted + words
        self.numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]

    def string(self, fallback: str) -> str:
        return self.strings.pop(0) if self.strings else fallback

    def number(self) -> float:
        return self.numbers.pop(0) if self.numbers else 0


def _demo_json_value(schema: object, pools: _DemoPools, root: dict[str, Any], name: str, depth: int = 0) -> Any:
    """A value matching ``schema``, filled from what the question names (deterministic)."""
    if not isinstance(schema, dict) or depth > 20:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return _demo_json_value(node, pools, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return _demo_json_value(options[0], pools, root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {key: _demo_json_value(sub, pools, root, key, depth + 1) for key, sub in props.items()}
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict) and items.get("type") == "string" and pools.strings:
            return [pools.string(name) for _ in range(len(pools.strings))]
        count = (
            max(1, int(schema.get("minItems") or 0))
            if pools.strings or pools.numbers
            else int(schema.get("minItems") or 0)
        )
        return [_demo_json_value(items, pools, root, name, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(pools.number())
    if kind == "number":
        return pools.number()
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return pools.string(name)


def _demo_format_answer(
    body: dict[str, Any], messages: Sequence[dict[str, Any]], last_user: int, server: str | None
) -> Any:
    """A refusal of the format (imitating ``server``), or the JSON answer a structured request
    asks for; None when the request asks for no JSON."""
    import json

    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    refusals = DEMO_FORMAT_REFUSALS.get(server or "", {})
    if kind in refusals:
        status, error = refusals[kind]
        return DemoError(status, error)
    schema = _demo_json_schema_of(body, messages)
    if schema is None:
        return None
    text = content_text(messages[last_user].get("content")) if last_user >= 0 else ""
    value = _demo_json_value(schema, _DemoPools(text), schema, "value")
    if not schema:
        value = {"answer": text}
    answer = json.dumps(value, ensure_ascii=False)
    return answer if kind else "```json\n%s\n```" % answer  # a prompt-only answer comes fenced


def _demo_last_user_text(messages: Sequence[dict[str, Any]]) -> object:
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return msg.get("content")
    return ""


class DemoBrain:
    """A tiny deterministic rule-based "model" that answers the seed examples as documented.

    Use it as a ``FakeServer`` handler (it is the default one) or call ``answer(messages)``.

    - ``自然数N的后面是几?`` / ``What comes after the natural number N?`` -> ``N+1``
    - ``再往后是几?`` / ``再往后呢?`` / ``And the next?`` -> the last number in the previous
      assistant message, plus one
    - the capitals and facts of the MsgMaxCount example (``英国的首都是什么？`` -> ``伦敦``, ...)
      and their English equivalents
    - ``世界上最大的海洋是哪个?`` -> ``世界上最大的海洋是太平洋。``; ``Which is the largest
      ocean?`` -> ``The Pacific Ocean.``
    - the apology of the forged-conversation example (``哦吼, 你还敢骂我呀?``)
    - a ``GroupChat`` prompt -> a JSON array with one remark per requested turn (the seed's
      documented remarks for its example)
    - a request with ``tools``: a call of the tool the question is about (the one whose name
      or description words appear in it; its first string argument from quoted text, places
      or capitalised words — ``Paris and Rome`` gives two parallel calls), then, once the
      ``tool`` results are in, an answer quoting them (``Here is what the tools said: …`` /
      ``查询结果：…``)
    - a request for JSON (``response_format`` ``json_schema``/``json_object``, or a schema stated
      in a system message after "JSON Schema:"): a value matching the schema, its text fields
      from quoted text, names and places of the question and its numbers in order (fenced in
      ```json when the schema came in the prompt only).  ``server="deepseek"`` (or
      ``"deepseek-422"``, ``"llama.cpp"``, ``"lmstudio"``, ``"azure-gpt-4"``, ``"ollama-0.5.2"``) refuses the
      ``response_format`` types that server refuses, with its own error body
      (:data:`DEMO_FORMAT_REFUSALS`)
    - anything else: ``(demo) You said: …``

    :param rules: ``[(matcher, answer), ...]`` consulted first, in order.  ``matcher`` is a
        compiled regex or a pattern string (searched in the last user message) or a callable
        ``(text) -> truthy``; ``answer`` is a string, a ``Reply``, or a callable
        ``(match_or_value, messages) -> str | Reply``.
    """

    def __init__(
        self,
        rules: Sequence[tuple[Any, Any]] | None = None,
        *,
        server: str | None = None,
        window: int | None = None,
        counter: Callable[[Sequence[dict[str, Any]]], int] | None = None,
    ) -> None:
        if server is not None and server not in DEMO_FORMAT_REFUSALS:
            raise ValueError("server must be one of %s, or None" % ", ".join(sorted(DEMO_FORMAT_REFUSALS)))
        self.rules: list[tuple[Any, Any]] = list(rules or ())
        self.server = server
        self.window = window
        self.counter = counter

    def prompt_tokens(self, messages: Sequence[dict[str, Any]]) -> int:
        """The demo server's own count of a prompt: ``counter(messages)``, else 4 per message plus
        a token per 4 characters of text (a stand-in tokenizer)."""
        if self.counter is not None:
            return int(self.counter(messages))
        return sum(4 + (len(content_text(m.get("content"))) + 3) // 4 for m in messages if isinstance(m, dict)) + 3

    def __call__(self, request: Any) -> Any:
        """Answer a recorded chat request.

        With ``window`` (a context window in tokens) a prompt longer than it is refused as
        OpenAI refuses one (400 ``context_length_exceeded``, the limit and the count in the
        message); with ``window`` or ``counter``, text answers report ``usage.prompt_tokens`` as
        :meth:`prompt_tokens` counts.

        :param request: a ``RecordedRequest`` (anything with ``messages``: they are used, and
            the ``tools`` of its ``json`` body)
        :returns: the answer text, a ``Reply`` from a custom rule, :class:`DemoToolCalls`,
            :class:`DemoAnswer` or :class:`DemoError`
        """
        if self.window is None and self.counter is None:
            return self._respond(request)
        prompt = self.prompt_tokens(request.messages)
        if self.window is not None and prompt > self.window:
            message = (
                "This model's maximum context length is %d tokens. However, your messages resulted in %d tokens. "
                "Please reduce the length of the messages." % (self.window, prompt)
            )
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            return DemoError(400, {"error": error})
        answer = self._respond(request)
        if isinstance(answer, str):
            completion = (len(answer) + 3) // 4
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            return DemoAnswer(answer, usage)
        return answer

    def _respond(self, request: Any) -> Any:
        body = getattr(request, "json", None)
        if isinstance(body, dict) and not any(
            self._match(m, content_text(_demo_last_user_text(request.messages))) for m, _ in self.rules
        ):
            messages = request.messages
            last = max(
                (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1
            )
            structured = _demo_format_answer(body, messages, last, self.server)
            if structured is not None:
                return structured
        tools = body.get("tools") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(tools, list) and tools and body.get("tool_choice") != "none":
            messages = request.messages
            last_user = max(
                (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1
            )
            if last_user >= 0 and not any(
                self._match(m, content_text(messages[last_user].get("content"))) for m, _ in self.rules
            ):
                planned = _demo_tool_answer(messages, tools, last_user)
                if planned is not None:
                    return planned
        return self.answer(request.messages)

    def answer(self, messages: Sequence[dict[str, Any]]) -> Any:
        """Answer a conversation: the last user message, with the history for follow-ups.

        :param messages: chat messages (``{"role", "content"}`` dicts)
        :returns: the answer text, or a ``Reply`` from a custom rule
        """
        last_user = -1
        for i in range(len(messages) - 1, -1, -1):
            if isinstance(messages[i], dict) and messages[i].get("role") == "user":
                last_user = i
                break
        if last_user < 0:
            return "(demo) Hello! I am the offline demo model of openai2."
        text = content_text(messages[last_user].get("content")).strip()
        for matcher, reply in self.rules:
            found = self._match(matcher, text)
            if found:
                return reply(found, list(messages)) if callable(reply) else reply
        return self._builtin(text, messages, last_user)

    @staticmethod
    def _match(matcher: Any, text: str) -> Any:
        if isinstance(matcher, str):
            import re

            return re.search(matcher, text)
        if hasattr(matcher, "search"):
            return matcher.search(text)
        return matcher(text)

    @staticmethod
    def _builtin(text: str, messages: Sequence[dict[str, Any]], last_user: int) -> str:
        group_answer = _demo_groupchat_answer(text)  # GroupChat prompt (see _DEMO_GROUPCHAT_HEADINGS)
        if group_answer is not None:
            return group_answer
        pat = _demo_demo_patterns()
        for name in ("successor_zh", "successor_en"):
            m = pat[name].search(text)
            if m:
                return str(int(m.group(1)) + 1)
        if pat["next_zh"].match(text.replace(" ", "")) or pat["next_en"].match(text):
            previous = ""
            for i in range(last_user - 1, -1, -1):
                if isinstance(messages[i], dict) and messages[i].get("role") == "assistant":
                    previous = content_text(messages[i].get("content"))
                    break
            numbers = pat["number"].findall(previous)
            if numbers:
                return str(int(numbers[-1]) + 1)
            return "(demo) Which number do you mean? Ask me what comes after a number first."
        fact = pat["facts"].get(_demo_normalise(text))
        if fact is not None:
            return fact  # type: ignore[no-any-return]
        m = pat["capital_en"].match(text)
        if m and m.group(1).strip(" .").lower() in _DEMO_CAPITALS_EN:
            return _DEMO_CAPITALS_EN[m.group(1).strip(" .").lower()]
        if pat["largest_country_en"].search(text):
            return "Russia"
        if pat["frog_en"].search(text):
            return "A tadpole"
        if pat["ocean_en"].search(text):
            return "The Pacific Ocean."
        if pat["insult_en"].search(text):
            return _DEMO_APOLOGY_EN
        return "(demo) You said: " + text
