"""The chat page's document (openai2.chatpage), checked without a browser: one self-contained
document, its Content-Security-Policy matches the inline script and style, no HTML sinks in the
script, UI strings in English and Chinese, the token variant, the archive format of openai2.history.
(The page's behaviour in a real browser: tests/browser/test_page.py, `make browser-test`.)"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import re
import unittest

from openai2.chatpage import CHAT_PAGE_CSP, chat_page
from openai2.history import ARCHIVE_FORMAT, ARCHIVE_VERSION, MessageBuffer


class _Doc(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text of each script and style element."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None
        self.feed(raw.decode("utf-8"))
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag
            (self.scripts if tag == "script" else self.styles).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "style":
            self.styles[-1] += data

    def attrs(self, name: str) -> list[str]:
        return [a[name] or "" for _, a in self.tags if name in a]


def _sha256(text: str) -> str:
    return "'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _csp(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def _strings(script: str, lang: str) -> dict[str, str]:
    """The UI strings of one language, read from the script's STRINGS table."""
    block = re.search(r"\b%s: \{(.*?)\n  \}," % lang, script, re.S)
    assert block, "no %s block in STRINGS" % lang
    return dict(re.findall(r"(\w+): '((?:[^'\\]|\\.)*)'", block.group(1)))


PAGE = chat_page()
DOC = _Doc(PAGE)
SCRIPT = DOC.scripts[0] if DOC.scripts else ""


class TestDocument(unittest.TestCase):
    def test_page_is_one_utf8_document_with_one_inline_script_and_style(self) -> None:
        self.assertTrue(PAGE.startswith(b"<!DOCTYPE html>"))
        self.assertEqual([t for t, _ in DOC.tags].count("html"), 1)
        self.assertEqual(len(DOC.scripts), 1)
        self.assertEqual(len(DOC.styles), 1)
        self.assertIn(b'<meta charset="utf-8">', PAGE)
        self.assertIn("发送".encode(), PAGE)  # the Chinese strings are in the bytes, as UTF-8

    def test_page_loads_nothing_from_anywhere(self) -> None:
        self.assertEqual(DOC.attrs("src"), [])  # no external script, image, frame
        self.assertEqual(DOC.attrs("href"), ["data:,"])  # the empty favicon: no /favicon.ico request
        self.assertEqual([t for t, _ in DOC.tags if t in ("link", "iframe", "object", "embed", "img", "base")], ["link"])
        style = DOC.styles[0]
        self.assertNotIn("@import", style)
        self.assertNotIn("url(", style)
        self.assertNotIn("@font-face", style)
        # no absolute or protocol-relative URL anywhere (the script builds its links from the answers)
        self.assertEqual(re.findall(rb"[a-zA-Z][\w+.-]*://|[\"'(]//\w", PAGE), [])
        # the requests it makes go to the gateway that served it, by relative URLs
        self.assertEqual(sorted(set(re.findall(r"fetch\('([^']*)'", SCRIPT))), ["v1/chat/completions", "v1/models"])

    def test_csp_hashes_match_the_inline_script_and_style(self) -> None:
        policy = _csp(CHAT_PAGE_CSP)
        fresh = "script-src %s; style-src %s" % (_sha256(SCRIPT), _sha256(DOC.styles[0]))
        why = "CHAT_PAGE_CSP is stale: the script or style changed; put these in openai2/chatpage.py: " + fresh
        self.assertEqual(policy["script-src"], [_sha256(SCRIPT)], why)
        self.assertEqual(policy["style-src"], [_sha256(DOC.styles[0])], why)
        for variant in (chat_page(token_required=True), chat_page(title="<b>x</b>")):
            doc = _Doc(variant)
            self.assertEqual(_sha256(doc.scripts[0]), policy["script-src"][0])
            self.assertEqual(_sha256(doc.styles[0]), policy["style-src"][0])

    def test_csp_allows_nothing_but_the_page_and_its_own_origin(self) -> None:
        policy = _csp(CHAT_PAGE_CSP)
        self.assertEqual(policy["default-src"], ["'none'"])
        self.assertEqual(policy["connect-src"], ["'self'"])
        for name in ("base-uri", "form-action", "frame-ancestors"):
            self.assertEqual(policy[name], ["'none'"], name)
        self.assertEqual(len(policy["script-src"]), 1)  # no 'unsafe-inline', no 'unsafe-eval', no host
        self.assertEqual(len(policy["style-src"]), 1)
        self.assertNotIn("unsafe", CHAT_PAGE_CSP)
        self.assertNotIn("\n", CHAT_PAGE_CSP)  # one header line

    def test_script_has_no_html_sinks(self) -> None:
        sinks = re.compile(
            r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function|"
            r"srcdoc|createContextualFragment|DOMParser|setTimeout\(\s*['\"`]|setInterval\(\s*['\"`]"
        )
        self.assertEqual(sinks.findall(SCRIPT), [])
        # no inline event handler or style attribute in the markup (the CSP would block them anyway)
        self.assertEqual([k for _, a in DOC.tags for k in a if k.startswith("on") or k == "style"], [])

    def test_links_are_limited_to_http_https_mailto_with_noopener(self) -> None:
        self.assertIn("['http:', 'https:', 'mailto:'].includes(url.protocol)", SCRIPT)
        self.assertIn("a.rel = 'noopener noreferrer'", SCRIPT)

    def test_ui_strings_exist_in_english_and_chinese(self) -> None:
        en, zh = _strings(SCRIPT, "en"), _strings(SCRIPT, "zh")
        self.assertGreater(len(en), 20)
        self.assertEqual(sorted(en), sorted(zh))
        used = set(DOC.attrs("data-i18n")) | set(DOC.attrs("data-i18n-placeholder"))
        used |= set(re.findall(r"\bt\('(\w+)'\)", SCRIPT))
        self.assertEqual(sorted(used - set(en)), [], "strings used but not defined")
        self.assertEqual(sorted(set(en) - used), [], "strings defined but never used")
        for key in en:
            self.assertTrue(re.search(r"[\u3000-\u9fff\uff00-\uffef]", zh[key]), "zh %s is not Chinese: %r" % (key, zh[key]))
            self.assertNotEqual(en[key], zh[key], key)

    def test_language_follows_the_browser_and_enter_respects_input_methods(self) -> None:
        self.assertIn("/^zh\\b/i.test(navigator.language || '')", SCRIPT)
        self.assertIn("!e.isComposing && e.keyCode !== 229", SCRIPT)

    def test_token_variant_differs_only_in_its_flag(self) -> None:
        with_token = chat_page(token_required=True)
        self.assertIn(b'data-token="optional"', PAGE)
        self.assertIn(b'data-token="required"', with_token)
        self.assertEqual(with_token.replace(b'data-token="required"', b'data-token="optional"'), PAGE)
        self.assertIn("dataset.token === 'required'", SCRIPT)  # the script reads the flag
        self.assertIn("sessionStorage", SCRIPT)
        self.assertIn("'Bearer ' + token()", SCRIPT)

    def test_title_is_escaped(self) -> None:
        page = chat_page(title='<script>alert(1)</script> & "q"')
        doc = _Doc(page)
        self.assertEqual(len(doc.scripts), 1)
        self.assertIn(b"<title>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;</title>", page)
        self.assertIn(b"<h1>&lt;script&gt;", page)

    def test_page_is_built_once_and_cached(self) -> None:
        self.assertIs(chat_page(), chat_page())
        self.assertIs(chat_page(token_required=True), chat_page(token_required=True))
        self.assertIsNot(chat_page(), chat_page(token_required=True))

    def test_page_stays_small(self) -> None:
        self.assertLess(len(PAGE), 34 * 1024)  # a budget: the page is a model others copy


class TestArchiveFormat(unittest.TestCase):
    def test_export_writes_the_history_archive_format(self) -> None:
        self.assertIn("const ARCHIVE_FORMAT = %s;" % _js_string(ARCHIVE_FORMAT), SCRIPT)
        self.assertIn("const ARCHIVE_VERSION = %d;" % ARCHIVE_VERSION, SCRIPT)
        body = re.search(r"function toArchive\(conv\) \{(.*?)\n\}", SCRIPT, re.S)
        assert body
        literal = re.search(r"return \{(.*)\};", body.group(1), re.S)
        assert literal
        keys = [re.match(r"\s*(\w+)", part).group(1) for part in _top_level_split(literal.group(1))]  # type: ignore[union-attr]
        self.assertEqual(keys, list(MessageBuffer().to_archive()))

    def test_import_checks_format_and_version(self) -> None:
        self.assertIn("data.format !== ARCHIVE_FORMAT", SCRIPT)
        self.assertIn("data.version !== ARCHIVE_VERSION", SCRIPT)


def _js_string(text: str) -> str:
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "\\'")


def _top_level_split(text: str) -> list[str]:
    """Split a JS object literal's body on its top-level commas."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


if __name__ == "__main__":
    unittest.main()
