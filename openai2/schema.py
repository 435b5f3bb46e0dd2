"""Python type hints -> JSON Schema, docstring parameter descriptions, and validation of JSON
values against those schemas (shared by tool calling and structured output).

(Being written: see issue 15/16.)
"""

from __future__ import annotations
