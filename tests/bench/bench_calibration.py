"""Calibration against servers that count with real tokenizers (issue 19): how close
``chat.count_tokens(question)`` is to the ``usage.prompt_tokens`` the server then reports, on the
requests after the first exchange of a conversation.

Called by tests/bench/bench_tokens.py (inside .venv-tokens, where the real tokenizers are). The
"server" is openai2.testing.MemoryTransport with ``token_counter=`` the real tokenizer: it counts
each prompt as the ChatML chat template renders it (Qwen's, DeepSeek's and many vLLM models'),
markers one token each, and each answer's ``completion_tokens`` — so what is measured is the
whole path a user has: the estimate, the server's counts kept per message, the calibrated ratio
for new text, through a real ``Chat``. Compared with two plain ways of using a ratio: learned on
the first request only, and learned on every answer (the estimate of the whole prompt times the
ratio, which is what openai2 did before it kept the server's counts per message).

Conversations: the mixed Chinese-English chat of the corpus (short turns), and a "varied" one
whose answers are samples of every kind (English and Chinese prose, code, JSON, a log) and whose
questions are short, as they are in real use.
"""

from __future__ import annotations

import statistics

MODELS = {
    "o200k": "gpt-4o",
    "cl100k": "gpt-4",
    "qwen": "qwen2.5-72b",
    "llama": "llama-3.1-70b",
    "deepseek": "deepseek-chat",
    "mistral": "mistral-large",
}

QUESTIONS = [
    "Can you tell me more about that?",
    "请再详细解释一下。",
    "Show me an example, please.",
    "What does this log say went wrong?",
    "用中文总结一下刚才的内容。",
    "And the JSON for it?",
    "Thanks! One more thing: how would you test it?",
    "这段代码有什么问题吗？",
]


def varied(samples):
    """A system prompt, then short questions answered by samples of each kind in turn."""
    by_kind = {}
    for kind, text in samples:
        by_kind.setdefault(kind, []).append(text)
    kinds = ["english", "zh-modern", "code", "log", "zh-literary", "json", "mixed-chat", "code"]
    messages = [{"role": "system", "content": "You are a helpful assistant. Answer in the user's language."}]
    for i in range(16):
        kind = kinds[i % len(kinds)]
        texts = by_kind[kind]
        messages.append({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]})
        messages.append({"role": "assistant", "content": texts[(i // len(kinds)) % len(texts)]})
    return messages


def run_chat(messages, model, counter):
    """Replay ``messages`` through a Chat against a ChatML server counting with ``counter``:
    [(predicted, actual, sent messages)] per request."""
    from openai2 import Chat
    from openai2.testing import MemoryTransport, Reply

    answers = iter([m["content"] for m in messages if m["role"] == "assistant"])
    transport = MemoryTransport(handler=lambda request: Reply(next(answers)), token_counter=counter)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    chat = Chat("sk-bench-0123456789abcdef", base_url="https://bench.test/v1", model=model, transport=transport)
    if system is not None:
        chat.set_system(system)
    chat.count_tokens()  # calibrate from the first answer on, as with a budget
    found = []
    for message in messages:
        if message["role"] != "user":
            continue
        predicted = chat.count_tokens(message["content"])
        chat.request(message["content"])
        found.append((predicted, chat.last_usage["prompt_tokens"], transport.requests[-1].messages))
    return found


def errors(messages, family, counter):
    """Relative errors on the requests after the first: as Chat counts now, and the two plain
    ratios (first request only; every answer), and uncalibrated."""
    from openai2.tokens import Calibration, count_tokens

    model = MODELS[family]
    rows = run_chat(messages, model, counter)
    chat, first, every, raw = [], [], [], []
    once, always = Calibration(), Calibration()
    for i, (predicted, actual, sent) in enumerate(rows):
        estimate = count_tokens(sent, model=model)
        if i:
            chat.append(abs(predicted - actual) / actual)
            first.append(abs(once.apply(estimate) - actual) / actual)
            every.append(abs(always.apply(estimate) - actual) / actual)
            raw.append(abs(estimate - actual) / actual)
        else:
            once.observe(estimate, actual)
        always.observe(estimate, actual)
    return chat, first, every, raw


def report(samples, tokenizers, conversation):
    """Print the table for the corpus's mixed chat (``conversation()``) and the varied one."""
    print("\nCalibration through a Chat, server = ChatML template counted by the real tokenizer;")
    print("error of count_tokens(question) on every request after the first (median / worst):")
    print("%-10s %-10s %-17s %-17s %-17s %s" % ("family", "chat", "openai2 Chat", "ratio of 1st", "ratio, every", "uncalibrated"))
    for name, chat_messages in (("mixed", conversation()), ("varied", varied(samples))):
        for family, counter in tokenizers.values():
            columns = errors(chat_messages, family, counter)
            cells = ["%4.1f%% / %4.1f%%" % (100 * statistics.median(c), 100 * max(c)) for c in columns]
            print("%-10s %-10s %-17s %-17s %-17s %s" % (family, name, *cells))
