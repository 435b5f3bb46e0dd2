"""The chat page against hostile input, in headless chromium (`make browser-test`): model names,
answers, error messages and imported archives written to break out of text, an answer built to
make the Markdown renderer quadratic, and a browser storage that is full.  Nothing may run, the
tab may not freeze, and the answer on screen may not be lost."""

from __future__ import annotations

import io
import json
import os
import unittest

from openai2.gateway import Gateway
from openai2.testing import Reply
from tests.browser.test_page import MISSING, SKIP_REASON, WAIT, By, _PageCase

PWN = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
NAMES = {
    '<img src=x onerror="window.__pwned=3">': "upstream-a",
    '" onmouseover="window.__pwned=4" x="': "upstream-b",
}


@unittest.skipIf(MISSING, SKIP_REASON)
class TestHostilePage(_PageCase):
    def assertNothingRan(self) -> None:
        self.assertIsNone(self.js("return window.__pwned"))
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "#app img, #app script, #messages iframe"), [])
        self.assertEqual(len(self.driver.find_elements(By.TAG_NAME, "script")), 1)

    def test_a_huge_answer_of_brackets_renders(self) -> None:
        # "[" after "[": the link pattern scanned to the line's end from each one (quadratic).
        # Chromium's V8 falls back to a linear engine on excessive backtracking, so this passes
        # there either way; tests/test_hostile_gateway.py checks the pattern itself with node.
        hostile = "[" * 150000 + " end"
        text = self.answer("q", Reply(hostile, chunks=[hostile[:70000], hostile[70000:]]))
        self.assertEqual(text, hostile)

    def test_a_full_storage_keeps_the_answer_on_screen_and_says_so(self) -> None:
        self.js(
            "Storage.prototype.setItem = function () {"
            " throw new DOMException('full', 'QuotaExceededError'); };"
        )
        text = self.answer("Will this be kept?", Reply("Yes, on screen.", chunks=["Yes, ", "on screen."]))
        self.assertEqual(text, "Yes, on screen.")
        self.assertEqual(self.messages(), [("user", "Will this be kept?"), ("assistant", "Yes, on screen.")])
        status = self.driver.find_element(By.ID, "status")
        self.assertIn("error", status.get_attribute("class"))
        self.assertIn("storage", status.text.lower())
        # and the next question still works, with the whole conversation sent
        self.answer("And this?", Reply("Also."))
        self.assertEqual(len(self.srv.last_request.json["messages"]), 3)

    def test_hostile_model_names_are_text(self) -> None:
        gw = Gateway(self.srv.base_url, "sk-browsertestkey1234", aliases=NAMES, log=io.StringIO()).start()
        self.addCleanup(gw.stop)
        self.driver.get(gw.url + "/")
        self.wait_for(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2, "the model list")
        shown = sorted(o.text for o in self.driver.find_elements(By.CSS_SELECTOR, "#model option"))
        self.assertEqual(shown, sorted(NAMES))
        for option in self.driver.find_elements(By.CSS_SELECTOR, "#model option"):
            self.assertIsNone(option.get_attribute("onmouseover"))
        self.srv.replies.append(Reply("fine"))
        self.send("hi")
        self.wait_idle()
        self.assertIn(self.srv.last_request.json["model"], ("upstream-a", "upstream-b"))
        self.assertNothingRan()

    def test_an_error_message_with_html_is_text(self) -> None:
        self.srv.replies.append(Reply(status=400, body={"error": {"message": PWN, "type": "invalid_request_error"}}))
        self.send("q")
        self.wait_idle()
        self.assertIn(PWN, self.messages()[-1][1])
        self.srv.replies.append(Reply(events=[{"error": {"message": PWN}}], done=False))
        self.send("q2")
        self.wait_idle()
        self.assertIn(PWN, self.messages()[-1][1])
        self.assertNothingRan()

    def test_a_hostile_archive_imports_as_text_or_is_refused(self) -> None:
        path = os.path.join(self.downloads, "hostile.json")
        archive = {
            "format": "openai2.chat",
            "version": 1,
            "messages": [
                {"role": "system", "content": PWN},
                {"role": "user", "content": PWN},
                {"role": "assistant", "content": [{"type": "text", "text": "[x](javascript:window.__pwned=5)"}]},
                {"role": "tool", "content": "left out"},
                {"role": "user", "content": {"toString": "x"}},
                None,
                7,
                {"role": "assistant", "content": "**" * 5000 + "[" * 20000},
            ],
            "pinned": [0],
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(archive, f)
        self.driver.find_element(By.ID, "import-file").send_keys(path)
        self.wait_for(lambda d: len(self.messages()) == 3, "the import", timeout=WAIT)
        self.assertEqual(self.messages()[0], ("user", PWN))
        self.assertIn("[x](javascript:window.__pwned=5)", self.messages()[1][1])
        self.assertEqual(self.driver.find_element(By.ID, "system").get_attribute("value"), PWN)
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "#messages a"), [])
        titles = [b.text for b in self.driver.find_elements(By.CSS_SELECTOR, "#conv-list .conv-open")]
        self.assertIn(PWN[:60], titles)  # the title: the first user message's first 60 characters
        self.assertNothingRan()
        for bad in ("[1, 2", '{"format": "openai2.chat", "version": 99, "messages": []}', '"just a string"', "null"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(bad)
            self.driver.find_element(By.ID, "import-file").send_keys(path)
            self.wait_for(lambda d: "hostile.json" in self.status() and "error" in (
                d.find_element(By.ID, "status").get_attribute("class") or ""), "the refusal of %r" % bad)
            self.js("document.getElementById('status').textContent = ''; document.getElementById('status').className = '';")
        self.assertNothingRan()


if __name__ == "__main__":
    unittest.main()
