"""The app of one ``modelsafe serve --workers N`` process (uvicorn starts each with :func:`build`).

The command line writes the server's options as JSON to ``MODELSAFE_SERVE_OPTIONS``
(the token as the path of its file, never the token itself) before uvicorn spawns the
workers; each worker loads and verifies every artifact itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["OPTIONS_VARIABLE", "build", "read_token"]

OPTIONS_VARIABLE = "MODELSAFE_SERVE_OPTIONS"


def read_token(path: str) -> str:
    """The bearer token in ``path`` (surrounding whitespace removed); ValueError when empty."""
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token:
        raise ValueError(f"Invalid token file {path!r}: expected a token, the file is empty. Write a long random "
                         "token into it (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))').")
    return token


def build() -> Any:
    """The ASGI app from the options the command line left in the environment."""
    from modelsafe.serving.app import create_app

    options: dict[str, Any] = json.loads(os.environ[OPTIONS_VARIABLE])
    token_file = options.pop("token_file", None)
    artifacts = options.pop("artifacts")
    return create_app(artifacts, token=read_token(token_file) if token_file else None, **options)
