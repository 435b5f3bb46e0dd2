"""The chat page in a real browser: headless Debian chromium driven by selenium (from the
git-ignored .venv-browser: `make browser-test`), against openai2.gateway.Gateway in front of
openai2.testing.FakeServer, all on loopback.

Without chromium, chromium-driver or selenium these tests skip (and say what is missing), unless
OPENAI2_REQUIRE_BROWSER=1 (set by `make browser-test`), where a missing piece fails.

Screenshots of the page in light and dark mode are written to tests/browser/screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unittest

from openai2 import Chat
from openai2.gateway import Gateway
from openai2.history import ARCHIVE_FORMAT, ARCHIVE_VERSION
from openai2.testing import FakeServer, Reply

HERE = os.path.dirname(os.path.abspath(__file__))
SCREENSHOTS = os.path.join(HERE, "screenshots")
REQUIRE = os.environ.get("OPENAI2_REQUIRE_BROWSER") == "1"
WAIT = 20  # seconds: an upper bound for waits on events, never a pause

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - depends on the venv
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
)
MISSING = [
    name
    for name, found in (
        ("selenium (pip, in .venv-browser)", webdriver is not None),
        ("chromium (apt)", CHROMIUM),
        ("chromium-driver (apt)", CHROMEDRIVER),
    )
    if not found
]
if MISSING and REQUIRE:
    raise RuntimeError("OPENAI2_REQUIRE_BROWSER=1 but missing: " + ", ".join(MISSING))
SKIP_REASON = "browser tests need " + ", ".join(MISSING) + " (`make browser-test` installs them)"

ALIASES = {"fake-model-a": "upstream-a", "fake-model-b": "upstream-b"}
HOSTILE = (
    'Look: <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> '
    "and [click me](javascript:window.__pwned=3) and [docs](https://example.com/docs?a=1&b=2)"
)


def _make_gateway(upstream: FakeServer, **kw: object) -> Gateway:
    import io

    gw = Gateway(upstream.base_url, "sk-browsertestkey1234", aliases=ALIASES, log=io.StringIO(), **kw)  # type: ignore[arg-type]
    return gw.start()


def _chromium(lang: str = "en-US", downloads: str | None = None):  # type: ignore[no-untyped-def]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,760",
        "--lang=" + lang,
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    if downloads:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return driver


@unittest.skipIf(MISSING, SKIP_REASON)
class _PageCase(unittest.TestCase):
    lang = "en-US"
    token: str | None = None

    @classmethod
    def setUpClass(cls) -> None:
        cls.downloads = tempfile.mkdtemp(prefix="openai2-browser-")
        cls.driver = _chromium(cls.lang, cls.downloads)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.driver.quit()
        shutil.rmtree(cls.downloads, ignore_errors=True)

    def setUp(self) -> None:
        self.srv = FakeServer()
        self.srv.start()
        self.addCleanup(self.srv.stop)
        self.gw = _make_gateway(self.srv, token=self.token)
        self.addCleanup(self.gw.stop)  # runs first: its streams are cut before the fake server stops
        for name in os.listdir(self.downloads):
            os.remove(os.path.join(self.downloads, name))
        self.open_page(clear=True)

    # -- helpers ------------------------------------------------------------------------------
    def open_page(self, clear: bool = False) -> None:
        self.driver.get(self.gw.url + "/")
        if clear:  # a fresh browser profile for each test: the origin's port changes anyway
            self.driver.execute_script("localStorage.clear(); sessionStorage.clear();")
            self.driver.get(self.gw.url + "/")
        if not self.token:
            self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")

    def wait_for(self, condition, what: str, timeout: float = WAIT):  # type: ignore[no-untyped-def]
        try:
            return WebDriverWait(self.driver, timeout).until(condition)
        except TimeoutException:
            self.fail("timed out waiting for %s; status line: %r" % (what, self.status()))

    def js(self, script: str, *args: object):  # type: ignore[no-untyped-def]
        return self.driver.execute_script(script, *args)

    def status(self) -> str:
        try:
            return self.driver.find_element(By.ID, "status").text
        except Exception:  # noqa: BLE001 - only for a failure message
            return "?"

    def send(self, text: str) -> None:
        box = self.driver.find_element(By.ID, "input")
        box.clear()
        # send_keys cannot type characters outside the BMP reliably; the value is set for those
        self.js("arguments[0].value = arguments[1];", box, text)
        box.send_keys(Keys.ENTER)

    def messages(self) -> list[tuple[str, str]]:
        return [
            (el.get_attribute("class").split()[1], el.find_element(By.CSS_SELECTOR, ".body").text)
            for el in self.driver.find_elements(By.CSS_SELECTOR, "#messages .msg")
        ]

    def wait_idle(self) -> None:
        self.wait_for(lambda d: d.find_element(By.ID, "send").is_enabled(), "the answer to end")

    def answer(self, text: str, reply: Reply | None = None) -> str:
        """Send text, wait for the whole answer, return its text."""
        self.srv.replies.append(reply or Reply("ok"))
        count = len(self.messages())
        self.send(text)
        self.wait_for(lambda d: len(self.messages()) >= count + 2, "the answer to start")
        self.wait_idle()
        return self.messages()[-1][1]

    def export(self) -> str:
        self.driver.find_element(By.ID, "export").click()

        def done(_):  # type: ignore[no-untyped-def]
            names = [n for n in os.listdir(self.downloads) if n.endswith(".json")]
            return os.path.join(self.downloads, names[0]) if names else None

        return self.wait_for(done, "the exported file")


class TestChatPage(_PageCase):
    def test_page_is_served_with_its_security_headers(self) -> None:
        import http.client

        from openai2.chatpage import CHAT_PAGE_CSP

        conn = http.client.HTTPConnection(self.gw.host, self.gw.port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "text/html; charset=utf-8")
        self.assertEqual(resp.getheader("Content-Security-Policy"), CHAT_PAGE_CSP)
        self.assertEqual(resp.getheader("X-Content-Type-Options"), "nosniff")
        self.assertEqual(resp.getheader("Referrer-Policy"), "no-referrer")
        # and the browser ran the script under that policy: no CSP violation was reported
        errors = [e for e in self.driver.get_log("browser") if "Content Security Policy" in e.get("message", "")]
        self.assertEqual(errors, [])
        self.assertTrue(self.driver.find_element(By.ID, "send").text)

    def test_picked_model_is_sent_and_streamed_answer_shown_with_markdown(self) -> None:
        Select(self.driver.find_element(By.ID, "model")).select_by_visible_text("fake-model-b")
        text = self.answer("Hello there", Reply("Hi **you**, here is `code`", chunks=["Hi **y", "ou**, here ", "is `code`"]))
        self.assertEqual(text, "Hi you, here is code")
        body = self.driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant .body")[-1]
        self.assertEqual(body.find_element(By.TAG_NAME, "strong").text, "you")
        self.assertEqual(body.find_element(By.TAG_NAME, "code").text, "code")
        sent = self.srv.last_request.json
        self.assertEqual(sent["model"], ALIASES["fake-model-b"])  # the alias reached upstream as its model
        self.assertIs(sent["stream"], True)
        self.assertEqual(sent["messages"], [{"role": "user", "content": "Hello there"}])

    def test_stop_ends_a_stream_midway_and_keeps_what_arrived(self) -> None:
        self.srv.replies.append(Reply(chunks=["Once ", "upon ", "a time", " never shown"], stall_after=4))
        self.send("Tell me a story")
        # the first pieces are on the page while the stream is still open: it streams, not buffers
        self.wait_for(
            lambda d: "Once upon a time" in self.messages()[-1][1] if len(self.messages()) == 2 else False,
            "the first pieces",
        )
        stop = self.driver.find_element(By.ID, "stop")
        self.assertTrue(stop.is_displayed())
        self.assertFalse(self.driver.find_element(By.ID, "send").is_enabled())
        stop.click()
        self.wait_idle()
        self.assertFalse(stop.is_displayed())
        last = self.messages()[-1][1]
        self.assertIn("Once upon a time", last)
        self.assertNotIn("never shown", last)
        self.assertTrue(self.driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .note"))
        # the stopped answer was saved as it stood, marked as stopped
        self.open_page()
        self.assertIn("Once upon a time", self.messages()[-1][1])
        self.assertTrue(self.driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .note"))

    def test_conversations_survive_a_reload(self) -> None:
        self.answer("First conversation", Reply("answer one"))
        self.driver.find_element(By.ID, "new-chat").click()
        self.assertEqual(self.messages(), [])
        self.answer("Second conversation", Reply("answer two"))
        self.open_page()
        titles = [b.text for b in self.driver.find_elements(By.CSS_SELECTOR, "#conv-list .conv-open")]
        self.assertEqual(titles, ["Second conversation", "First conversation"])
        self.assertEqual(self.messages(), [("user", "Second conversation"), ("assistant", "answer two")])
        self.driver.find_elements(By.CSS_SELECTOR, "#conv-list .conv-open")[1].click()
        self.assertEqual(self.messages(), [("user", "First conversation"), ("assistant", "answer one")])
        # delete asks first; a deleted conversation stays deleted after a reload
        self.driver.find_elements(By.CSS_SELECTOR, "#conv-list .conv-del")[1].click()
        self.driver.switch_to.alert.accept()
        self.assertEqual(self.messages(), [("user", "Second conversation"), ("assistant", "answer two")])
        self.open_page()
        titles = [b.text for b in self.driver.find_elements(By.CSS_SELECTOR, "#conv-list .conv-open")]
        self.assertEqual(titles, ["Second conversation"])

    def test_two_tabs_keep_each_others_conversations(self) -> None:
        self.answer("From tab one", Reply("one"))
        first = self.driver.current_window_handle
        self.driver.switch_to.new_window("tab")
        second = self.driver.current_window_handle

        def close_second() -> None:
            self.driver.switch_to.window(second)
            self.driver.close()
            self.driver.switch_to.window(first)

        self.addCleanup(close_second)
        self.open_page()
        self.driver.find_element(By.ID, "new-chat").click()
        self.answer("From tab two", Reply("two"))
        self.driver.switch_to.window(first)  # this tab read the list before tab two's conversation
        self.wait_for(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#conv-list li")) == 2, "the other tab's conversation")
        self.answer("More from tab one", Reply("three"))  # its save keeps tab two's conversation
        self.open_page()
        titles = [b.text for b in self.driver.find_elements(By.CSS_SELECTOR, "#conv-list .conv-open")]
        self.assertEqual(titles, ["From tab one", "From tab two"])

    def test_export_is_a_chat_archive_that_chat_load_reads_and_import_brings_back(self) -> None:
        self.driver.find_element(By.CSS_SELECTOR, "#system-box summary").click()
        system = self.driver.find_element(By.ID, "system")
        system.send_keys("You are terse.")
        self.answer("Question?", Reply("Answer."))
        self.assertEqual(self.srv.last_request.json["messages"][0], {"role": "system", "content": "You are terse."})
        path = self.export()
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        self.assertEqual(data["format"], ARCHIVE_FORMAT)
        self.assertEqual(data["version"], ARCHIVE_VERSION)
        chat = Chat("sk-unused-key-for-load")
        chat.load(path)
        self.assertEqual(
            chat.fetch_messages(),
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Question?"},
                {"role": "assistant", "content": "Answer."},
            ],
        )
        self.assertEqual(chat.pinned_indexes(), [0])  # the system prompt is pinned, as Chat's own is
        # and the page imports what Chat.dump writes
        chat.add_dialogs({"role": "user", "content": "Added by Python"})
        dumped = os.path.join(self.downloads, "from-python.archive")
        chat.dump(dumped)
        self.driver.find_element(By.ID, "import-file").send_keys(dumped)
        self.wait_for(lambda d: len(self.messages()) == 3 and self.messages()[-1][1] == "Added by Python", "the import")
        self.assertEqual(self.driver.find_element(By.ID, "system").get_attribute("value"), "You are terse.")
        self.assertEqual(len(self.driver.find_elements(By.CSS_SELECTOR, "#conv-list li")), 2)

    def test_html_in_an_answer_or_a_message_is_text_and_nothing_runs(self) -> None:
        text = self.answer(HOSTILE, Reply(HOSTILE, chunks=[HOSTILE[i : i + 7] for i in range(0, len(HOSTILE), 7)]))
        self.assertIn('<img src=x onerror="window.__pwned=1">', text)
        self.assertIn("<script>window.__pwned=2</script>", text)
        self.assertIn("[click me](javascript:window.__pwned=3)", text)  # not a link: left as written
        self.assertIsNone(self.js("return window.__pwned"))
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "#messages img, #messages script"), [])
        self.assertEqual(len(self.driver.find_elements(By.TAG_NAME, "script")), 1)  # the page's own
        links = self.driver.find_elements(By.CSS_SELECTOR, "#messages a")
        self.assertEqual([a.get_attribute("href") for a in links], ["https://example.com/docs?a=1&b=2"])
        self.assertEqual(links[0].get_attribute("rel"), "noopener noreferrer")
        self.assertEqual(self.messages()[0], ("user", HOSTILE))  # the user's own text: verbatim, as text

    def test_chinese_text_round_trips(self) -> None:
        question = "你好，请用中文回答 🙂"
        reply = "你好！这是中文回答：**粗体**和`代码`。"
        # one byte per write: every Chinese character arrives split across network reads
        got = self.answer(question, Reply(reply, chunks=[reply[:5], reply[5:]], write_size=1, write_pause=0))
        self.assertEqual(got, "你好！这是中文回答：粗体和代码。")
        self.assertEqual(self.srv.last_request.json["messages"], [{"role": "user", "content": question}])
        self.assertEqual(self.messages()[0], ("user", question))
        chat = Chat("sk-unused-key-for-load")
        chat.load(self.export())
        self.assertEqual([m["content"] for m in chat.fetch_messages()], [question, reply])

    def test_enter_while_an_input_method_composes_does_not_send(self) -> None:
        box = self.driver.find_element(By.ID, "input")
        box.send_keys("ni hao")
        self.js(
            "arguments[0].dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', isComposing: true, bubbles: true}));",
            box,
        )
        self.assertEqual(box.get_attribute("value"), "ni hao")
        self.assertEqual(self.messages(), [])
        box.send_keys(Keys.SHIFT, Keys.ENTER)  # Shift+Enter: a new line, not a send
        self.assertEqual(self.messages(), [])
        self.srv.replies.append(Reply("收到"))
        box.send_keys(Keys.ENTER)
        self.wait_idle()
        self.assertEqual(self.messages(), [("user", "ni hao"), ("assistant", "收到")])
        self.assertEqual(self.srv.last_request.json["messages"], [{"role": "user", "content": "ni hao\n"}])

    def test_retry_resends_the_last_message_and_replaces_the_answer(self) -> None:
        self.answer("Pick a number", Reply("four"))
        self.srv.replies.append(Reply("seven"))
        self.driver.find_element(By.ID, "retry").click()
        self.wait_for(lambda d: self.messages()[-1][1] == "seven", "the second answer")
        self.wait_idle()
        self.assertEqual(self.messages(), [("user", "Pick a number"), ("assistant", "seven")])
        self.assertEqual(self.srv.last_request.json["messages"], [{"role": "user", "content": "Pick a number"}])

    def test_errors_are_shown_http_and_mid_stream(self) -> None:
        text = self.answer("hi", Reply("The model `nope` does not exist", status=404, error_type="invalid_request_error"))
        self.assertIn("The model `nope` does not exist", text)
        self.assertIn("404", text)
        text = self.answer("again", Reply(chunks=["partial ", "answer", " lost"], disconnect_after=3))
        self.assertIn("partial answer", text)  # what arrived stays
        self.assertTrue(self.driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .error"))
        self.assertIn("Upstream stream failed", text)  # the gateway's data: {"error": ...} event

    def test_reasoning_is_shown_collapsed(self) -> None:
        self.answer("Think", Reply("42", reasoning="Let me think step by step."))
        details = self.driver.find_element(By.CSS_SELECTOR, ".msg.assistant details.reasoning")
        self.assertIsNone(details.get_attribute("open"))
        self.assertEqual(self.messages()[-1][1], "42")
        details.find_element(By.TAG_NAME, "summary").click()
        self.assertEqual(details.find_element(By.CSS_SELECTOR, ".reasoning-text").text, "Let me think step by step.")

    def test_copy_puts_the_message_on_the_clipboard(self) -> None:
        self.answer("Copy me", Reply("Copied **text**"))
        self.driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": self.gw.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        button = self.driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .copy")[-1]
        button.click()
        self.wait_for(lambda d: button.text != "Copy", "the copy to finish")
        self.assertEqual(button.text, "Copied")
        pasted = self.driver.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('error: ' + e));"
        )
        self.assertEqual(pasted, "Copied **text**")  # the message as written, Markdown included

    def test_screenshots_light_and_dark(self) -> None:
        self.answer("What is openai2?", Reply("A dependency-free client for OpenAI-compatible chat APIs."))
        self.driver.find_element(By.ID, "new-chat").click()
        self.answer(
            "How do I stream a reply with openai2?",
            Reply(
                "Use `Chat.stream_request`:\n\n```python\nfrom openai2 import Chat\n\nchat = Chat()\n"
                "for piece in chat.stream_request(\"Hello\"):\n    print(piece, end=\"\")\n```\n\n"
                "- the pieces arrive **as they are written**\n- the history keeps the *whole* answer\n\n"
                "See the [README](https://example.com/openai2) for more.",
                reasoning="The user wants streaming.",
            ),
        )
        os.makedirs(SCREENSHOTS, exist_ok=True)
        # a fixed viewport, whatever the window's decorations take
        metrics = {"width": 1100, "height": 700, "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        self.addCleanup(self.driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
        self.addCleanup(self.driver.execute_cdp_cmd, "Emulation.setEmulatedMedia", {"features": []})
        self.js("document.activeElement.blur(); const m = document.getElementById('messages'); m.scrollTop = 0;")
        for scheme in ("light", "dark"):
            self.driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
            )
            self.assertEqual(self.js("return matchMedia('(prefers-color-scheme: dark)').matches"), scheme == "dark")
            background = self.js("return getComputedStyle(document.body).backgroundColor")
            self.assertEqual(background, "rgb(255, 255, 255)" if scheme == "light" else "rgb(13, 17, 23)")
            path = os.path.join(SCREENSHOTS, "chat-page-%s.png" % scheme)
            self.assertTrue(self.driver.save_screenshot(path))
            self.assertLess(os.path.getsize(path), 150 * 1024)


class TestChatPageChinese(_PageCase):
    lang = "zh-CN"

    def test_ui_is_in_chinese_when_the_browser_prefers_it(self) -> None:
        self.assertEqual(self.driver.find_element(By.ID, "send").text, "发送")
        self.assertEqual(self.js("return document.documentElement.lang"), "zh-CN")
        self.assertEqual(self.driver.find_element(By.ID, "input").get_attribute("placeholder"), "输入消息（Enter 发送，Shift+Enter 换行）")


class TestChatPageToken(_PageCase):
    token = "gateway-token-for-the-page"

    def test_page_asks_for_the_token_once_and_sends_it(self) -> None:
        box = self.driver.find_element(By.ID, "token-box")
        self.wait_for(lambda d: box.is_displayed(), "the token dialog")
        field = self.driver.find_element(By.ID, "token-input")
        field.send_keys("wrong-token", Keys.ENTER)
        self.wait_for(lambda d: box.is_displayed() and d.find_element(By.ID, "token-error").text, "the refusal")
        field.send_keys(self.token, Keys.ENTER)
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
        self.assertFalse(box.is_displayed())
        # the focus is back in the message box, and the Enter that confirmed the token is not in it
        self.assertEqual(self.js("return document.activeElement.id"), "input")
        self.assertEqual(self.driver.find_element(By.ID, "input").get_attribute("value"), "")
        self.assertEqual(self.answer("hi", Reply("with token")), "with token")
        self.assertEqual(self.js("return sessionStorage.getItem('openai2.token')"), self.token)
        # a reload in the same tab does not ask again
        self.driver.get(self.gw.url + "/")
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
        self.assertFalse(self.driver.find_element(By.ID, "token-box").is_displayed())
        # the gateway token stays between the page and the gateway: upstream got the gateway's key
        self.assertEqual(self.srv.last_request.headers.get("authorization"), "Bearer sk-browsertestkey1234")


if __name__ == "__main__":
    unittest.main()
