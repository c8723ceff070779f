"""s3:// URIs: what one is, and which ones no S3 request could ever serve.

Checked when the options are read (config.py), so a malformed URI fails at once with one
line (credentials masked) instead of being retried as if the network were at fault.
"""

from __future__ import annotations

import re

from .errors import ConfigError
from .redact import redact

SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def is_remote(uri: str) -> bool:
    return uri.startswith(SCHEME)


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/key → ("bucket", "some/key"); ConfigError (one line, credentials
    masked) for a URI no S3 request could ever serve, so it is never retried as if the
    network were at fault."""
    shown = redact(uri)
    if not is_remote(uri):
        raise ConfigError(f"{shown} is not an s3:// URI")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise ConfigError(f"{shown} names no bucket")
    if "@" in bucket or ":" in bucket:
        raise ConfigError(
            f"{shown}: credentials or a port do not belong in an s3:// URI; give them "
            "through the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_ENDPOINT_URL_S3)"
        )
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP_ADDRESS.fullmatch(bucket):
        raise ConfigError(
            f"{shown}: {bucket!r} is not a valid S3 bucket name (3 to 63 lowercase letters, "
            "digits, dots and hyphens, starting and ending with a letter or digit)"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise ConfigError(f"{shown}: the key holds control characters")
    return bucket, key.strip("/")
