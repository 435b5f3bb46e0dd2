"""AttrDict / AttrList: attribute access over parsed JSON, lazily wrapped."""

import copy
import json
import pickle
import unittest

from openai2.objects import AttrDict, AttrList, to_attr


def sample():
    return {
        "id": "chatcmpl-1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": None}},
            {"index": 1, "message": {"role": "assistant", "content": "yo"}},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        "nested": [[{"deep": 1}], []],
        "items": "a key named like a method",
    }


class AttrDictTests(unittest.TestCase):
    def test_attribute_and_item_access_agree(self):
        r = to_attr(sample())
        self.assertIsInstance(r, AttrDict)
        self.assertEqual(r.choices[0].message.content, "hi")
        self.assertEqual(r["choices"][1]["message"]["content"], "yo")
        self.assertIsInstance(r["choices"], AttrList)
        self.assertIsInstance(r["choices"][0], AttrDict)
        self.assertIsInstance(r.choices[1].message, AttrDict)
        self.assertEqual(r.nested[0][0].deep, 1)
        self.assertIsInstance(r.nested[0], AttrList)
        self.assertEqual(r.choices[-1].index, 1)
        self.assertEqual(r.id, "chatcmpl-1")

    def test_get(self):
        r = to_attr(sample())
        self.assertIsInstance(r.get("usage"), AttrDict)
        self.assertEqual(r.get("usage").prompt_tokens, 3)
        self.assertIsNone(r.get("missing"))
        self.assertEqual(r.get("missing", 7), 7)
        self.assertEqual(AttrDict({1: {"a": 2}}).get(1).a, 2)

    def test_missing_attribute_is_none_but_dunders_raise(self):
        r = to_attr(sample())
        self.assertIsNone(r.missing)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertIsNone(r.choices[1].message.tool_calls)
        self.assertIsNone(r._private)
        with self.assertRaises(AttributeError):
            r.__missing_dunder__  # noqa: B018
        self.assertFalse(hasattr(r, "__deepcopy_like__"))
        # a dunder-shaped key is still not an attribute (copy/pickle probe such names)
        odd = AttrDict({"__deepcopy__": 1, "__x__": 2})
        with self.assertRaises(AttributeError):
            odd.__x__  # noqa: B018
        self.assertEqual(copy.deepcopy(odd), {"__deepcopy__": 1, "__x__": 2})
        self.assertEqual(odd["__x__"], 2)
        with self.assertRaises(KeyError):
            r["missing"]  # noqa: B018

    def test_methods_win_over_keys(self):
        r = to_attr(sample())
        self.assertTrue(callable(r.items))
        self.assertEqual(r["items"], "a key named like a method")
        self.assertTrue(callable(r.get))
        self.assertTrue(callable(r.to_dict))

    def test_set_and_delete(self):
        r = AttrDict()
        r.answer = 42
        self.assertEqual(r, {"answer": 42})
        r.plain = {"a": {"b": [{"c": 1}]}}
        self.assertEqual(r.plain.a.b[0].c, 1)  # a plain dict stored later is wrapped when read
        del r.answer
        self.assertNotIn("answer", r)
        with self.assertRaises(AttributeError):
            del r.answer
        r["late"] = [{"x": 1}]
        self.assertEqual(r.late[0].x, 1)
        r.late.append({"y": 2})
        self.assertEqual(r.late[1].y, 2)

    def test_wrapping_is_stored_back_so_mutations_stick(self):
        r = to_attr(sample())
        r.choices[0].message.content = "changed"
        self.assertEqual(r["choices"][0]["message"]["content"], "changed")
        self.assertIs(r.choices, r["choices"])
        self.assertIs(r.choices[0], r.choices[0])
        self.assertIs(r.usage, r.get("usage"))
        self.assertEqual(json.loads(json.dumps(r))["choices"][0]["message"]["content"], "changed")

    def test_the_source_dict_is_not_modified(self):
        source = sample()
        r = to_attr(source)
        r.choices[0].message.content = "changed"
        r.usage.total = 4
        self.assertIs(type(source["choices"]), list)
        self.assertIs(type(source["choices"][0]), dict)
        self.assertEqual(source["choices"][0]["message"]["content"], "hi")
        self.assertNotIn("total", source["usage"])
        self.assertIs(type(AttrDict(source)["usage"]), AttrDict)
        self.assertIs(type(source["usage"]), dict)

    def test_json_copy_pickle_repr(self):
        r = to_attr(sample())
        r.choices[0].message  # noqa: B018 - wrap part of the tree first
        self.assertEqual(json.loads(json.dumps(r)), sample())
        plain = r.to_dict()
        self.assertIs(type(plain), dict)
        self.assertIs(type(plain["choices"][0]), dict)
        self.assertEqual(plain, sample())
        self.assertEqual(r.model_dump(), sample())
        self.assertEqual(copy.deepcopy(r), sample())
        self.assertIsInstance(copy.copy(r), AttrDict)
        again = pickle.loads(pickle.dumps(r))
        self.assertIsInstance(again, AttrDict)
        self.assertEqual(again.choices[1].message.content, "yo")
        self.assertEqual(repr(AttrDict({"a": 1})), "AttrDict({'a': 1})")

    def test_list_slices_and_iteration(self):
        r = to_attr(sample())
        items = r.choices[0:2]
        self.assertIs(type(items), list)
        self.assertEqual([c.index for c in items], [0, 1])
        self.assertIs(items[0], r.choices[0])
        self.assertEqual([c.message.role for c in r.choices], ["assistant", "assistant"])
        self.assertEqual([type(x) for x in r.nested], [AttrList, AttrList])
        self.assertEqual(r.choices[::-1][0].index, 1)
        with self.assertRaises(IndexError):
            r.choices[5]  # noqa: B018

    def test_to_attr_passes_other_values_through(self):
        for value in ("s", 1, None, 1.5, True):
            self.assertIs(to_attr(value), value)
        self.assertIsInstance(to_attr([{"a": 1}]), AttrList)
        self.assertEqual(to_attr([{"a": 1}])[0].a, 1)


if __name__ == "__main__":
    unittest.main()
