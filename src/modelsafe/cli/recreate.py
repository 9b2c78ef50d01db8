"""``modelsafe env ARTIFACT --recreate [DIR]``: build the saved environment and check the artifact in it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

import modelsafe as ms
from modelsafe.cli._app import State, rich_console, run_each

__all__ = ["recreate_each"]


def recreate_each(state: State, paths: tuple[str, ...], destination: str | None, installer: str,
                  trust_code: bool) -> None:
    """``ms.recreate_env`` for each path (one path when DIR is given); exits with the worst code."""
    if destination is not None and len(paths) > 1:
        raise click.UsageError(f"--recreate DIR builds one environment, and {len(paths)} artifacts were given: "
                               "give one artifact with DIR, or several without DIR (the cache keeps one environment "
                               "per requirement set).")

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        with _status(f"recreating the environment of {path} (first time: downloads and installs)"):
            report = ms.recreate_env(path, destination, installer=installer, trust_code=trust_code)
        return {"path": path, **report.to_dict()}, f"{path}\n{report}", report.ok

    run_each(state, paths, work)


@contextmanager
def _status(text: str) -> Iterator[None]:
    """A spinner on a terminal while the environment builds; nothing otherwise."""
    if not sys.stderr.isatty():
        yield
        return
    with rich_console(stderr=True).status(text):
        yield
