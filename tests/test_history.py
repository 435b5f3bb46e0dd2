"""MessageBuffer: the seeds' MsgMaxCount / pin walk-throughs, rounds and rollback, validation,
archives, linear cost, and a seeded random property test."""
import json
import random
import sys
import types
import unittest

from openai2.history import MessageBuffer, format_round, from_archive, validate_message


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def contents(msgs):
    return [m["content"] for m in msgs]


class SeedMsgMaxCountTest(unittest.TestCase):
    """Seed 001, "限制历史消息数量" and "锁定消息", done at the buffer level."""

    QA = [
        ("英国的首都是什么？", "伦敦"),
        ("日本首都是什么？", "东京"),
        ("意大利的首都是什么？", "罗马"),
        ("美国的首都是什么？", "华盛顿"),
        ("世界上国土面积最大的国家是哪个？", "俄罗斯"),
        ("法国的首都叫什么？", "巴黎"),
        ("青蛙的幼体叫什么？", "蝌蚪"),
        ("世界上最大的海洋是什么？", "太平洋"),
    ]

    def test_plain_limit_keeps_last_six(self):
        buf = MessageBuffer(max_count=6)
        for q, ans in self.QA:
            buf.commit([u(q), a(ans)])
        self.assertEqual(
            buf.messages(),
            [
                {"role": "user", "content": "法国的首都叫什么？"},
                {"role": "assistant", "content": "巴黎"},
                {"role": "user", "content": "青蛙的幼体叫什么？"},
                {"role": "assistant", "content": "蝌蚪"},
                {"role": "user", "content": "世界上最大的海洋是什么？"},
                {"role": "assistant", "content": "太平洋"},
            ],
        )
        self.assertEqual(buf.pinned_indexes(), [])

    def test_pin_walkthrough(self):
        buf = MessageBuffer(max_count=6)
        for q, ans in self.QA[:3]:
            buf.commit([u(q), a(ans)])
        self.assertEqual(
            contents(buf.messages()),
            ["英国的首都是什么？", "伦敦", "日本首都是什么？", "东京", "意大利的首都是什么？", "罗马"],
        )
        buf.pin(0, -2, -1)
        self.assertEqual(buf.pinned_indexes(), [0, 4, 5])

        # What is sent for the next turn: the oldest unpinned message (伦敦) makes room.
        before = buf.messages()
        sent = buf.payload([u("美国的首都是什么？")])
        self.assertEqual(
            contents(sent),
            ["英国的首都是什么？", "日本首都是什么？", "东京", "意大利的首都是什么？", "罗马", "美国的首都是什么？"],
        )
        self.assertEqual(buf.messages(), before)

        buf.commit([u("美国的首都是什么？"), a("华盛顿")])
        # The seed's table: 英国(pinned) 东京 意大利(pinned) 罗马(pinned) 美国 华盛顿
        self.assertEqual(
            contents(buf.messages()),
            ["英国的首都是什么？", "东京", "意大利的首都是什么？", "罗马", "美国的首都是什么？", "华盛顿"],
        )
        self.assertEqual(buf.pinned_indexes(), [0, 2, 3])

        buf.pin(-2)  # 锁定'美国的首都是什么？'
        self.assertEqual(buf.pinned_indexes(), [0, 2, 3, 4])
        for q, ans in self.QA[4:]:
            buf.commit([u(q), a(ans)])
        self.assertEqual(
            buf.messages(),
            [
                {"role": "user", "content": "英国的首都是什么？"},
                {"role": "user", "content": "意大利的首都是什么？"},
                {"role": "assistant", "content": "罗马"},
                {"role": "user", "content": "美国的首都是什么？"},
                {"role": "user", "content": "世界上最大的海洋是什么？"},
                {"role": "assistant", "content": "太平洋"},
            ],
        )
        self.assertEqual(buf.pinned_indexes(), [0, 1, 2, 3])

        buf.unpin(0, -2, -1)  # unpinning an unpinned message (-1) is fine
        self.assertEqual(buf.pinned_indexes(), [1, 2, 3])


class PinsAndTrimmingTest(unittest.TestCase):
    def test_pins_filling_max_count_keep_latest_exchange(self):
        buf = MessageBuffer(max_count=2)
        buf.commit([u("q1"), a("a1")])
        buf.pin(0, 1)
        sent = buf.payload([u("q2")])
        self.assertEqual(contents(sent), ["q1", "a1", "q2"])  # new turn always sent
        buf.commit([u("q2"), a("a2")])
        self.assertEqual(contents(buf.messages()), ["q1", "a1", "q2", "a2"])
        buf.commit([u("q3"), a("a3")])  # the previous, unpinned exchange goes
        self.assertEqual(contents(buf.messages()), ["q1", "a1", "q3", "a3"])
        self.assertEqual(buf.pinned_indexes(), [0, 1])

    def test_odd_limit_trims_to_exactly_max_count(self):
        buf = MessageBuffer(max_count=3)
        buf.commit([u("q1"), a("a1")])
        buf.commit([u("q2"), a("a2")])
        self.assertEqual(contents(buf.messages()), ["a1", "q2", "a2"])

    def test_no_limit(self):
        for limit in (None, 0):
            buf = MessageBuffer(limit)
            self.assertIsNone(buf.max_count)
            for i in range(20):
                buf.commit([u("q%d" % i), a("a%d" % i)])
            self.assertEqual(len(buf), 40)
            self.assertEqual(len(buf.payload([u("x")])), 41)

    def test_max_count_validation(self):
        for bad in (-1, 2.0, "6", True):
            with self.assertRaises(ValueError):
                MessageBuffer(bad)
        buf = MessageBuffer(4)
        with self.assertRaises(ValueError):
            buf.max_count = -3
        self.assertEqual(buf.max_count, 4)
        buf.max_count = 1
        self.assertEqual(buf.max_count, 1)

    def test_trim_after_lowering_limit(self):
        buf = MessageBuffer()
        buf.extend([u("q1"), a("a1"), u("q2"), a("a2")])
        buf.pin(1)
        buf.max_count = 2
        self.assertEqual(buf.trim(), 2)
        self.assertEqual(contents(buf.messages()), ["a1", "a2"])
        self.assertEqual(buf.pinned_indexes(), [0])

    def test_payload_does_not_mutate_and_returns_stored_dicts(self):
        buf = MessageBuffer(max_count=3)
        buf.extend([u("q1"), a("a1"), u("q2"), a("a2")])
        buf.pin(1)
        before = buf.messages()
        new = [u("q3")]
        sent = buf.payload(new)
        self.assertEqual(contents(sent), ["a1", "a2", "q3"])
        self.assertIs(sent[-1], new[0])
        self.assertEqual(buf.messages(), before)
        self.assertEqual(buf.pinned_indexes(), [1])
        self.assertEqual(len(new), 1)

    def test_pins_any_order_duplicates_negative(self):
        buf = MessageBuffer()
        buf.extend([u(str(i)) for i in range(5)])
        buf.pin(4, 0, -5, 2, 2)
        self.assertEqual(buf.pinned_indexes(), [0, 2, 4])
        buf.pin(0)  # already pinned
        buf.unpin(-1, 1, 1)  # 1 was not pinned
        self.assertEqual(buf.pinned_indexes(), [0, 2])

    def test_bad_index_changes_nothing(self):
        buf = MessageBuffer()
        buf.extend([u("q"), a("x")])
        buf.pin(1)
        with self.assertRaises(IndexError) as cm:
            buf.pin(0, 2)
        self.assertIn("2", str(cm.exception))
        self.assertEqual(buf.pinned_indexes(), [1])
        with self.assertRaises(IndexError) as cm:
            buf.unpin(1, -3)
        self.assertIn("-3", str(cm.exception))
        self.assertEqual(buf.pinned_indexes(), [1])
        for bad in ("0", 1.0, True, None):
            with self.assertRaises(TypeError):
                buf.pin(0, bad)
            self.assertEqual(buf.pinned_indexes(), [1])
        with self.assertRaises(IndexError):
            MessageBuffer().pin(0)

    def test_extend_with_pins_is_all_or_nothing(self):
        buf = MessageBuffer()
        buf.extend([u("q")])
        with self.assertRaises(IndexError):
            buf.extend([a("x"), u("y")], pinned=[0, 5])
        self.assertEqual(contents(buf.messages()), ["q"])
        buf.extend([a("x"), u("y")], pinned=[-1])
        self.assertEqual(buf.pinned_indexes(), [2])

    def test_messages_copy_is_deep(self):
        buf = MessageBuffer()
        buf.extend([validate_message(
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}, "argument 1")])
        got = buf.messages()
        got[0]["content"][0]["text"] = "changed"
        got[0]["role"] = "system"
        got.append(u("more"))
        self.assertEqual(buf.messages(), [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])

    def test_clear_and_repr(self):
        buf = MessageBuffer(6)
        buf.extend([u("secret text"), a("x")])
        buf.pin(0)
        self.assertNotIn("secret", repr(buf))
        self.assertIn("2 messages", repr(buf))
        buf.clear()
        self.assertEqual((len(buf), buf.pinned_indexes()), (0, []))


class RollbackTest(unittest.TestCase):
    def anna(self):
        buf = MessageBuffer()
        buf.commit([u("自然数1的后面是几?"), a("2")])
        buf.commit([u("再往后是几?"), a("3")])
        for n in range(4, 9):
            buf.commit([u("再往后呢?"), a(str(n))])
        return buf

    def test_seed_anna(self):
        buf = self.anna()
        self.assertEqual(len(buf.rounds()), 7)
        self.assertEqual(format_round(buf.rollback()), "[user]:再往后呢? [assistant]:7")
        self.assertEqual(format_round(buf.rollback(n=3)), "[user]:再往后呢? [assistant]:4")
        self.assertEqual(contents(buf.messages()),
                         ["自然数1的后面是几?", "2", "再往后是几?", "3", "再往后呢?", "4"])
        buf.commit([u("再往后呢?"), a("5")])
        self.assertEqual(format_round(buf.last_round()), "[user]:再往后呢? [assistant]:5")

    def test_n_larger_zero_negative_type(self):
        buf = self.anna()
        self.assertEqual(format_round(buf.rollback(0)), "[user]:再往后呢? [assistant]:8")
        self.assertEqual(len(buf), 14)
        with self.assertRaises(ValueError):
            buf.rollback(-1)
        for bad in (1.0, "1", True):
            with self.assertRaises(TypeError):
                buf.rollback(bad)
        self.assertEqual(len(buf), 14)
        self.assertEqual(buf.rollback(100), [])
        self.assertEqual(len(buf), 0)
        self.assertEqual(buf.rollback(), [])

    def test_system_prompt_is_not_a_round(self):
        buf = MessageBuffer()
        buf.extend([{"role": "system", "content": "be brief"}, u("q1"), a("a1"), u("q2"), a("a2")])
        buf.pin(0)
        self.assertEqual(format_round(buf.rollback()), "[user]:q1 [assistant]:a1")
        self.assertEqual(buf.rollback(5), [])
        self.assertEqual(buf.messages(), [{"role": "system", "content": "be brief"}])
        self.assertEqual(buf.pinned_indexes(), [0])

    def test_forged_assistant_first_and_two_users(self):
        buf = MessageBuffer()
        buf.extend([a("hello"), u("q1"), u("q1 again"), a("a1"), u("q2")])
        self.assertEqual([contents(r) for r in buf.rounds()], [["q1"], ["q1 again", "a1"], ["q2"]])
        self.assertEqual(format_round(buf.rollback()), "[user]:q1 again [assistant]:a1")
        self.assertEqual(format_round(buf.rollback()), "[user]:q1")
        self.assertEqual(buf.rollback(), [])
        self.assertEqual(contents(buf.messages()), ["hello"])

    def test_tool_round_and_pins_removed(self):
        buf = MessageBuffer()
        call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        buf.extend([
            u("q1"), a("a1"),
            u("weather?"),
            validate_message({"role": "assistant", "tool_calls": [call]}, "argument 4"),
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            a("It is sunny."),
        ])
        buf.pin(3, 0)
        self.assertEqual(len(buf.rounds()), 2)
        self.assertEqual(format_round(buf.rollback()), "[user]:q1 [assistant]:a1")
        self.assertEqual(buf.pinned_indexes(), [0])


class FormatRoundTest(unittest.TestCase):
    def test_formats(self):
        msgs = [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
        ]
        self.assertEqual(format_round(msgs), "[user]:what is this? [image] [assistant]:[tool call: look]")
        self.assertEqual(format_round([]), "")


class ValidateMessageTest(unittest.TestCase):
    def bad(self, msg, *words):
        with self.assertRaises(ValueError) as cm:
            validate_message(msg, "argument 3")
        text = str(cm.exception)
        self.assertIn("argument 3", text)
        for w in words:
            self.assertIn(w, text)

    def test_rejections(self):
        self.bad({"role": "bot", "content": "x"}, "'bot'", "'user'")
        self.bad({"content": "x"}, "role")
        self.bad({"role": "user"}, "content")
        self.bad({"role": "user", "content": None}, "content")
        self.bad({"role": "user", "content": 5}, "int")
        self.bad({"role": "user", "content": ["text"]}, "part 0", "type")
        self.bad({"role": "user", "content": [{"text": "x"}]}, "part 0", "type")
        self.bad({"role": "tool", "content": "x"}, "tool_call_id")
        self.bad({"role": "function", "content": "x"}, "name")
        self.bad({"role": "user", "content": "x", "name": 3}, "name")
        self.bad({"role": "assistant", "content": None}, "content")
        self.bad({"role": "assistant", "content": "x", "tool_calls": "call"}, "tool_calls")
        self.bad("hello", "str", "user_msg")
        self.bad(["user", "hello"], "list")
        self.bad({1: "user"}, "keys")

    def test_accepts_and_normalizes(self):
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        src = {"role": "assistant", "tool_calls": [call], "reasoning_content": "thinking...", "x-extra": 1}
        got = validate_message(src, "argument 1")
        self.assertEqual(got, {"role": "assistant", "tool_calls": [call], "content": None, "x-extra": 1})
        self.assertIsNot(got, src)
        call["function"]["name"] = "changed"  # the caller's object is not kept
        self.assertEqual(got["tool_calls"][0]["function"]["name"], "f")
        self.assertNotIn("content", src)

        proxy = types.MappingProxyType({"role": "developer", "content": "rules", "name": "ops"})
        self.assertEqual(validate_message(proxy, "x"), {"role": "developer", "content": "rules", "name": "ops"})
        self.assertEqual(validate_message({"role": "user", "content": ""}, "x"), {"role": "user", "content": ""})
        self.assertEqual(
            validate_message({"role": "assistant", "content": None, "refusal": "no"}, "x")["refusal"], "no")
        self.assertEqual(
            validate_message({"role": "tool", "tool_call_id": "c", "content": "ok"}, "x")["tool_call_id"], "c")


class ArchiveTest(unittest.TestCase):
    def sample(self):
        buf = MessageBuffer(max_count=10)
        buf.extend([{"role": "system", "content": "be brief"}])
        buf.commit([u("中文 q1"), a("a1")])
        buf.commit([u("q2"), a("a2")])
        buf.pin(0, -2)
        return buf

    def test_round_trip_with_pins(self):
        buf = self.sample()
        data = json.loads(json.dumps(buf.to_archive(), ensure_ascii=False))
        self.assertEqual((data["format"], data["version"]), ("openai2.chat", 1))
        msgs, pins = from_archive(data)
        self.assertEqual(msgs, buf.messages())
        self.assertEqual(pins, [0, 3])
        other = MessageBuffer()
        other.extend([u("already here")])
        other.extend(msgs, pinned=pins)  # appended: pins shift by the existing length
        self.assertEqual(other.pinned_indexes(), [1, 4])
        self.assertEqual(other.messages()[1:], buf.messages())

    def test_plain_list(self):
        plain = json.loads(json.dumps([u("自然数1的后面是几?"), a("2")], ensure_ascii=False))
        msgs, pins = from_archive(plain)
        self.assertEqual(msgs, plain)
        self.assertEqual(pins, [])
        self.assertIsNot(msgs[0], plain[0])
        self.assertEqual(from_archive([]), ([], []))

    def test_bad_archives(self):
        good = self.sample().to_archive()

        def bad(data, *words):
            with self.assertRaises(ValueError) as cm:
                from_archive(data)
            for w in words:
                self.assertIn(w, str(cm.exception))

        bad("text", "str")
        bad(None, "None")
        bad({"role": "user", "content": "x"}, "single message")
        bad({"format": "other"}, "'other'")
        bad(dict(good, version=2), "version 2", "upgrade")
        bad(dict(good, version="1"), "version")
        bad(dict(good, messages={"a": 1}), "messages")
        bad(dict(good, pinned=[0, 9]), "9")
        bad(dict(good, pinned=[-1]), "-1")
        bad(dict(good, pinned="0"), "pinned")
        bad([u("ok"), {"role": "wizard", "content": "x"}], "archive message 1", "wizard")


class LinearCostTest(unittest.TestCase):
    """A big history works, and the Python-level work grows linearly (counted, not timed)."""

    def build(self, n, limit):
        buf = MessageBuffer()
        msgs = []
        for i in range(n // 2):
            msgs += [u("q%d" % i), a("a%d" % i)]
        buf.extend(msgs, pinned=range(0, n, 50))
        buf.max_count = limit
        return buf

    def test_ten_thousand(self):
        buf = self.build(10000, 1000)
        everything = buf.messages()
        pinned = {everything[i]["content"] for i in buf.pinned_indexes()}
        self.assertEqual(len(pinned), 200)
        sent = buf.payload([u("new")])
        self.assertEqual(len(sent), 1000)
        self.assertTrue(pinned <= set(contents(sent)))
        self.assertEqual(sent[-1]["content"], "new")
        self.assertEqual(len(buf), 10000)
        exchange = [u("new"), a("answer")]
        expected = contents(buf.payload(exchange))
        buf.commit(exchange)
        self.assertEqual(len(buf), 1000)
        self.assertEqual(contents(buf.messages()), expected)
        self.assertEqual(expected[-2:], ["new", "answer"])
        self.assertEqual(len(set(contents(sent)) - set(expected)), 1)  # one more old message made room
        self.assertEqual(len(buf.pinned_indexes()), 200)

    def count_lines(self, func):
        counter = [0]
        code_file = sys.modules[MessageBuffer.__module__].__file__

        def tracer(frame, event, arg):
            if frame.f_code.co_filename != code_file:
                return None

            def local(frame, event, arg):
                if event == "line":
                    counter[0] += 1
                return local
            return local

        old = sys.gettrace()
        sys.settrace(tracer)
        try:
            func()
        finally:
            sys.settrace(old)
        return counter[0]

    def test_line_events_grow_linearly(self):
        costs = {}
        for n in (2000, 4000):
            buf = self.build(n, n // 2)
            payload_cost = self.count_lines(lambda buf=buf: buf.payload([u("x")]))
            commit_cost = self.count_lines(lambda buf=buf: buf.commit([u("x"), a("y")]))
            costs[n] = (payload_cost, commit_cost)
        for small, big in zip(costs[2000], costs[4000]):
            self.assertGreater(small, 0)
            self.assertLess(big, small * 3)  # linear: about 2; quadratic would be about 4


def units(messages):
    """Reference model: an assistant message and the tool answers right after it form one unit;
    every other message is a unit of its own."""
    out = []
    for m in messages:
        if m["role"] == "tool" and out and out[-1][0]["role"] == "assistant":
            out[-1].append(m)
        else:
            out.append([m])
    return out


class RandomPropertyTest(unittest.TestCase):
    """Random commits, rollbacks, pins, unpins, trims and archive round trips keep invariants."""

    def run_one(self, seed, limit):
        rng = random.Random(seed)
        buf = MessageBuffer(limit)
        counter = [0]
        pinned_ids = set()

        def fresh(role):
            counter[0] += 1
            msg = {"role": role, "content": str(counter[0])}
            if role == "tool":
                msg["tool_call_id"] = "t"
            return msg

        def ids():
            return [int(m["content"]) for m in buf.messages()]

        def check_pins():
            current = ids()
            self.assertEqual({current[i] for i in buf.pinned_indexes()}, pinned_ids & set(current))
            self.assertEqual(current, sorted(current))  # order preserved

        for _ in range(200):
            op = rng.random()
            before = ids()
            if op < 0.45:
                new = [fresh("user")] + [fresh(rng.choice(["assistant", "tool", "user"]))
                                         for _ in range(rng.randrange(0, 3))]
                snapshot = buf.messages()
                sent = buf.payload(new)
                self.assertEqual(buf.messages(), snapshot)
                buf.commit(new)
                after = ids()
                new_ids = [int(m["content"]) for m in new]
                self.assertEqual(after[-len(new):], new_ids)
                # what is sent: the history minus its oldest unpinned units (an assistant
                # message with the tool answers right after it goes whole) until history + new
                # fit the limit, never a tool answer without an assistant message before it
                excess = len(snapshot) + len(new) - limit if limit else 0
                expected = []
                for unit in units(snapshot):
                    unit_ids = [int(m["content"]) for m in unit]
                    if excess > 0 and not pinned_ids & set(unit_ids):
                        excess -= len(unit)
                        continue
                    if unit[0]["role"] != "tool":
                        expected.extend(unit_ids)
                self.assertEqual([int(m["content"]) for m in sent], expected + new_ids)
                removed = set(before) - set(after)
                self.assertFalse(removed & pinned_ids)
                for unit in units(snapshot):  # a unit is removed whole or kept whole
                    unit_ids = {int(m["content"]) for m in unit}
                    self.assertIn(len(unit_ids & removed), (0, len(unit_ids)))
                in_pinned_units = {int(m["content"]) for unit in units(snapshot) for m in unit
                                   if pinned_ids & {int(x["content"]) for x in unit}}
                rest = after[:-len(new)]
                if limit and len(after) > limit:
                    self.assertTrue(all(i in in_pinned_units for i in rest))
                elif not limit:
                    self.assertFalse(removed)
                kept_free = [i for i in rest if i not in in_pinned_units]
                if removed and kept_free:
                    self.assertLess(max(removed), min(kept_free))
            elif op < 0.55:
                n = rng.randrange(0, 4)
                users = [i for i, m in zip(before, buf.messages()) if m["role"] == "user"]
                result = buf.rollback(n)
                after = ids()
                self.assertEqual(before[:len(after)], after)
                users_after = [i for i, m in zip(after, buf.messages()) if m["role"] == "user"]
                self.assertEqual(len(users) - len(users_after), min(n, len(users)))
                if users_after:
                    self.assertEqual([int(m["content"]) for m in result],
                                     after[after.index(users_after[-1]):])
                else:
                    self.assertEqual(result, [])
                    if users:
                        self.assertEqual(after, before[:before.index(users[0])])
            elif op < 0.75:
                length = len(before)
                k = rng.randrange(1, 4)
                idx = [rng.randrange(-length - 2, length + 2) for _ in range(k)] if length or rng.random() < .5 else []
                pin = rng.random() < 0.6
                pins_before = buf.pinned_indexes()
                if any(not -length <= i < length for i in idx):
                    with self.assertRaises(IndexError):
                        (buf.pin if pin else buf.unpin)(*idx)
                    self.assertEqual(buf.pinned_indexes(), pins_before)
                else:
                    (buf.pin if pin else buf.unpin)(*idx)
                    for i in idx:
                        (pinned_ids.add if pin else pinned_ids.discard)(before[i])
            elif op < 0.8:
                removed = buf.trim()
                after = ids()
                self.assertEqual(len(before) - len(after), removed)
                if limit:
                    msgs = buf.messages()
                    in_pinned_units = {int(m["content"]) for unit in units(msgs) for m in unit
                                       if pinned_ids & {int(x["content"]) for x in unit}}
                    self.assertTrue(len(after) <= limit or all(i in in_pinned_units for i in after))
            elif op < 0.9:
                data = json.loads(json.dumps(buf.to_archive()))
                pins_before = buf.pinned_indexes()
                msgs, pins = from_archive(data)
                buf = MessageBuffer(limit)
                buf.extend(msgs, pinned=pins)
                self.assertEqual(ids(), before)
                self.assertEqual(buf.pinned_indexes(), pins_before)
            else:
                forged = [validate_message(fresh(rng.choice(["system", "assistant", "user"])), "arg")
                          for _ in range(rng.randrange(0, 3))]
                buf.extend(forged)
                self.assertEqual(ids(), before + [int(m["content"]) for m in forged])
            check_pins()

    def test_random_sequences(self):
        for seed in range(8):
            for limit in (None, 1, 4, 7):
                with self.subTest(seed=seed, limit=limit):
                    self.run_one(seed, limit)


if __name__ == "__main__":
    unittest.main()
