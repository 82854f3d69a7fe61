"""The one exception type for mistakes a user can fix, and what an error may show.

Everything a user can cause (a bad override, a missing file or column, a model that cannot be
loaded offline, ...) raises `UserError` with a short message that names the config key and the
fix. The CLI turns it into one paragraph on stderr and a non-zero exit, never a traceback.

Messages echo what the user typed (the key, often its value); a secret must not be among them:
`redact` hides the values of secret-looking arguments (`hub.token=...`, `*key*=`, `*secret*=`,
`*password*=`) and of the secret environment variables (HF_TOKEN, WANDB_API_KEY, ...) in any text
shown to the user. cli.run_and_report applies it to every error, whatever raised it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping

#: words that make a key or an environment variable a secret (matched case-insensitively)
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "credential", "auth")
#: what a hidden value is shown as
HIDDEN = "***"
#: shorter values are hidden only as `key=value`: replacing every "1" or "abc" in a message would garble it
MIN_SECRET_LENGTH = 4


class UserError(Exception):
    """A problem in the user's config or data, with a message that says how to fix it."""


def is_secret_key(key: str) -> bool:
    """Whether a config key / option / environment variable name holds a secret (hub.token, HF_TOKEN,
    logger.wandb.api_key, db_password, ...)."""
    name = key.lstrip("+~").lower()
    return any(word in name for word in SECRET_WORDS)


def secret_values(argv: Iterable[str] | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The values to hide: of `key=value` arguments with a secret key, and of secret environment
    variables; longest first (a secret holding another is hidden whole)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    values = [value for arg in argv for key, eq, value in [str(arg).partition("=")] if eq and is_secret_key(key)]
    values += [value for name, value in environ.items() if is_secret_key(name) and len(value) >= 8]
    return sorted({v for v in values if v}, key=len, reverse=True)


def redact(text: str, argv: Iterable[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every secret value (`secret_values`) shown as ***; `key=value` of a secret key too."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # key=value of a secret key as typed, whatever its value's length
    text = re.sub(r"(?P<key>[\w.+~-]*(?:%s)[\w.-]*)=(?P<value>[^\s'\",)]+)" % "|".join(SECRET_WORDS),
                  lambda m: f"{m.group('key')}={HIDDEN}", text, flags=re.IGNORECASE)
    for value in secret_values(argv, environ):
        if len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, HIDDEN)
    return text


def redact_args(argv: Iterable[str]) -> list[str]:
    """Command-line arguments as they may be recorded (model card, logs): secret values hidden."""
    return [f"{key}={HIDDEN}" if eq and is_secret_key(key) else arg
            for arg in argv for key, eq, _ in [str(arg).partition("=")]]
