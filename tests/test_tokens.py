"""openai2.tokens: the estimator, message overheads, image headers, families, calibration."""

from __future__ import annotations

import base64
import json
import random
import struct
import sys
import threading
import unittest

from openai2.tokens import (
    _TOK_CACHE,
    _TOK_CACHE_SIZE,
    Calibration,
    _tok_estimate,
    _tok_features,
    _tok_image_size,
    count_tokens,
    estimate_text,
    looks_truncated,
    tokenizer_family,
)

FAMILIES = ("o200k", "cl100k", "qwen", "llama", "deepseek", "mistral", "default")


def data_url(mime: str, payload: bytes) -> str:
    return "data:%s;base64,%s" % (mime, base64.b64encode(payload).decode("ascii"))


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00\x00\x00\x00" + b"\x00" * 40


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"\x00" * 5000  # pushes SOF past the first 4 KB
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + exif + sof + b"\xff\xda" + b"\x00" * 20


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\xf7\x00\x00" + b"\x00" * 20


def webp(kind: str, width: int, height: int) -> bytes:
    if kind == "VP8X":
        chunk = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        chunk = b"\x2f" + struct.pack("<I", (width - 1) | ((height - 1) << 14)) + b"\x00" * 8
    else:
        chunk = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8
    body = b"WEBP" + kind.encode("ascii") + struct.pack("<I", len(chunk)) + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tile_rule(width: int, height: int) -> int:
    """OpenAI's published rule, written out independently of the module."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(width, height), h * 2048 / max(width, height)
    if min(w, h) > 768:
        factor = 768 / min(w, h)
        w, h = w * factor, h * factor
    tiles = -(-int(w) // 512) * -(-int(h) // 512)
    return 85 + 170 * tiles


def image_message(url: str, detail: str | None = None) -> dict:
    image = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"role": "user", "content": [{"type": "image_url", "image_url": image}]}


def image_cost(url: str, detail: str | None = None, model: str | None = None) -> int:
    empty = count_tokens([{"role": "user", "content": ""}], model=model)
    return count_tokens([image_message(url, detail)], model=model) - empty


class EstimateTextTest(unittest.TestCase):
    def test_empty_string_is_zero_in_every_family(self):
        for family in FAMILIES:
            self.assertEqual(estimate_text("", family), 0)

    def test_any_non_empty_text_is_at_least_one(self):
        for text in (" ", "\n", "a", "。", "😀", "\x00"):
            for family in FAMILIES:
                self.assertGreaterEqual(estimate_text(text, family), 1, (text, family))

    def test_whitespace_runs_cost_little_but_newlines_count(self):
        words = "alpha beta gamma delta"
        spaced = estimate_text(words, "o200k")
        self.assertLessEqual(spaced, 6)
        self.assertGreater(estimate_text("\n".join(words.split()) + "\n\n\n", "o200k"), spaced)

    def test_english_words_are_about_one_token_each(self):
        text = "The quick brown fox jumps over the lazy dog while the farmer sleeps in the barn. " * 5
        estimate = estimate_text(text, "o200k")
        words = len(text.split())
        self.assertTrue(words * 0.9 <= estimate <= words * 1.4, (estimate, words))

    def test_cjk_costs_per_character_and_more_in_cl100k(self):
        text = "我们公司成立于二〇一二年，总部位于杭州，主要从事企业级软件的研发与销售。"
        o200k, cl100k = estimate_text(text, "o200k"), estimate_text(text, "cl100k")
        self.assertTrue(0.3 * len(text) <= o200k <= 1.5 * len(text), o200k)
        self.assertGreater(cl100k, o200k)

    def test_emoji_cost_more_than_a_letter(self):
        self.assertGreater(estimate_text("🎉🚀💪🍕", "o200k"), estimate_text("abcd", "o200k"))
        self.assertGreaterEqual(estimate_text("☀️", "o200k"), 2)

    def test_unknown_family_is_default(self):
        text = "some text, 一些文字"
        self.assertEqual(estimate_text(text, "no-such-family"), estimate_text(text, "default"))

    def test_never_decreases_when_text_is_appended(self):
        alphabet = (
            list("abcXYZ019 _.,;:!?-()[]{}\"'\t\n\r ")
            + list("你好世界的。，“”！、（）ひらカナ한국어ДаΩéü")
            + ["😀", "🎉", "\ufe0f", "\u2600", "\u0301", "\ud800", "\x00"]
        )
        rng = random.Random(19)
        for _ in range(400):
            left = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            right = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            for family in FAMILIES:
                self.assertGreaterEqual(
                    _tok_estimate(left + right, family), _tok_estimate(left, family) - 1e-9, (left, right, family)
                )
                self.assertGreaterEqual(
                    estimate_text(left + right, family), estimate_text(left, family), (left, right, family)
                )
                self.assertGreaterEqual(estimate_text(left, family), 0)

    def test_features_count_runs_from_the_first_character(self):
        features = _tok_features("ab cd, 12 345... x\n\n  y", 4)
        self.assertEqual(features[0], 4)  # letter runs: ab cd x y
        self.assertEqual(features[3], 2)  # digit runs: 12 345
        self.assertEqual(features[4], 1)  # groups of three digits: 345
        self.assertEqual(features[7], 2)  # punctuation runs: "," "..."
        self.assertEqual(features[8], 1)  # whitespace runs other than one space: "\n\n  "
        self.assertEqual(features[9], 2)  # newlines
        wide = _tok_features("你好，世界。かなカナ한국 Ωμέγα Да😀", 4)
        self.assertEqual(wide[10:14], (4, 2, 4, 2))  # ideographs, CJK punctuation, kana, Hangul
        self.assertEqual(wide[14:16], (7, 2))  # other alphabets (Greek counted too) and their runs
        self.assertEqual(wide[17:20], (1, 0, 5))  # emoji, accented Latin, Greek

    def test_lone_surrogates_do_not_raise(self):
        self.assertGreaterEqual(estimate_text("a\ud83dz"), 1)


class CountTokensTest(unittest.TestCase):
    def test_a_string_is_just_its_text(self):
        self.assertEqual(count_tokens("hello there", model="gpt-4o"), estimate_text("hello there", "o200k"))
        self.assertEqual(count_tokens(""), 0)

    def test_message_overheads_with_an_exact_tokenizer(self):
        # 3 per message + role (1) + content, 3 for the reply's priming
        messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "xyz"}]
        self.assertEqual(count_tokens(messages, tokenizer=len), 3 + 3 + 1 + 4 + 3 + 1 + 3)
        # one message alone: no priming
        self.assertEqual(count_tokens(messages[1], tokenizer=len), 3 + 1 + 3)
        self.assertEqual(count_tokens([], tokenizer=len), 3)

    def test_tokenizer_is_used_for_every_piece_and_not_rescaled(self):
        seen = []

        def counter(text: str) -> int:
            seen.append(text)
            return 2

        messages = [
            {
                "role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
                "name": "bob",
            }
        ]
        self.assertEqual(count_tokens(messages, tokenizer=counter), 3 + 1 + 2 + 2 + 1 + 2 + 3)
        self.assertEqual(sorted(seen), ["bob", "one", "two"])

    def test_name_adds_one_plus_the_name(self):
        plain = {"role": "user", "content": "hi"}
        named = dict(plain, name="alice_2")
        self.assertEqual(
            count_tokens([named], tokenizer=len) - count_tokens([plain], tokenizer=len), 1 + len("alice_2")
        )

    def test_tool_calls_count_name_and_arguments(self):
        arguments = json.dumps({"city": "Paris", "unit": "celsius"})
        call = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        }
        bare = {"role": "assistant", "content": None}
        self.assertEqual(
            count_tokens(call, tokenizer=len) - count_tokens(bare, tokenizer=len),
            3 + len("get_weather") + len(arguments),
        )
        self.assertGreater(count_tokens(call, model="gpt-4o"), count_tokens(bare, model="gpt-4o") + 5)

    def test_tool_messages_count_their_content(self):
        answer = {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}
        self.assertEqual(count_tokens(answer, tokenizer=len), 3 + 1 + len(answer["content"]))

    def test_tools_schemas_add_their_json_and_the_overhead(self):
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
        text = json.dumps(tools[0], ensure_ascii=False, separators=(",", ":"))
        self.assertEqual(
            count_tokens("", tools=tools, tokenizer=len) - count_tokens("", tokenizer=len), 12 + 7 + len(text)
        )
        self.assertGreater(count_tokens([], tools=tools), count_tokens([]))

    def test_estimate_of_a_conversation_is_close_to_the_sum_of_its_parts(self):
        messages = [
            {"role": "user", "content": "Bonjour, pouvez-vous m'aider ?"},
            {"role": "assistant", "content": "Bien sûr."},
        ]
        parts = sum(estimate_text(m["content"], "o200k") for m in messages)
        total = count_tokens(messages, model="gpt-4o")
        self.assertTrue(parts + 3 * 2 + 2 + 3 - 2 <= total <= parts + 3 * 2 + 2 + 3, (parts, total))

    def test_the_estimate_cache_stays_bounded_and_changes_nothing(self):
        texts = ["message number %d, 第%d条" % (i, i) for i in range(_TOK_CACHE_SIZE + 500)]
        first = [count_tokens({"role": "user", "content": text}, model="qwen-max") for text in texts]
        self.assertLessEqual(len(_TOK_CACHE), _TOK_CACHE_SIZE)
        self.assertEqual([count_tokens({"role": "user", "content": text}, model="qwen-max") for text in texts], first)
        self.assertEqual(first[7], 3 + 1 + estimate_text(texts[7], "qwen"))
        long_text = "x" * 100000
        count_tokens(long_text and [{"role": "user", "content": long_text}])
        self.assertNotIn(("default", long_text), _TOK_CACHE)

    def test_bad_input_raises_type_error(self):
        with self.assertRaises(TypeError):
            count_tokens(42)
        with self.assertRaises(TypeError):
            count_tokens(["not a message"])


class ImageTest(unittest.TestCase):
    def test_png_jpeg_gif_webp_sizes_follow_the_tile_rule(self):
        cases = [
            ("image/png", png(1024, 1024), 1024, 1024),
            ("image/png", png(2048, 4096), 2048, 4096),
            ("image/jpeg", jpeg(4000, 3000), 4000, 3000),
            ("image/gif", gif(100, 80), 100, 80),
            ("image/webp", webp("VP8X", 1600, 900), 1600, 900),
            ("image/webp", webp("VP8L", 513, 300), 513, 300),
            ("image/webp", webp("VP8 ", 700, 1400), 700, 1400),
        ]
        for mime, payload, width, height in cases:
            with self.subTest(mime=mime, size=(width, height)):
                self.assertEqual(image_cost(data_url(mime, payload)), tile_rule(width, height))
        self.assertEqual(tile_rule(1024, 1024), 765)  # OpenAI's own examples
        self.assertEqual(tile_rule(2048, 4096), 1105)

    def test_header_sizes_are_read_exactly(self):
        cases = [
            ("image/png", png(1234, 567)),
            ("image/jpeg", jpeg(4000, 3001)),
            ("image/gif", gif(321, 123)),
            ("image/webp", webp("VP8X", 1601, 901)),
            ("image/webp", webp("VP8L", 513, 301)),
            ("image/webp", webp("VP8 ", 701, 1401)),
        ]
        expected = [(1234, 567), (4000, 3001), (321, 123), (1601, 901), (513, 301), (701, 1401)]
        self.assertEqual([_tok_image_size(data_url(mime, payload)) for mime, payload in cases], expected)
        self.assertIsNone(_tok_image_size("https://example.com/a.png"))
        self.assertIsNone(_tok_image_size(data_url("image/jpeg", b"\xff\xd8\xff\xe0\x00")))

    def test_auto_is_high_and_low_is_85(self):
        url = data_url("image/png", png(2048, 4096))
        self.assertEqual(image_cost(url, "auto"), image_cost(url, "high"))
        self.assertEqual(image_cost(url, "high"), 1105)
        self.assertEqual(image_cost(url, "low"), 85)

    def test_unknown_size_costs_a_1024_square(self):
        self.assertEqual(image_cost("https://example.com/cat.png"), 765)
        self.assertEqual(image_cost("https://example.com/cat.png", "low"), 85)
        self.assertEqual(image_cost(data_url("image/png", b"not an image")), 765)
        self.assertEqual(image_cost("data:image/png;base64,!!!!"), 765)

    def test_gpt_4o_mini_uses_its_own_image_rates(self):
        url = data_url("image/png", png(512, 512))
        self.assertEqual(image_cost(url, model="gpt-4o"), 85 + 170)
        self.assertEqual(image_cost(url, model="gpt-4o-mini"), 2833 + 5667)


class FamilyTest(unittest.TestCase):
    def test_documented_patterns(self):
        cases = {
            "gpt-4o": "o200k",
            "GPT-4o-mini-2024-07-18": "o200k",
            "openai/gpt-4.1-nano": "o200k",
            "gpt-5": "o200k",
            "o1": "o200k",
            "o3-mini": "o200k",
            "o4-mini-high": "o200k",
            "ft:gpt-4o-2024-08-06:org::abc": "o200k",
            "chatgpt-4o-latest": "o200k",
            "gpt-oss-120b": "o200k",
            "gpt-4": "cl100k",
            "gpt-4-turbo": "cl100k",
            "gpt-3.5-turbo": "cl100k",
            "gpt-35-turbo": "cl100k",
            "qwen2.5:7b": "qwen",
            "Qwen/Qwen3-235B-A22B": "qwen",
            "qwq-32b": "qwen",
            "deepseek-r1-distill-qwen-32b": "qwen",
            "accounts/fireworks/models/llama-v3p1-8b-instruct": "llama",
            "meta-llama/Llama-3.3-70B-Instruct": "llama",
            "llama3.2": "llama",
            "llama-2-7b-chat": "default",
            "codellama:13b": "default",
            "deepseek-chat": "deepseek",
            "deepseek-reasoner": "deepseek",
            "mistral-large-latest": "mistral",
            "open-mixtral-8x7b": "mistral",
            "codestral-latest": "mistral",
            "claude-3-5-sonnet": "default",
            "glm-4": "default",
            "o100": "default",
            "": "default",
            None: "default",
        }
        for model, family in cases.items():
            self.assertEqual(tokenizer_family(model), family, model)

    def test_model_selects_the_family_rates(self):
        text = "我们公司成立于二〇一二年，总部位于杭州。"
        self.assertEqual(count_tokens(text, model="gpt-4"), estimate_text(text, "cl100k"))
        self.assertEqual(count_tokens(text, model="qwen-max"), estimate_text(text, "qwen"))


class CalibrationTest(unittest.TestCase):
    def test_converges_within_a_few_observations(self):
        calibration = Calibration()
        for estimate in (800, 1200, 950):
            calibration.observe(estimate, round(estimate * 1.3))
        self.assertLessEqual(abs(calibration.apply(1000) - 1300), 3)
        self.assertEqual(calibration.samples, 3)

    def test_follows_a_new_ratio_smoothly(self):
        calibration = Calibration(1.3, 10)
        calibration.observe(1000, 1000)
        self.assertTrue(1.0 < calibration.ratio < 1.3)
        for _ in range(12):
            calibration.observe(1000, 1000)
        self.assertAlmostEqual(calibration.ratio, 1.0, delta=0.01)

    def test_apply_rounds_up_and_keeps_zero(self):
        calibration = Calibration(1.25, 1)
        self.assertEqual(calibration.apply(10), 13)
        self.assertEqual(calibration.apply(0), 0)
        self.assertEqual(Calibration().apply(17), 17)

    def test_nonsense_is_ignored(self):
        calibration = Calibration()
        for estimated, actual in ((1000, 0), (1000, -5), (0, 100), (-3, 100), (1000, 100), (1000, 6000), (True, 1)):
            calibration.observe(estimated, actual)
        self.assertEqual((calibration.ratio, calibration.samples), (1.0, 0))

    def test_an_ollama_truncated_prompt_does_not_pull_the_ratio_down(self):
        calibration = Calibration()
        calibration.observe(1000, 1100)
        calibration.observe(10000, 2048)  # ratio 0.2048: inside 0.2..5, but a cut prompt
        calibration.observe(30000, 8192)
        calibration.observe(5000, 4090)
        self.assertEqual((calibration.ratio, calibration.samples), (1.1, 1))
        fresh = Calibration()
        fresh.observe(10000, 2048)  # before any observation as well
        self.assertEqual(fresh.samples, 0)

    def test_many_threads_observing_at_once(self):
        calibration = Calibration()
        barrier = threading.Barrier(8)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: a race shows
        self.addCleanup(sys.setswitchinterval, interval)

        def work():
            barrier.wait()
            for _ in range(300):
                calibration.observe(1000, 1300)
                calibration.apply(1000)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(calibration.samples, 2400)
        self.assertAlmostEqual(calibration.ratio, 1.3, places=9)

    def test_to_dict_from_dict_round_trip(self):
        calibration = Calibration()
        calibration.observe(1000, 1234)
        calibration.observe(500, 600)
        data = json.loads(json.dumps(calibration.to_dict()))
        again = Calibration.from_dict(data)
        self.assertEqual((again.ratio, again.samples), (calibration.ratio, calibration.samples))
        self.assertEqual(again.apply(777), calibration.apply(777))

    def test_from_dict_refuses_a_bad_dict(self):
        for bad in (
            {},
            {"ratio": 1.0},
            {"ratio": "1.0", "samples": 1},
            {"ratio": 1.0, "samples": -1},
            {"ratio": 1.0, "samples": 1.5},
            {"ratio": 100.0, "samples": 1},
            {"ratio": float("nan"), "samples": 1},
            {"ratio": True, "samples": 1},
            {"ratio": 1.0, "samples": True},
            [1.0, 1],
            None,
        ):
            with self.assertRaises(ValueError, msg=repr(bad)):
                Calibration.from_dict(bad)

    def test_repr_shows_ratio_and_samples(self):
        self.assertEqual(repr(Calibration(1.5, 2)), "Calibration(ratio=1.5000, samples=2)")


class LooksTruncatedTest(unittest.TestCase):
    def test_far_below_and_at_a_round_window(self):
        self.assertEqual(looks_truncated(10000, 2048, 1.0), 2048)
        self.assertEqual(looks_truncated(10000, 4090, 1.0), 4096)
        self.assertEqual(looks_truncated(60000, 32768, 1.0), 32768)

    def test_not_at_a_window_or_not_far_below(self):
        self.assertIsNone(looks_truncated(10000, 3000, 1.0))
        self.assertIsNone(looks_truncated(2100, 2048, 1.0))
        self.assertIsNone(looks_truncated(3000, 2048, 0.7))  # calibrated estimate 2100: not far below
        self.assertIsNone(looks_truncated(10000, 2049, 1.0))
        self.assertIsNone(looks_truncated(0, 2048, 1.0))
        self.assertIsNone(looks_truncated(10000, 0, 1.0))


if __name__ == "__main__":
    unittest.main()
