"""store: tokens.json, what was learned of each server's token counts (window, calibration),
kept across one-shot runs: merging under the lock, the server key, expiry, the cap, corrupt and
newer files, no rewrite when nothing changes."""
import json
import os
import stat
import subprocess
import sys
import threading
import unittest

from openai2.files import FileLock
from openai2.store import TOKENS_MAX_AGE, TOKENS_MAX_MODELS, Store, StoreError
from openai2.tokens import Calibration
from tests.support.homes import DEEP, TempDirCase

POSIX = os.name == "posix"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL = "https://api.deepseek.com/v1"
DAY = 86400
UNKNOWN = {"window": None, "calibration": None}


class TokenStoreCase(TempDirCase):
    tmp_prefix = "o2tokens-"

    def setUp(self):
        super().setUp()
        self.home = os.path.join(self.tmp, "cfg", "openai2")
        self.now = [1765000000.0]
        self.store = Store(self.home, clock=lambda: self.now[0])

    def read(self):
        with open(self.store.tokens_path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))

    def write(self, data):
        os.makedirs(self.home, exist_ok=True)
        raw = data if isinstance(data, bytes) else json.dumps(data).encode("utf-8")
        with open(self.store.tokens_path, "wb") as handle:
            handle.write(raw)

    def identity(self):
        st = os.stat(self.store.tokens_path)
        return st.st_ino, st.st_mtime_ns, st.st_size

    def models(self):
        found = {}
        for server in self.read()["servers"].values():
            found.update(server["models"])
        return found

    def server_key(self, url=URL):
        self.store.save_token_state(url, "probe-model", window=100)
        for key, server in self.read()["servers"].items():
            if "probe-model" in server["models"]:
                return key
        self.fail("the probe entry was not written")


class RoundTripTest(TokenStoreCase):
    def test_nothing_known_and_nothing_created_before_a_save(self):
        self.assertEqual(self.store.load_token_state(URL, "deepseek-chat"), UNKNOWN)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "cfg")))

    def test_a_save_creates_the_private_home_and_a_0600_file(self):
        self.store.save_token_state(URL, "deepseek-chat", window=8192, calibration={"ratio": 1.07, "samples": 3})
        state = self.store.load_token_state(URL, "deepseek-chat")
        self.assertEqual(state, {"window": 8192, "calibration": {"ratio": 1.07, "samples": 3}})
        self.assertEqual(self.store.tokens_path, os.path.join(self.home, "tokens.json"))
        data = self.read()
        self.assertEqual((data["format"], data["version"]), ("openai2.tokens", 1))
        (server,) = data["servers"].values()
        self.assertEqual(server["host"], "api.deepseek.com")
        self.assertEqual(
            server["models"], {"deepseek-chat": {"window": 8192, "ratio": 1.07, "samples": 3, "updated": 1765000000}}
        )
        if POSIX:
            self.assertEqual(stat.S_IMODE(os.stat(self.home).st_mode), 0o700)
            self.assertEqual(stat.S_IMODE(os.stat(self.store.tokens_path).st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.home, "tokens.lock")).st_mode), 0o600)

    def test_no_temporary_file_is_left_behind(self):
        for n in range(3):
            self.store.save_token_state(URL, "m%d" % n, window=1000 + n)
        self.assertEqual(sorted(os.listdir(self.home)), ["tokens.json", "tokens.lock"])

    def test_a_calibration_to_dict_comes_back_for_from_dict(self):
        calibration = Calibration()
        calibration.observe(1000, 1234)
        calibration.observe(1000, 1300)
        self.store.save_token_state(URL, "m", calibration=calibration.to_dict())
        back = Calibration.from_dict(self.store.load_token_state(URL, "m")["calibration"])
        self.assertEqual(back.samples, 2)
        self.assertAlmostEqual(back.ratio, calibration.ratio, places=4)

    def test_window_is_only_learned_downwards_and_none_keeps_it(self):
        self.store.save_token_state(URL, "m", window=8192)
        self.store.save_token_state(URL, "m", window=16384)
        self.assertEqual(self.store.load_token_state(URL, "m")["window"], 8192)
        self.store.save_token_state(URL, "m", window=4000)
        self.assertEqual(self.store.load_token_state(URL, "m")["window"], 4000)
        self.store.save_token_state(URL, "m", calibration={"ratio": 1.5, "samples": 1})
        self.assertEqual(self.store.load_token_state(URL, "m"), {"window": 4000, "calibration": {"ratio": 1.5, "samples": 1}})

    def test_a_given_calibration_replaces_the_stored_one_and_none_keeps_it(self):
        self.store.save_token_state(URL, "m", calibration={"ratio": 1.5, "samples": 1})
        self.store.save_token_state(URL, "m", calibration={"ratio": 0.9, "samples": 7})
        self.store.save_token_state(URL, "m", window=2048)
        self.assertEqual(self.store.load_token_state(URL, "m"), {"window": 2048, "calibration": {"ratio": 0.9, "samples": 7}})

    def test_models_and_servers_are_kept_apart(self):
        self.store.save_token_state(URL, "a", window=1000)
        self.store.save_token_state(URL, "b", window=2000)
        self.store.save_token_state("http://localhost:11434/v1", "a", window=3000)
        self.assertEqual(self.store.load_token_state(URL, "a")["window"], 1000)
        self.assertEqual(self.store.load_token_state(URL, "b")["window"], 2000)
        self.assertEqual(self.store.load_token_state("http://localhost:11434/v1", "a")["window"], 3000)
        self.assertEqual(self.store.load_token_state("http://localhost:11434/v1", "b"), UNKNOWN)

    def test_an_updated_time_is_recorded_per_entry(self):
        self.store.save_token_state(URL, "a", window=1000)
        self.now[0] += 60
        self.store.save_token_state(URL, "b", window=1000)
        models = self.models()
        self.assertEqual(models["a"]["updated"], 1765000000)
        self.assertEqual(models["b"]["updated"], 1765000060)


class ServerKeyTest(TokenStoreCase):
    def test_no_user_password_query_or_path_of_the_base_url_is_written(self):
        url = "https://user:s3cret@proxy.example/v1/sk-pathsecret?key=sk-abc123#frag-secret"
        self.store.save_token_state(url, "m", window=8192)
        with open(self.store.tokens_path, "rb") as handle:
            raw = handle.read()
        for text in (b"user", b"s3cret", b"sk-abc123", b"key=", b"pathsecret", b"frag", b"https", b"/v1"):
            self.assertNotIn(text, raw)
        (server,) = self.read()["servers"].values()
        self.assertEqual(server["host"], "proxy.example")
        self.assertEqual(self.store.load_token_state(url, "m")["window"], 8192)

    def test_the_same_server_spelled_differently_is_one_entry(self):
        self.store.save_token_state("https://api.deepseek.com/v1", "m", window=8192)
        for spelling in (
            "https://api.deepseek.com/v1/",
            "HTTPS://API.DeepSeek.com/v1",
            "https://api.deepseek.com:443/v1",
            "https://someone:pw@api.deepseek.com/v1?x=1#y",
            " https://api.deepseek.com/v1 ",
        ):
            with self.subTest(spelling=spelling):
                self.assertEqual(self.store.load_token_state(spelling, "m")["window"], 8192)
        self.store.save_token_state("https://API.deepseek.com:443/v1/", "m", window=4096)
        self.assertEqual(len(self.read()["servers"]), 1)
        self.assertEqual(self.store.load_token_state(URL, "m")["window"], 4096)

    def test_a_different_port_path_or_scheme_is_another_server(self):
        self.store.save_token_state(URL, "m", window=8192)
        for other in (
            "https://api.deepseek.com:8443/v1",
            "https://api.deepseek.com/beta",
            "http://api.deepseek.com/v1",
            "https://api.deepseek.com",
        ):
            with self.subTest(other=other):
                self.assertEqual(self.store.load_token_state(other, "m"), UNKNOWN)

    def test_default_http_port_and_ipv6_hosts(self):
        self.store.save_token_state("http://[::1]:80/v1", "m", window=512)
        self.assertEqual(self.store.load_token_state("http://[::1]/v1/", "m")["window"], 512)
        self.assertEqual(self.store.load_token_state("http://[::1]:8080/v1", "m"), UNKNOWN)
        (server,) = self.read()["servers"].values()
        self.assertEqual(server["host"], "::1")

    def test_the_key_is_16_hex_digits_of_sha256_of_the_normalised_url(self):
        import hashlib

        key = self.server_key("https://u:p@API.Example.com:443/v1/?k=1")
        self.assertEqual(key, hashlib.sha256(b"https://api.example.com/v1").hexdigest()[:16])


class ModelNameTest(TokenStoreCase):
    def test_a_name_over_200_characters_is_not_stored_and_not_an_error(self):
        self.store.save_token_state(URL, "x" * 201, window=8192)
        self.assertFalse(os.path.exists(self.home))
        self.assertEqual(self.store.load_token_state(URL, "x" * 201), UNKNOWN)
        self.store.save_token_state(URL, "x" * 200, window=8192)
        self.assertEqual(self.store.load_token_state(URL, "x" * 200)["window"], 8192)

    def test_arbitrary_names_round_trip(self):
        names = ["deepseek/deepseek-chat:free", "模型 7b", "a\"b\\c\n", "ok"]
        for n, name in enumerate(names):
            self.store.save_token_state(URL, name, window=1000 + n)
        for n, name in enumerate(names):
            self.assertEqual(self.store.load_token_state(URL, name)["window"], 1000 + n)

    def test_a_name_with_a_lone_surrogate_is_not_stored(self):
        self.store.save_token_state(URL, "bad\ud800", window=8192)
        self.assertFalse(os.path.exists(self.home))
        self.store.save_token_state(URL, "ok", window=8192)
        self.assertEqual(list(self.models()), ["ok"])


class ValuesTest(TokenStoreCase):
    def test_values_the_file_could_not_hold_are_not_saved(self):
        for window in (0, -5, True, 100_000_001, 8192.0, "8192"):
            self.store.save_token_state(URL, "m", window=window)
        for calibration in (
            {"ratio": 9.0, "samples": 1},
            {"ratio": float("nan"), "samples": 1},
            {"ratio": 1.0, "samples": -1},
            {"ratio": True, "samples": 1},
            {"ratio": 1.0},
            "1.0",
        ):
            self.store.save_token_state(URL, "m", calibration=calibration)
        self.assertFalse(os.path.exists(self.home))

    def test_bad_entries_are_unknown_and_the_good_ones_still_load(self):
        def entry(**fields):
            return dict({"updated": 1765000000}, **fields)

        good = {"window": 8192, "ratio": 1.2, "samples": 2}
        bad = {
            "window-bool": entry(window=True),
            "window-zero": entry(window=0),
            "window-huge": entry(window=100_000_001),
            "window-text": entry(window="8192"),
            "window-float": entry(window=8192.5),
            "ratio-high": entry(ratio=9.5, samples=1),
            "ratio-bool": entry(ratio=True, samples=1),
            "samples-negative": entry(ratio=1.1, samples=-1),
            "samples-bool": entry(ratio=1.1, samples=True),
            "no-updated": dict(good),
            "updated-text": dict(good, updated="yesterday"),
            "not-an-object": [1, 2],
        }
        key = self.server_key()
        data = self.read()
        data["servers"][key]["models"].update(bad)
        data["servers"][key]["models"]["good"] = entry(**good)
        raw = json.dumps(data)
        raw = raw.replace('"samples": 2', '"samples": 2}, "ratio-nan": {"ratio": NaN, "samples": 1, "updated": 1765000000')
        raw = raw.replace('"probe-model": {', '"ratio-inf": {"ratio": Infinity, "samples": 1, "updated": 1765000000}, "probe-model": {')
        self.write(raw.encode("utf-8"))
        for name in list(bad) + ["ratio-nan", "ratio-inf"]:
            with self.subTest(name=name):
                self.assertEqual(self.store.load_token_state(URL, name), UNKNOWN)
        self.assertEqual(self.store.load_token_state(URL, "good"), {"window": 8192, "calibration": {"ratio": 1.2, "samples": 2}})
        self.assertEqual([f for f in os.listdir(self.home) if ".corrupt-" in f], [])

    def test_a_bad_ratio_leaves_the_window_of_the_same_entry_known(self):
        key = self.server_key()
        data = self.read()
        data["servers"][key]["models"]["m"] = {"window": 4096, "ratio": 50.0, "samples": 1, "updated": 1765000000}
        self.write(data)
        self.assertEqual(self.store.load_token_state(URL, "m"), {"window": 4096, "calibration": None})

    def test_a_rewrite_drops_the_bad_entries(self):
        key = self.server_key()
        data = self.read()
        data["servers"][key]["models"]["bad"] = {"window": True, "updated": 1765000000}
        data["servers"]["not-a-key"] = {"host": "x", "models": {"m": {"window": 5, "updated": 1765000000}}}
        self.write(data)
        self.store.save_token_state(URL, "new", window=1000)
        self.assertEqual(sorted(self.models()), ["new", "probe-model"])
        self.assertEqual(list(self.read()["servers"]), [key])

    def test_the_ratio_range_is_calibrations(self):
        from openai2.store import _STORE_TOK_RATIO_RANGE
        from openai2.tokens import _TOK_RATIO_RANGE

        self.assertEqual(_STORE_TOK_RATIO_RANGE, _TOK_RATIO_RANGE)
        low, high = _TOK_RATIO_RANGE
        for ratio in (low, high):
            Calibration(ratio)  # the ends are valid calibrations: they must be stored
            self.store.save_token_state(URL, "m%s" % ratio, calibration={"ratio": ratio, "samples": 1})
            self.assertEqual(self.store.load_token_state(URL, "m%s" % ratio)["calibration"]["ratio"], ratio)


class ExpiryAndCapTest(TokenStoreCase):
    def test_entries_older_than_30_days_are_forgotten_and_dropped_on_rewrite(self):
        self.assertEqual(TOKENS_MAX_AGE, 30 * DAY)
        self.store.save_token_state(URL, "old", window=8192)
        self.now[0] += 29 * DAY
        self.store.save_token_state(URL, "young", window=4096)
        self.assertEqual(self.store.load_token_state(URL, "old")["window"], 8192)
        self.now[0] += 2 * DAY  # "old" is 31 days old now, "young" 2
        self.assertEqual(self.store.load_token_state(URL, "old"), UNKNOWN)
        self.assertEqual(self.store.load_token_state(URL, "young")["window"], 4096)
        self.assertIn("old", self.models())  # a load never writes
        self.store.save_token_state(URL, "other", window=1024)
        self.assertEqual(sorted(self.models()), ["other", "young"])

    def test_an_expired_entry_is_learned_afresh(self):
        self.store.save_token_state(URL, "m", window=4096, calibration={"ratio": 1.3, "samples": 5})
        self.now[0] += 31 * DAY
        self.store.save_token_state(URL, "m", window=32768)  # the server grew its window
        self.assertEqual(self.store.load_token_state(URL, "m"), {"window": 32768, "calibration": None})

    def test_an_updated_time_far_in_the_future_is_not_trusted(self):
        key = self.server_key()
        data = self.read()
        data["servers"][key]["models"]["m"] = {"window": 64, "updated": 1765000000 + 400 * DAY}
        self.write(data)
        self.assertEqual(self.store.load_token_state(URL, "m"), UNKNOWN)

    def test_at_most_256_models_the_least_recently_updated_dropped_first(self):
        self.assertEqual(TOKENS_MAX_MODELS, 256)
        models = {"m%03d" % n: {"window": 1000 + n, "updated": 1765000000 - DAY + n} for n in range(300)}
        half = dict(list(models.items())[:150])
        rest = dict(list(models.items())[150:])
        self.write(
            {
                "format": "openai2.tokens",
                "version": 1,
                "servers": {
                    "0123456789abcdef": {"host": "a.example", "models": half},
                    "fedcba9876543210": {"host": "b.example", "models": rest},
                },
            }
        )
        self.store.save_token_state(URL, "new", window=5)
        kept = self.models()
        self.assertEqual(len(kept), 256)
        self.assertIn("new", kept)
        self.assertEqual(sorted(kept), sorted(["new"] + ["m%03d" % n for n in range(45, 300)]))
        self.assertEqual(kept["m045"]["window"], 1045)


class NoRewriteTest(TokenStoreCase):
    def setUp(self):
        super().setUp()
        self.store.save_token_state(URL, "m", window=8192, calibration={"ratio": 1.07123, "samples": 3})
        self.before = self.identity()
        self.now[0] += 60

    def test_the_same_values_do_not_rewrite_the_file(self):
        self.store.save_token_state(URL, "m", window=8192, calibration={"ratio": 1.07123, "samples": 3})
        self.assertEqual(self.identity(), self.before)

    def test_a_larger_window_or_a_ratio_equal_to_4_decimals_does_not_rewrite(self):
        self.store.save_token_state(URL, "m", window=9000)
        self.store.save_token_state(URL, "m", calibration={"ratio": 1.071234, "samples": 3})
        self.store.save_token_state("https://API.deepseek.com/v1/", "m", window=8192)
        self.assertEqual(self.identity(), self.before)

    def test_a_change_does_rewrite(self):  # the other two tests' control: identity() does see a rewrite
        self.store.save_token_state(URL, "m", calibration={"ratio": 1.07123, "samples": 4})
        self.assertNotEqual(self.identity(), self.before)
        self.assertEqual(self.models()["m"]["updated"], 1765000060)

    def test_nothing_given_touches_nothing(self):
        self.store.save_token_state(URL, "m")
        self.store.save_token_state(URL, "other")
        self.assertEqual(self.identity(), self.before)
        self.assertEqual(list(self.models()), ["m"])


class BadFileTest(TokenStoreCase):
    CORRUPT = {
        "not JSON": b"{not json",
        "not UTF-8": b'{"servers": "\xff\xfe"}',
        "a list": b"[]",
        "servers not an object": b'{"format": "openai2.tokens", "version": 1, "servers": []}',
        "another format": b'{"format": "openai2.roles", "version": 1, "roles": {}}',
        "nested too deep": DEEP.encode("ascii"),
    }

    def asides(self):
        return sorted(f for f in os.listdir(self.home) if f.startswith("tokens.json.corrupt-"))

    def test_a_corrupt_file_is_moved_aside_and_load_raises(self):
        for why, raw in self.CORRUPT.items():
            with self.subTest(why=why):
                self.write(raw)
                with self.assertRaises(StoreError) as caught:
                    self.store.load_token_state(URL, "m")
                self.assertIn(self.store.tokens_path, str(caught.exception))
                self.assertIn("corrupt", str(caught.exception))
                self.assertFalse(os.path.exists(self.store.tokens_path))
                aside = os.path.join(self.home, self.asides()[-1])
                with open(aside, "rb") as handle:
                    self.assertEqual(handle.read(), raw)
                self.assertEqual(self.store.load_token_state(URL, "m"), UNKNOWN)  # a fresh start
                self.now[0] += 1
        self.assertEqual(len(self.asides()), len(self.CORRUPT))

    def test_a_save_over_a_corrupt_file_moves_it_aside_and_starts_afresh(self):
        for why, raw in self.CORRUPT.items():
            with self.subTest(why=why):
                self.write(raw)
                self.store.save_token_state(URL, "m", window=2048)
                self.assertEqual(self.store.load_token_state(URL, "m")["window"], 2048)
                with open(os.path.join(self.home, self.asides()[-1]), "rb") as handle:
                    self.assertEqual(handle.read(), raw)
                self.now[0] += 1

    def test_a_newer_file_is_left_untouched(self):
        raw = json.dumps(
            {"format": "openai2.tokens", "version": 2, "servers": {}, "everything": "different"}
        ).encode("utf-8")
        self.write(raw)
        before = self.identity()
        self.assertEqual(self.store.load_token_state(URL, "m"), UNKNOWN)
        self.store.save_token_state(URL, "m", window=2048)
        self.assertEqual(self.identity(), before)
        with open(self.store.tokens_path, "rb") as handle:
            self.assertEqual(handle.read(), raw)
        self.assertEqual(self.asides(), [])

    def test_a_newer_file_with_an_old_looking_entry_is_not_read(self):
        self.server_key()  # the entry exists
        data = self.read()
        data["version"] = 2
        self.write(data)
        self.assertEqual(self.store.load_token_state(URL, "probe-model"), UNKNOWN)

    @unittest.skipUnless(POSIX, "a folder where the file should be")
    def test_os_errors_are_store_errors_naming_the_path(self):
        os.makedirs(self.store.tokens_path)
        with self.assertRaises(StoreError) as caught:
            self.store.save_token_state(URL, "m", window=2048)
        self.assertIn(self.store.tokens_path, str(caught.exception))
        with self.assertRaises(StoreError):
            self.store.load_token_state(URL, "m")
        self.assertTrue(os.path.isdir(self.store.tokens_path))  # never moved aside as "corrupt"

    def test_a_home_that_cannot_be_created_is_a_store_error(self):
        with open(os.path.join(self.tmp, "cfg"), "w") as handle:
            handle.write("a file where the folder should be")
        with self.assertRaises(StoreError) as caught:
            self.store.save_token_state(URL, "m", window=2048)
        self.assertIn(self.home, str(caught.exception))
        self.assertEqual(self.store.load_token_state(URL, "m"), UNKNOWN)


class ConcurrencyTest(TokenStoreCase):
    def test_a_busy_lock_is_a_store_error(self):
        os.makedirs(self.home)
        lock = FileLock(os.path.join(self.home, "tokens.lock"))
        self.assertTrue(lock.acquire())
        self.addCleanup(lock.release)
        store = Store(self.home, lock_wait=0)
        with self.assertRaises(StoreError) as caught:
            store.save_token_state(URL, "m", window=2048)
        self.assertIn("busy", str(caught.exception))
        self.assertFalse(os.path.exists(self.store.tokens_path))

    def test_a_save_merges_what_another_store_wrote_meanwhile(self):
        other = Store(self.home, clock=lambda: self.now[0])
        self.store.save_token_state(URL, "a", window=1000)
        other.save_token_state(URL, "b", window=2000)
        self.store.save_token_state(URL, "c", window=3000)
        other.save_token_state(URL, "a", calibration={"ratio": 1.1, "samples": 1})
        self.assertEqual(self.store.load_token_state(URL, "a"), {"window": 1000, "calibration": {"ratio": 1.1, "samples": 1}})
        self.assertEqual(sorted(self.models()), ["a", "b", "c"])

    def test_two_stores_saving_at_once_lose_nothing(self):
        stores = [Store(self.home), Store(self.home)]
        start = threading.Barrier(2)
        errors = []

        def run(n):
            try:
                start.wait(10)
                for i in range(25):
                    stores[n].save_token_state(URL, "t%d-%d" % (n, i), window=1000 + i)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        expected = sorted("t%d-%d" % (n, i) for n in range(2) for i in range(25))
        self.assertEqual(sorted(self.models()), expected)

    def test_another_process_saving_at_once_loses_nothing(self):
        child = (
            "import sys\n"
            "try:\n"
            "    from openai2.store import Store\n"
            "except ImportError:  # the single-file build\n"
            "    from openai2 import Store\n"
            "store = Store(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "for i in range(25):\n"
            "    store.save_token_state(%r, 'child-%%d' %% i, window=2000 + i)\n"
            "print('done', flush=True)\n" % URL
        )
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        store = Store(self.home)
        store.save_token_state(URL, "parent-first", window=1)  # the folder exists for both
        proc = subprocess.Popen(
            [sys.executable, "-c", child, self.home],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            line = proc.stdout.readline().strip()
            if line != b"ready":  # it failed to start: its stderr says why (it has ended)
                self.fail(proc.communicate(timeout=60)[1].decode("utf-8", "replace"))
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            for i in range(25):
                store.save_token_state(URL, "parent-%d" % i, window=1000 + i)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, err.decode("utf-8", "replace"))
        self.assertEqual(out.strip(), b"done")
        expected = ["parent-first"] + ["parent-%d" % i for i in range(25)] + ["child-%d" % i for i in range(25)]
        self.assertEqual(sorted(self.models()), sorted(expected))
        self.assertEqual(store.load_token_state(URL, "child-7")["window"], 2007)


if __name__ == "__main__":
    unittest.main()
