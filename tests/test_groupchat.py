"""GroupChat: the seed 001 "群聊多角色模拟" example, the prompt, reply parsing, dialog and archives.

The tests run in memory (tests/support/memory.py: a MemoryTransport where the FakeServer
stood).  On the loopback FakeServer stay TestSeedExample.test_seed_example_runs_verbatim (the
seed's code runs unchanged, so its GroupChat finds the server through OPENAI_BASE_URL alone:
no transport can be passed) and TestEndToEndOverSockets (a request, the remarks and the async
twins over a real connection).
"""
import asyncio
import contextlib
import io
import json
import os
import shutil
import tempfile
import threading
import unittest

import openai2
from openai2 import AKPool
from openai2.groupchat import GroupChat, GroupChatReplyError, build_groupchat_messages, parse_groupchat_reply
from openai2.testing import Reply
from tests.support.memory import memory_or_socket_server, server_options

KEY = "sk-test-groupchat-0123456789abcdef"

# Seed 001, section "群聊多角色模拟", verbatim (it must run unchanged).
SEED_EXAMPLE = '''\
import json
from openai2 import GroupChat

api_key = '...'  # 更换成自己的 api_key
group = GroupChat(api_key=api_key, model="gpt-3.5-turbo")

# 设置角色
group.roles['苏轼'] = '宋朝诗人，他的词风格独特，既有儒家的教诲，又有生活的乐趣。'
group.roles['李清照'] = '宋代著名的女词人，其词句优美，情感真挚。'
group.roles['杜甫'] = '唐朝著名诗人。'

# 添加角色历史对话
group.add_dialog(speaker='苏轼', audiences=['李清照'], remark='你好呀')
group.add_dialog(speaker='李清照', audiences=['苏轼'], remark='好久不见, 你最近在忙什么?')
group.add_dialog(speaker='杜甫', audiences=['苏轼'], remark='上次托你帮我写的那首《茅屋为秋风所破歌》写好了吗?')

# 让 ChatGPT 模拟角色发言
answer = group.request([
    ('苏轼', ['李清照']),  # 第 1 个元素表示说话人, 第 2 个元素表示对谁说话. 由于一个人可以同时对多个人说话, 因此第 2 个元素为列表
    ('苏轼', ['杜甫']),
])

try:
    print( json.loads(answer) )
except:
    print(answer)

# 返回:
[
    {
        "speaker": "苏轼",
        "audiences": "李清照",
        "remark": "最近我在写一首新的诗，题目是《听雨》"
    },
    {
        "speaker": "苏轼",
        "audiences": "杜甫",
        "remark": "那首《茅屋为秋风所破歌》已经写好啦，我在信里寄给你了，请查收"
    }
]
'''

SEED_REPLY = [
    {"speaker": "苏轼", "audiences": "李清照", "remark": "最近我在写一首新的诗，题目是《听雨》"},
    {"speaker": "苏轼", "audiences": "杜甫", "remark": "那首《茅屋为秋风所破歌》已经写好啦，我在信里寄给你了，请查收"},
]

SEED_ROLES = {
    "苏轼": "宋朝诗人，他的词风格独特，既有儒家的教诲，又有生活的乐趣。",
    "李清照": "宋代著名的女词人，其词句优美，情感真挚。",
    "杜甫": "唐朝著名诗人。",
}

# The user message of the seed request, written out by hand from the documented format
# (README "Group chat" shows the same text).
SEED_USER_MESSAGE = """\
角色设定：
- 苏轼：宋朝诗人，他的词风格独特，既有儒家的教诲，又有生活的乐趣。
- 李清照：宋代著名的女词人，其词句优美，情感真挚。
- 杜甫：唐朝著名诗人。

已有的对话（按时间顺序）：
{"speaker": "苏轼", "audiences": ["李清照"], "remark": "你好呀"}
{"speaker": "李清照", "audiences": ["苏轼"], "remark": "好久不见, 你最近在忙什么?"}
{"speaker": "杜甫", "audiences": ["苏轼"], "remark": "上次托你帮我写的那首《茅屋为秋风所破歌》写好了吗?"}

需要写出的发言（按此顺序）：
{"speaker": "苏轼", "audiences": ["李清照"]}
{"speaker": "苏轼", "audiences": ["杜甫"]}"""

TURNS = [("苏轼", ["李清照"]), ("苏轼", ["杜甫"])]


def no_sleep(seconds, cancel):
    pass


def as_json(value):
    return json.dumps(value, ensure_ascii=False)


class GroupCase(unittest.TestCase):
    #: True: a real FakeServer over loopback sockets; False: a MemoryServer (no sockets)
    sockets = False

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.server = None

    def serve(self, *replies, sockets=None):
        self.server = memory_or_socket_server(self.sockets if sockets is None else sockets, replies=list(replies))
        self.addCleanup(self.server.stop)
        return self.server

    def group(self, roles=SEED_ROLES, **kw):
        if self.server is None:
            self.serve()
        kw.setdefault("model", "gpt-3.5-turbo")
        for name, value in server_options(self.server).items():
            kw.setdefault(name, value)
        kw.setdefault("sleep", no_sleep)
        g = GroupChat(api_key=kw.pop("api_key", KEY), **kw)
        for name, description in roles.items():
            g.roles[name] = description
        return g

    def seed_group(self, **kw):
        g = self.group(**kw)
        g.add_dialog(speaker="苏轼", audiences=["李清照"], remark="你好呀")
        g.add_dialog(speaker="李清照", audiences=["苏轼"], remark="好久不见, 你最近在忙什么?")
        g.add_dialog(speaker="杜甫", audiences=["苏轼"], remark="上次托你帮我写的那首《茅屋为秋风所破歌》写好了吗?")
        return g

    def sent(self, i=-1):
        return self.server.requests[i].json["messages"]


class TestSeedExample(GroupCase):
    def test_seed_example_runs_verbatim(self):
        server = self.serve(Reply(content=as_json(SEED_REPLY)), sockets=True)  # the seed passes no transport
        saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}

        def restore():
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

        self.addCleanup(restore)
        os.environ["OPENAI_BASE_URL"] = server.base_url
        namespace = {"__name__": "__seed__"}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(SEED_EXAMPLE, "seed-001", "exec"), namespace)
        self.assertEqual(json.loads(namespace["answer"]), SEED_REPLY)
        self.assertEqual(out.getvalue().strip(), str(SEED_REPLY))
        self.assertEqual(len(server.requests), 1)
        self.assertEqual(server.requests[0].headers.get("authorization"), "Bearer ...")
        self.assertEqual(server.requests[0].json["model"], "gpt-3.5-turbo")

    def test_role_descriptions_and_dialog_reach_the_server(self):
        self.serve(Reply(content=as_json(SEED_REPLY)))
        g = self.seed_group()
        g.request(TURNS)
        messages = self.sent()
        self.assertEqual([m["role"] for m in messages], ["system", "user"])
        for description in SEED_ROLES.values():
            self.assertIn(description, messages[1]["content"])
        self.assertEqual(messages[1]["content"], SEED_USER_MESSAGE)
        self.assertIn("JSON", messages[0]["content"])
        self.assertIn("只输出一个 JSON 数组", messages[0]["content"])
        self.assertEqual(messages, g.build_messages(TURNS))
        # request() leaves the dialog alone
        self.assertEqual(len(g), 3)

    def test_roles_edited_after_a_request_are_sent_next_time(self):
        self.serve(Reply(content=as_json(SEED_REPLY)), Reply(content=as_json(SEED_REPLY)))
        g = self.seed_group()
        g.request(TURNS)
        g.roles["杜甫"] = "唐朝诗人，忧国忧民。"
        g.request(TURNS)
        self.assertIn("- 杜甫：唐朝诗人，忧国忧民。", self.sent()[1]["content"])
        self.assertNotIn("唐朝著名诗人。", self.sent()[1]["content"])

    def test_request_remarks_normalises_audiences(self):
        self.serve(Reply(content=as_json(SEED_REPLY)))
        g = self.seed_group()
        remarks = g.request_remarks(TURNS)
        self.assertEqual(remarks, [
            {"speaker": "苏轼", "audiences": ["李清照"], "remark": SEED_REPLY[0]["remark"]},
            {"speaker": "苏轼", "audiences": ["杜甫"], "remark": SEED_REPLY[1]["remark"]},
        ])
        self.assertEqual(len(g), 3)


class TestRequestOptions(GroupCase):
    def test_per_call_options_are_applied_not_sent(self):
        self.serve(Reply(content=as_json(SEED_REPLY)))
        g = self.seed_group()
        g.request(TURNS, extra_headers={"X-Trace": "t1"}, extra_body={"top_k": 2}, timeout=(5, 30))
        req = self.server.requests[-1]
        self.assertEqual(req.headers.get("x-trace"), "t1")
        self.assertEqual(req.json["top_k"], 2)
        for name in ("extra_headers", "extra_body", "timeout"):
            self.assertNotIn(name, req.json)

    def test_answer_without_choices_is_an_error(self):
        self.serve(Reply(body={"code": 500, "msg": "busy"}))
        g = self.seed_group()
        with self.assertRaises(openai2.APIError):
            g.request_remarks(TURNS, record=True)
        self.assertEqual(len(g.export_dialogs()), 3)


class TestPromptLanguage(GroupCase):
    EN_ROLES = {"Alice": "a cheerful baker who loves puns", "Bob": "a grumpy retired sailor"}

    def test_english_roles_give_an_english_prompt(self):
        self.serve(Reply(content="[]"))
        g = self.group(roles=self.EN_ROLES)
        g.add_dialog("Alice", ["Bob"], "Morning, Bob! Fresh bread?")
        g.request([("Bob", ["Alice"])])
        system, user = self.sent()
        self.assertIn("Output only a JSON array", system["content"])
        self.assertEqual(user["content"], "\n".join([
            "Roles:",
            "- Alice: a cheerful baker who loves puns",
            "- Bob: a grumpy retired sailor",
            "",
            "Conversation so far (oldest first):",
            '{"speaker": "Alice", "audiences": ["Bob"], "remark": "Morning, Bob! Fresh bread?"}',
            "",
            "Remarks to write (in this order):",
            '{"speaker": "Bob", "audiences": ["Alice"]}',
        ]))

    def test_chinese_roles_give_a_chinese_prompt(self):
        system, user = build_groupchat_messages(SEED_ROLES, [], [("杜甫", ["苏轼", "李清照"])])
        self.assertIn("只输出一个 JSON 数组", system["content"])
        self.assertTrue(user["content"].startswith("角色设定：\n- 苏轼："))
        self.assertIn("已有的对话：（暂无）", user["content"])
        self.assertTrue(user["content"].endswith('{"speaker": "杜甫", "audiences": ["苏轼", "李清照"]}'))

    def test_one_chinese_name_in_an_english_cast_stays_english(self):
        roles = dict(self.EN_ROLES, 李白="a Tang dynasty poet who drinks too much")
        system, user = build_groupchat_messages(roles, [], [("李白", ["Alice"])])
        self.assertTrue(user["content"].startswith("Roles:"))
        self.assertIn("- 李白: a Tang dynasty poet", user["content"])

    def test_chinese_remarks_turn_the_prompt_chinese(self):
        roles = {"A": "", "B": ""}
        dialogs = [{"speaker": "A", "audiences": ["B"], "remark": "你今天吃饭了吗？"}]
        system, user = build_groupchat_messages(roles, dialogs, [("B", ["A"])])
        self.assertTrue(user["content"].startswith("角色设定：\n- A\n- B\n"))

    def test_language_can_be_forced(self):
        self.serve(Reply(content="[]"))
        g = self.group(language="en")
        g.request([("苏轼", ["杜甫"])])
        self.assertTrue(self.sent()[1]["content"].startswith("Roles:\n- 苏轼: 宋朝诗人"))
        with self.assertRaises(ValueError):
            GroupChat(KEY, model="m", language="fr")


class TestReplyParsing(GroupCase):
    def remarks_for(self, content, turns=TURNS, **kw):
        self.serve(Reply(content=content))
        g = self.seed_group()
        return g, g.request_remarks(turns, **kw)

    def test_fenced_reply(self):
        _, remarks = self.remarks_for("```json\n%s\n```" % as_json(SEED_REPLY))
        self.assertEqual([r["remark"] for r in remarks], [r["remark"] for r in SEED_REPLY])

    def test_text_around_the_array(self):
        noisy = "好的，以下是发言：[注意] 按要求输出\n%s\n希望你满意！[完]" % as_json(SEED_REPLY)
        _, remarks = self.remarks_for(noisy)
        self.assertEqual([r["audiences"] for r in remarks], [["李清照"], ["杜甫"]])

    def test_lists_of_names_before_the_array_are_skipped(self):
        noisy = 'For ["李清照"] and ["杜甫"]:\n%s' % as_json(SEED_REPLY)
        self.assertEqual(len(parse_groupchat_reply(noisy, TURNS, SEED_ROLES)), 2)

    def test_a_single_object_for_a_single_turn(self):
        one = {"speaker": "杜甫", "audiences": ["苏轼"], "remark": "好诗！"}
        self.assertEqual(parse_groupchat_reply("Sure: " + as_json(one), [("杜甫", ["苏轼"])], SEED_ROLES), [one])

    def test_object_wrapping_the_array_and_reordered_items(self):
        wrapped = {"remarks": [SEED_REPLY[1], SEED_REPLY[0]]}
        _, remarks = self.remarks_for(as_json(wrapped))
        self.assertEqual([r["remark"] for r in remarks], [SEED_REPLY[0]["remark"], SEED_REPLY[1]["remark"]])

    def test_several_audiences_as_one_string(self):
        reply = [{"speaker": "杜甫", "audiences": "李清照、苏轼", "remark": "二位好！"}]
        _, remarks = self.remarks_for(as_json(reply), turns=[("杜甫", ["苏轼", "李清照"])])
        self.assertEqual(remarks, [{"speaker": "杜甫", "audiences": ["苏轼", "李清照"], "remark": "二位好！"}])

    def test_missing_turn_raises_with_raw_and_records_nothing(self):
        raw = as_json(SEED_REPLY[:1])
        self.serve(Reply(content=raw))
        g = self.seed_group()
        with self.assertRaises(GroupChatReplyError) as caught:
            g.request_remarks(TURNS, record=True)
        self.assertIsInstance(caught.exception, ValueError)
        self.assertEqual(caught.exception.raw, raw)
        self.assertIn("苏轼 to 杜甫", str(caught.exception))
        self.assertEqual(len(caught.exception.problems), 1)
        self.assertEqual(len(g), 3)

    def test_extra_remark_raises(self):
        extra = SEED_REPLY + [{"speaker": "杜甫", "audiences": ["苏轼"], "remark": "多谢！"}]
        self.serve(Reply(content=as_json(extra)))
        g = self.seed_group()
        with self.assertRaises(GroupChatReplyError) as caught:
            g.request_remarks(TURNS, record=True)
        self.assertIn("not a requested turn", str(caught.exception))
        self.assertEqual(len(g), 3)

    def test_same_turn_twice_raises(self):
        twice = [SEED_REPLY[0], SEED_REPLY[0], SEED_REPLY[1]]
        with self.assertRaises(GroupChatReplyError) as caught:
            parse_groupchat_reply(as_json(twice), TURNS, SEED_ROLES)
        self.assertIn("one remark too many", str(caught.exception))
        # the same turn requested twice needs two remarks
        self.assertEqual(len(parse_groupchat_reply(as_json(twice[:2]), [TURNS[0], TURNS[0]], SEED_ROLES)), 2)

    def test_unusable_replies(self):
        for raw in ("我不知道。", "", "[1, 2]", '[{"speaker": "苏轼"}]', '"just a string"',
                    as_json([dict(SEED_REPLY[0], remark=""), SEED_REPLY[1]])):
            with self.subTest(raw=raw):
                with self.assertRaises(GroupChatReplyError) as caught:
                    parse_groupchat_reply(raw, TURNS, SEED_ROLES)
                self.assertEqual(caught.exception.raw, raw)
                self.assertTrue(caught.exception.problems)


class TestNames(GroupCase):
    def test_unknown_names_in_add_dialog(self):
        g = self.seed_group()
        for kwargs, named in (
            ({"speaker": "王安石", "audiences": ["苏轼"], "remark": "hi"}, "王安石"),
            ({"speaker": "苏轼", "audiences": ["李清照", "陶渊明"], "remark": "hi"}, "陶渊明"),
        ):
            with self.subTest(named=named):
                with self.assertRaises(ValueError) as caught:
                    g.add_dialog(**kwargs)
                self.assertIn(named, str(caught.exception))
        with self.assertRaises(ValueError):
            g.add_dialog(speaker="苏轼", audiences=[], remark="hi")
        with self.assertRaises(ValueError):
            g.add_dialog(speaker="苏轼", audiences=["苏轼"], remark="hi")
        with self.assertRaises(ValueError):
            g.add_dialog(speaker="苏轼", audiences=["杜甫"], remark=None)
        self.assertEqual(len(g), 3)

    def test_unknown_names_in_request_send_nothing(self):
        g = self.seed_group()
        with self.assertRaises(ValueError) as caught:
            g.request([("苏轼", ["李清照"]), ("王安石", ["陶渊明"])])
        self.assertIn("王安石", str(caught.exception))
        self.assertIn("陶渊明", str(caught.exception))
        for bad in ([], "苏轼", [("苏轼",)], [("苏轼", [])]):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                g.request(bad)
        self.assertEqual(self.server.requests, [])
        self.assertEqual(len(g), 3)

    def test_single_audience_string_and_dict_turns(self):
        self.serve(Reply(content=as_json(SEED_REPLY)))
        g = self.seed_group()
        g.add_dialog("杜甫", "李清照", "久仰")
        self.assertEqual(g.export_dialogs()[-1]["audiences"], ["李清照"])
        remarks = g.request_remarks([{"speaker": "苏轼", "audiences": "李清照"}, ("苏轼", "杜甫")])
        self.assertEqual([r["audiences"] for r in remarks], [["李清照"], ["杜甫"]])


class TestDialog(GroupCase):
    def test_record_continues_the_scene(self):
        second = [{"speaker": "杜甫", "audiences": ["苏轼"], "remark": "多谢多谢！"}]
        self.serve(Reply(content=as_json(SEED_REPLY)), Reply(content=as_json(second)))
        g = self.seed_group()
        first = g.request_remarks(TURNS, record=True)
        self.assertEqual(g.export_dialogs()[-2:], first)
        g.request_remarks([("杜甫", ["苏轼"])], record=True)
        user = self.sent()[1]["content"]
        for remark in SEED_REPLY:
            self.assertIn(as_json({"speaker": "苏轼", "audiences": [remark["audiences"]], "remark": remark["remark"]}), user)
        self.assertEqual(g.export_dialogs()[-1], second[0])
        self.assertEqual(len(g), 6)

    def test_trimming_keeps_the_newest(self):
        self.serve(Reply(content=as_json(SEED_REPLY)), Reply(content="[]"))
        g = self.seed_group(MaxRemarks=4)
        g.add_dialog("苏轼", ["杜甫"], "第四句")
        g.add_dialog("杜甫", ["苏轼"], "第五句")
        kept = g.export_dialogs()
        self.assertEqual([d["remark"] for d in kept], ["好久不见, 你最近在忙什么?", "上次托你帮我写的那首《茅屋为秋风所破歌》写好了吗?", "第四句", "第五句"])
        g.request_remarks(TURNS, record=True)
        self.assertEqual([d["remark"] for d in g.export_dialogs()], ["第四句", "第五句"] + [r["remark"] for r in SEED_REPLY])
        g.request([("杜甫", ["苏轼"])])
        self.assertNotIn("第三句", self.sent()[1]["content"])
        self.assertNotIn("好久不见", self.sent()[1]["content"])
        g.max_remarks = 1
        self.assertEqual(g.MaxRemarks, 1)
        self.assertEqual([d["remark"] for d in g.export_dialogs()], [SEED_REPLY[1]["remark"]])
        g.MaxRemarks = None
        g.import_dialogs(kept)
        self.assertEqual(len(g), 5)
        for bad in (-1, 1.5, "3"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                g.MaxRemarks = bad
        with self.assertRaises(ValueError):
            GroupChat(KEY, model="m", MaxRemarks=2, max_remarks=3)
        self.assertEqual(GroupChat(KEY, model="m", max_remarks=2).MaxRemarks, 2)

    def test_export_is_a_copy_and_import_validates(self):
        g = self.seed_group()
        exported = g.export_dialogs()
        exported[0]["audiences"].append("杜甫")
        exported[1]["remark"] = "changed"
        self.assertEqual(g.export_dialogs()[0]["audiences"], ["李清照"])
        self.assertEqual(g.export_dialogs()[1]["remark"], "好久不见, 你最近在忙什么?")
        other = self.group()
        other.import_dialogs(g.export_dialogs())
        self.assertEqual(other.export_dialogs(), g.export_dialogs())
        bad = g.export_dialogs() + [{"speaker": "王安石", "audiences": ["苏轼"], "remark": "hi"}]
        with self.assertRaises(ValueError) as caught:
            other.import_dialogs(bad)
        self.assertIn("remark 4", str(caught.exception))
        self.assertIn("王安石", str(caught.exception))
        for malformed in ([{"speaker": "苏轼", "remark": "no audiences"}], ["text"], {"speaker": "苏轼"}):
            with self.subTest(malformed=malformed), self.assertRaises(ValueError):
                other.import_dialogs(malformed)
        self.assertEqual(len(other), 3)
        other.clear_dialogs()
        self.assertEqual(other.export_dialogs(), [])
        self.assertEqual(other.roles, SEED_ROLES)

    def test_dump_load_round_trip(self):
        g = self.seed_group()
        path = os.path.join(self.tmp, "scene.json")
        g.dump(path)
        with open(path, "rb") as f:
            raw = f.read()
        data = json.loads(raw.decode("utf-8"))
        self.assertIn("李清照".encode(), raw)  # readable UTF-8, not \\u escapes
        self.assertEqual(data["roles"], SEED_ROLES)
        self.assertEqual(data["dialogs"], g.export_dialogs())
        self.assertEqual(sorted(os.listdir(self.tmp)), ["scene.json"])  # no temporary file left
        other = self.group(roles={"Someone": "else", "Other": ""}, MaxRemarks=2)
        other.add_dialog("Someone", ["Other"], "replaced by load")
        other.load(path)
        self.assertEqual(other.roles, SEED_ROLES)
        self.assertEqual(other.export_dialogs(), g.export_dialogs()[-2:])

    def test_corrupted_or_foreign_files_change_nothing(self):
        g = self.seed_group()
        before = (dict(g.roles), g.export_dialogs())
        cases = {
            "broken.json": b'{"format": "openai2.groupchat", "version": 1, "roles": {',
            "binary.json": b"\xff\xfe\x00garbage",
            "chat.json": json.dumps({"format": "openai2.chat", "version": 1, "messages": []}).encode(),
            "badremark.json": json.dumps({"format": "openai2.groupchat", "version": 1, "roles": {"A": "x"},
                                          "dialogs": [{"speaker": "A", "audiences": ["B"], "remark": 5}]}).encode(),
            "future.json": json.dumps({"format": "openai2.groupchat", "version": 99, "roles": {}, "dialogs": []}).encode(),
        }
        for name, content in cases.items():
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(content)
            with self.subTest(name=name):
                with self.assertRaises(ValueError) as caught:
                    g.load(path)
                self.assertIn(name, str(caught.exception))
                self.assertEqual((g.roles, g.export_dialogs()), before)
        with self.assertRaises(FileNotFoundError):
            g.load(os.path.join(self.tmp, "missing.json"))


class TestDemoBrain(GroupCase):
    """The fake server's default DemoBrain answers GroupChat prompts (README examples run offline)."""

    def test_seed_turns_get_the_documented_remarks(self):
        self.serve()  # no scripted replies: DemoBrain answers
        g = self.seed_group()
        remarks = g.request_remarks(TURNS)
        self.assertEqual([r["remark"] for r in remarks], [r["remark"] for r in SEED_REPLY])

    def test_other_turns_in_english(self):
        self.serve()
        g = self.group(roles={"Alice": "a baker", "Bob": "a sailor", "Carol": "a pilot"})
        remarks = g.request_remarks([("Bob", ["Alice", "Carol"]), ("Carol", "Bob")], record=True)
        self.assertEqual([(r["speaker"], r["audiences"]) for r in remarks], [("Bob", ["Alice", "Carol"]), ("Carol", ["Bob"])])
        self.assertTrue(all(r["remark"] for r in remarks))
        self.assertEqual(len(g), 2)


class TestReadmeShowsThePrompt(unittest.TestCase):
    def test_readme_prompts_are_the_ones_sent(self):
        readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("<!-- section: groupchat -->"):text.index("<!-- /section: groupchat -->")]
        zh = build_groupchat_messages(SEED_ROLES, [
            {"speaker": "苏轼", "audiences": ["李清照"], "remark": "你好呀"},
            {"speaker": "李清照", "audiences": ["苏轼"], "remark": "好久不见, 你最近在忙什么?"},
            {"speaker": "杜甫", "audiences": ["苏轼"], "remark": "上次托你帮我写的那首《茅屋为秋风所破歌》写好了吗?"},
        ], TURNS)
        en = build_groupchat_messages({"A": "x"}, [], [("A", ["A"])], "en")
        for shown in (zh[0]["content"], zh[1]["content"], en[0]["content"], SEED_USER_MESSAGE):
            self.assertIn("```text\n%s\n```" % shown, section)


class TestAsync(GroupCase):
    def test_async_request_and_remarks(self):
        self.serve(Reply(content=as_json(SEED_REPLY)), Reply(content="```json\n%s\n```" % as_json(SEED_REPLY)))
        g = self.seed_group()

        async def main():
            raw = await g.async_request(TURNS)
            remarks = await g.async_request_remarks(TURNS, record=True, temperature=0.5)
            return raw, remarks

        raw, remarks = asyncio.run(main())
        self.assertEqual(json.loads(raw), SEED_REPLY)
        self.assertEqual([r["remark"] for r in remarks], [r["remark"] for r in SEED_REPLY])
        self.assertEqual(len(g), 5)
        self.assertEqual(self.server.requests[-1].json["temperature"], 0.5)

    def test_async_bad_reply_raises_and_records_nothing(self):
        self.serve(Reply(content="[]"))
        g = self.seed_group()
        with self.assertRaises(GroupChatReplyError):
            asyncio.run(g.async_request_remarks(TURNS, record=True))
        self.assertEqual(len(g), 3)

    def test_async_cancel_records_nothing(self):
        gate = threading.Event()
        self.addCleanup(gate.set)
        if self.sockets:
            self.serve(Reply(content=as_json(SEED_REPLY), gate=gate))
        else:
            # in memory a gate is waited on in the worker, deaf to the cancel: a delay that
            # really blocks (stalls="block") until the cancel stands where the gate stood
            self.serve(Reply(content=as_json(SEED_REPLY), delay=3600))
            self.server.stalls = "block"
        g = self.seed_group(timeout=(5, 3600))

        async def main():
            task = asyncio.ensure_future(g.async_request_remarks(TURNS, record=True))
            for _ in range(2000):  # until the request is in (its answer held back)
                if self.server.requests:
                    break
                await asyncio.sleep(0.005)
            self.assertEqual(len(self.server.requests), 1)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        self.assertEqual(len(g), 3)
        self.assertIsNone(g.last_request)

    def test_async_twins_exist(self):
        for name in ("request", "request_remarks"):
            self.assertTrue(asyncio.iscoroutinefunction(getattr(GroupChat, "async_" + name)), name)


class TestClientAndParams(GroupCase):
    def test_akpool_rotates_and_keys_stay_hidden(self):
        self.serve(*[Reply(content=as_json(SEED_REPLY)) for _ in range(3)])
        keys = ["sk-pool-a-2222222222222222", "sk-pool-b-3333333333333333"]
        g = self.seed_group(api_key=AKPool(keys))
        for _ in range(3):
            g.request(TURNS)
        auth = [r.headers.get("authorization") for r in self.server.requests]
        self.assertEqual(auth, ["Bearer " + keys[0], "Bearer " + keys[1], "Bearer " + keys[0]])
        for key in keys + [KEY]:
            self.assertNotIn(key, repr(g))
        self.assertNotIn(KEY, repr(self.group()))

    def test_default_params_call_overrides_and_client_options(self):
        self.serve(Reply(content="[]"), Reply(content="[]"))
        g = self.seed_group(temperature=0.2, default_headers={"X-Scene": "song"}, max_retries=0, timeout=5)
        g.request(TURNS)
        g.request(TURNS, temperature=0.9, model="other-model", response_format={"type": "json_object"})
        first, second = self.server.requests
        self.assertEqual((first.json["temperature"], first.json["model"]), (0.2, "gpt-3.5-turbo"))
        self.assertEqual((second.json["temperature"], second.json["model"]), (0.9, "other-model"))
        self.assertEqual(second.json["response_format"], {"type": "json_object"})
        self.assertEqual(first.headers.get("x-scene"), "song")
        self.assertNotIn("default_headers", first.json)
        self.assertEqual(g.client.max_retries, 0)
        self.assertEqual(g.last_request["temperature"], 0.9)
        self.assertEqual(g.params, {"model": "gpt-3.5-turbo", "temperature": 0.2})

    def test_a_per_call_none_unsets_a_default_instead_of_sending_null(self):
        self.serve(Reply(content="[]"), Reply(content="[]"))
        g = self.seed_group(temperature=0.2, top_p=None)
        g.request(TURNS, temperature=None, seed=None)
        g.request(TURNS)
        first, second = self.server.requests
        for name in ("temperature", "seed", "top_p"):
            self.assertNotIn(name, first.json)
        self.assertNotIn("top_p", second.json)  # a default of None is never sent either
        self.assertEqual(second.json["temperature"], 0.2)  # unset for that one call only
        self.assertEqual(g.params["temperature"], 0.2)

    def test_reserved_and_missing_params(self):
        g = self.seed_group()
        with self.assertRaises(TypeError):
            g.request(TURNS, messages=[])
        with self.assertRaises(TypeError):
            g.request(TURNS, stream=True)
        with self.assertRaises(TypeError):
            GroupChat(KEY, model="m", stream=True)
        with self.assertRaises(ValueError):
            g.request(TURNS, model="")
        with self.assertRaises(TypeError):
            GroupChat(KEY, client=g.client)
        self.assertEqual(self.server.requests, [])

    def test_shared_client_and_usage(self):
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        self.serve(Reply(content=as_json(SEED_REPLY), usage=usage), Reply(content=as_json(SEED_REPLY), usage=usage))
        first = self.seed_group()
        shared = GroupChat(client=first.client, model="gpt-3.5-turbo")
        shared.roles.update(SEED_ROLES)
        shared.request(TURNS)
        shared.request(TURNS)
        self.assertIs(shared.client, first.client)
        self.assertEqual(shared.last_usage, usage)
        self.assertEqual(shared.total_usage, {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30})
        self.assertEqual(shared.last_response.choices[0].message.content, as_json(SEED_REPLY))


class TestEndToEndOverSockets(GroupCase):
    """A request, the remarks and the async twins over a real loopback connection."""

    sockets = True

    test_role_descriptions_and_dialog_reach_the_server = TestSeedExample.test_role_descriptions_and_dialog_reach_the_server
    test_request_remarks_normalises_audiences = TestSeedExample.test_request_remarks_normalises_audiences
    test_async_request_and_remarks = TestAsync.test_async_request_and_remarks
    test_async_cancel_records_nothing = TestAsync.test_async_cancel_records_nothing


if __name__ == "__main__":
    unittest.main()
