"""openai2: a dependency-free, pure-standard-library toolkit for OpenAI-compatible chat APIs.

Public names are re-exported here; each lives in the module that owns it.
"""

from __future__ import annotations

from .chat import AsyncChatTextStream, Chat, ChatTextStream, Round, assistant_msg, image_part, system_msg, user_msg
from .client import ChatCompletionStream, OpenAI
from .common import __version__, mask_key
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
from .groupchat import GroupChat, GroupChatReplyError
from .keypool import AKPool
from .objects import AttrDict
from .tokens import count_tokens
from .tools import ToolCall, ToolRoundsError, tool, tool_schema
from .transport import CancelScope, HTTPTransport, Timeout

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
