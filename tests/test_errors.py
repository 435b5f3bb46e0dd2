"""Masking keys in errors: excerpts, headers, bodies, short keys (openai2.common/openai2.errors)."""
import json
import unittest

from openai2.common import mask_key, redact
from openai2.errors import APIError, APIStatusError, make_status_error, parse_error_body, redact_error, redact_value

KEY = "sk-proj-" + "A" * 20 + "B" * 16  # 44 characters, like a real project key


def deep_list(depth, leaf):
    root = cur = []
    for _ in range(depth):
        nxt = []
        cur.append(nxt)
        cur = nxt
    cur.append(leaf)
    return root


def leaf_of(value):
    while isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    return value


class ExcerptMaskingTest(unittest.TestCase):
    def test_key_at_the_cut_of_an_html_page_is_masked(self):
        # wherever the 200-character cut falls inside the key, nothing of its secret part shows
        for offset in range(150, 200):
            page = "<html><body><h1>502</h1>" + "x" * offset + " " + KEY + " more</body></html>"
            with self.subTest(offset=offset):
                exc = make_status_error(502, {}, page.encode(), secrets=[KEY])
                self.assertNotIn("AAAAAAAA", exc.message)
                self.assertNotIn("AAAAAAAA", str(exc.body))

    def test_key_at_the_cut_of_a_json_excerpt_is_masked(self):
        for offset in range(140, 200):
            body = json.dumps({"detail_list": ["y" * offset + KEY]})
            with self.subTest(offset=offset):
                exc = make_status_error(500, {}, body, secrets=[KEY])
                self.assertNotIn("AAAAAAAA", exc.message)

    def test_header_values_are_masked(self):
        exc = make_status_error(401, {"www-authenticate": "Bearer " + KEY, "x-request-id": "req_" + KEY}, b"{}", secrets=[KEY])
        self.assertEqual(exc.headers["www-authenticate"], "Bearer " + mask_key(KEY))
        self.assertNotIn(KEY, repr(exc.headers) + str(exc.request_id))

    def test_redact_error_masks_headers_and_fields(self):
        exc = APIStatusError("m " + KEY, status_code=400, headers={"x-echo": KEY}, request_id=KEY, body={"k": KEY}, code=KEY, param=KEY)
        redact_error(exc, [KEY])
        shown = " ".join(map(str, (exc.message, exc.args, exc.headers, exc.request_id, exc.body, exc.code, exc.param)))
        self.assertNotIn(KEY, shown)
        self.assertIn(mask_key(KEY), shown)


class BodyMaskingTest(unittest.TestCase):
    def test_keys_with_quotes_backslashes_and_tabs_are_masked_in_the_body(self):
        for key in ('sk-with"quote-0123456789', "sk-back\\slash-0123456789", "sk-tab\there-0123456789", 'a"b', "c\\d", "e\tf"):
            raw = json.dumps({"error": {"message": "bad key " + key, "param": key}, "echo": {key: [key, {"k": key}]}})
            with self.subTest(key=key):
                exc = make_status_error(400, {}, raw, secrets=[key])
                shown = json.dumps(exc.body, ensure_ascii=False) + exc.message + str(exc.param)
                self.assertNotIn(key, shown)
                self.assertNotIn(json.dumps(key)[1:-1], shown)
                self.assertEqual(exc.body["echo"][mask_key(key)][1], {"k": mask_key(key)})

    def test_redact_value_returns_the_same_object_when_nothing_is_masked(self):
        body = {"a": [1, "two", {"three": None}]}
        self.assertIs(redact_value(body, [KEY]), body)
        masked = redact_value({"a": [1, "x" + KEY]}, [KEY])
        self.assertEqual(masked, {"a": [1, "x" + mask_key(KEY)]})

    def test_deeply_nested_bodies_do_not_recurse(self):
        value = deep_list(100000, "x " + KEY)
        self.assertEqual(leaf_of(redact_value(value, [KEY])), ["x " + mask_key(KEY)])
        self.assertIs(redact_value(deep_list(100000, "clean"), [KEY]).__class__, list)

    def test_error_body_nested_100000_deep(self):
        raw = "[" * 100000 + json.dumps(KEY) + "]" * 100000
        body, err = parse_error_body(raw)
        self.assertEqual((body, err), (raw, None))
        exc = make_status_error(500, {}, raw.encode(), secrets=[KEY])
        self.assertIn("HTTP 500", exc.message)
        self.assertLess(len(exc.message), 300)
        self.assertNotIn(KEY, str(exc.body))


class ShortKeyTest(unittest.TestCase):
    def test_short_keys_are_masked_as_whole_tokens(self):
        cases = [
            ("abc", "Bearer abc", "Bearer …"),
            ("abc", '{"key": "abc"}', '{"key": "…"}'),
            ("abc", "key=abc; abcdef x_abc abc1 1abc", "key=…; abcdef x_abc abc1 1abc"),
            ("abc", "abc你好 abc-def", "…你好 …-def"),
            ("k", "k is a k-key", "… is a …-key"),
            ("EMPTY", "invalid api key EMPTY.", "invalid api key ….")
        ]
        for key, text, want in cases:
            with self.subTest(key=key, text=text):
                self.assertEqual(redact(text, [key]), want)

    def test_keys_of_eight_characters_or_more_are_masked_everywhere(self):
        self.assertEqual(redact("xx12345678yy", ["12345678"]), "xx" + mask_key("12345678") + "yy")

    def test_a_key_containing_another_is_masked_whole(self):
        short, long = "sk-abcdefgh", "sk-abcdefgh-0123456789XYZ"
        for order in ([short, long], [long, short]):
            self.assertEqual(redact("a " + long + " b", order), "a " + mask_key(long) + " b")

    def test_mask_key_shows_nothing_of_a_short_key(self):
        for key in ("a", "abc", "abcdefg"):
            with self.subTest(key=key):
                shown = mask_key(key)
                self.assertFalse(set(shown) & set(key), shown)
        self.assertEqual(mask_key("abcdefghij"), "…ij")

    def test_short_key_echoed_in_a_status_error_is_masked(self):
        exc = make_status_error(401, {"x-echo": "token abc"}, b'{"error": {"message": "key abc rejected"}}', secrets=["abc"])
        self.assertEqual((exc.message, exc.headers["x-echo"]), ("key … rejected", "token …"))


class StreamErrorMaskingTest(unittest.TestCase):
    def test_api_error_str_is_the_masked_message(self):
        exc = redact_error(APIError("bad " + KEY), [KEY])
        self.assertEqual(str(exc), "bad " + mask_key(KEY))


if __name__ == "__main__":
    unittest.main()
