"""Keep secrets out of logs, error messages and the run summary.

A node that pulls its model with an HF token and reads s3:// with AWS keys has those values in
its environment, and a stack trace or a logged command line can carry them into `logs/run.log`,
which the runbook ships to CloudWatch and OutputSync uploads next to the outputs. Redaction
replaces (a) the values of secret-looking environment variables and (b) strings shaped like
tokens even when they never were in the environment (one pasted into a config or a URL).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MASK = "***"
# Shorter values ("1", "true", "us-east-1") are settings, not secrets: masking them would
# shred ordinary text.
MIN_SECRET_LENGTH = 8

SECRET_NAMES = frozenset(
    {
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
    }
)
_SECRET_NAME = re.compile(r"(_TOKEN$|(^|_)SECRET|PASSWORD|_API_KEY$)")

# Token shapes: Hugging Face tokens, AWS access key ids (long-term AKIA, temporary ASIA),
# an AWS secret key written after its name (credentials files, env dumps), bearer headers.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"), MASK),
    (
        re.compile(
            r"(aws_secret_access_key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE), rf"\g<1>{MASK}"),
    # Credentials inside a URL (https://user:pass@host, s3://KEY:SECRET@bucket): the whole
    # user-info part, whatever its shape.
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@"), rf"\g<1>{MASK}@"),
    # A secret-named setting written out: hf_token=…, 'api_key': '…', PASSWORD: …
    (
        re.compile(
            r"(\b\w*(?:_token|secret\w*|password|passwd|api_?key|access_?key)[\"']?\s*[=:]\s*"
            r"[\"']?)[^\s\"',;})\]]{4,}",
            re.IGNORECASE,
        ),
        rf"\g<1>{MASK}",
    ),
)
# Keys whose values are secrets whatever they look like (--vllm-arg hf_token=…, a config's
# "password": …): their string values are masked whole. Whole name parts only: "max_tokens"
# and "tokenizer" are settings.
_SECRET_KEY = re.compile(
    r"(^|[_-])(token|secret|secret_key|password|passwd|api_?key|access_?key|credentials?|"
    r"authorization|auth)($|[_-])",
    re.IGNORECASE,
)


def secret_values(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Values of the environment's secret variables, longest first (so that a secret that
    contains another is masked whole)."""
    values = {
        value
        for name, value in environ.items()
        if (name.upper() in SECRET_NAMES or _SECRET_NAME.search(name.upper()))
        and len(value.strip()) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=lambda v: (-len(v), v))


def redact(text: str, secrets: Sequence[str] | None = None) -> str:
    """`text` with every secret value and token-shaped string replaced by ***."""
    if secrets is None:
        secrets = secret_values()
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_obj(obj: Any, secrets: Sequence[str] | None = None) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings) with every string redacted;
    other values are returned as they are."""
    if secrets is None:
        secrets = secret_values()
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, Mapping):
        return {
            (redact(k, secrets) if isinstance(k, str) else k): (
                MASK
                if isinstance(k, str) and _SECRET_KEY.search(k) and isinstance(v, str) and v
                else redact_obj(v, secrets)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact_obj(v, secrets) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_obj(v, secrets) for v in obj)
    return obj


class RedactingFilter(logging.Filter):
    """Redacts each record before any handler formats it: the message with its arguments,
    the traceback and the stack.

    Install it on handlers, not loggers: a logger's filters do not see records that propagate
    from child loggers, a handler's do. The record is rewritten in place (its arguments are
    merged into the message), so handlers without the filter that see it later get the
    redacted text too.
    """

    def __init__(self, secrets: Sequence[str] | None = None) -> None:
        super().__init__()
        # Read once: the environment's secrets are known when logging is set up.
        self._secrets = list(secret_values() if secrets is None else secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        record.msg = redact(message, self._secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def install_redaction(
    handlers: Iterable[logging.Handler] | None = None, secrets: Sequence[str] | None = None
) -> RedactingFilter:
    """Add one RedactingFilter to `handlers` (default: the root logger's handlers)."""
    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
