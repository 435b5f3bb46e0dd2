"""The chat page that ``openai2 serve`` shows at ``/``: one self-contained HTML document.

(Being written: see issue 17.)
"""

from __future__ import annotations
