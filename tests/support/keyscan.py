"""A run-wide check that no API key reaches the ``openai2`` log unmasked.

``tests/run.py`` attaches :class:`KeyScan` to the ``openai2`` logger at DEBUG for the whole run,
then fails the run if any record (message, arguments and exception text) contained something
shaped like a whole key (``sk-`` and at least 12 more key characters; a masked key such as
``sk-…abcd`` does not match).
"""
import logging
import re

KEY_SHAPE = re.compile(r"sk-[A-Za-z0-9_-]{12,}")


class KeyScan(logging.Handler):
    """Collects (logger name, key-shaped text) for every record that contains a key."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.found = []
        self.records = 0

    def emit(self, record):
        self.records += 1
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format
            text = "%s %r" % (record.msg, record.args)
        if record.exc_info:
            text += " " + logging.Formatter().formatException(record.exc_info)
        for match in KEY_SHAPE.findall(text):
            self.found.append((record.name, match))

    def __enter__(self):
        self._logger = logging.getLogger("openai2")
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
