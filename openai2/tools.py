"""Tool calling: the ``tool`` decorator, ``tool_schema``, and the sans-IO call -> run -> reply loop.

(Being written: see issue 15.)
"""

from __future__ import annotations
