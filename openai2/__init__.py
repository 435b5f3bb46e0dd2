"""openai2: a dependency-free, pure-standard-library toolkit for OpenAI-compatible chat APIs.

Public names are re-exported here; each lives in the module that owns it.
"""

from __future__ import annotations

from .chat import AsyncChatTextStream, Chat, ChatTextStream, Round, assistant_msg, image_part, system_msg, user_msg
from .client import ChatCompletionStream, OpenAI
from .common import TYPE_CHECKING, __version__, mask_key
from .compat import ChatCompletion, error  # noqa: F401 - error: the pre-1.0 openai.error namespace
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContextBudgetError,
    ContextLengthError,
    IncompleteStreamError,
    InternalServerError,
    LengthFinishReasonError,
    NotFoundError,
    OpenAIError,
    PermissionDeniedError,
    RateLimitError,
    RefusalError,
    RequestCancelledError,
    ResponseTooLargeError,
    SchemaValidationError,
    StructuredOutputError,
    UnprocessableEntityError,
)
from .keypool import AKPool
from .objects import AttrDict
from .tools import ToolCall, ToolRoundsError, tool, tool_schema
from .transport import CancelScope, HTTPTransport, Timeout

if TYPE_CHECKING:
    from .groupchat import GroupChat, GroupChatReplyError
    from .tokens import count_tokens


def __getattr__(name: str) -> object:
    """``GroupChat``, ``GroupChatReplyError`` and ``count_tokens`` are imported on first use:
    ``import openai2`` stays light for the many programs that use neither."""
    if name in ("GroupChat", "GroupChatReplyError"):
        from .groupchat import GroupChat, GroupChatReplyError

        return {"GroupChat": GroupChat, "GroupChatReplyError": GroupChatReplyError}[name]
    if name == "count_tokens":
        from .tokens import count_tokens

        return count_tokens
    raise AttributeError("module 'openai2' has no attribute %r" % name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"GroupChat", "GroupChatReplyError", "count_tokens"})


# COMPATIBILITY: module-level settings of the pre-1.0 ``openai`` module, read by
# ``ChatCompletion.create`` (see compat.py): ``import openai2 as openai; openai.api_key = ...``.
# ``error`` (imported above) is the pre-1.0 ``openai.error`` namespace, also ``openai2.error``
# in sys.modules.
api_key: str | None = None
api_base: str | None = None
base_url: str | None = None
organization: str | None = None
proxy: str | dict[str, str] | None = None

__all__ = [
    "__version__",
    "AKPool",
    "AsyncChatTextStream",
    "AttrDict",
    "CancelScope",
    "Chat",
    "ChatCompletion",
    "ChatCompletionStream",
    "ChatTextStream",
    "GroupChat",
    "GroupChatReplyError",
    "HTTPTransport",
    "OpenAI",
    "Round",
    "Timeout",
    "ToolCall",
    "ToolRoundsError",
    "assistant_msg",
    "count_tokens",
    "image_part",
    "mask_key",
    "system_msg",
    "tool",
    "tool_schema",
    "user_msg",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ContextBudgetError",
    "ContextLengthError",
    "IncompleteStreamError",
    "InternalServerError",
    "NotFoundError",
    "OpenAIError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestCancelledError",
    "ResponseTooLargeError",
    "LengthFinishReasonError",
    "RefusalError",
    "SchemaValidationError",
    "StructuredOutputError",
    "UnprocessableEntityError",
]
