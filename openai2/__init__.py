"""openai2: a dependency-free, pure-standard-library toolkit for OpenAI-compatible chat APIs.

Public names are re-exported here; each lives in the module that owns it.
"""
from __future__ import annotations

from .common import __version__
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    OpenAIError,
    PermissionDeniedError,
    RateLimitError,
    RequestCancelledError,
    ResponseTooLargeError,
    UnprocessableEntityError,
)

__all__ = [
    "__version__",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "IncompleteStreamError",
    "InternalServerError",
    "NotFoundError",
    "OpenAIError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestCancelledError",
    "ResponseTooLargeError",
    "UnprocessableEntityError",
]
