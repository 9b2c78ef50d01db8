"""``modelsafe predict ARTIFACT INPUT -o OUTPUT``: score a file in chunks (extra ``modelsafe[batch]``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from modelsafe import errors
from modelsafe.cli._app import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    State,
    cli,
    emit,
    exit_code,
    json_option,
    rich_console,
    storage_option,
)
from modelsafe.cli.signing import signature_options


@cli.command()
@click.argument("artifact")
@click.argument("source", metavar="INPUT")
@click.option("-o", "--output", "destination", required=True, metavar="OUTPUT",
              help="Output file (.parquet, .csv, .tsv, .jsonl): written atomically.")
@click.option("--method", default="predict", show_default=True,
              type=click.Choice(["predict", "predict_proba", "decision_function", "transform"]))
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Rows per chunk (default 65,536).")
@click.option("--keep-columns", is_flag=True, help="Copy the input columns into the output.")
@click.option("--on-error", default="fail", show_default=True, type=click.Choice(["fail", "skip"]),
              help="skip: write rows that fail to OUTPUT.rejects.<ext> with a reason, and score the others.")
@click.option("--env", "env", type=click.Choice(["strict", "warn", "ignore"]), default="warn", show_default=True)
@click.option("--trust-code", is_flag=True, help="Allow importing code bundled in the artifact.")
@click.option("--trusted", multiple=True, metavar="MODULE.NAME", help="Extra global the unpickler may resolve.")
@signature_options
@json_option
@storage_option
@click.pass_obj
def predict(state: State, artifact: str, source: str, destination: str, method: str, batch_size: int | None,
            keep_columns: bool, on_error: str, env: str, trust_code: bool, trusted: tuple[str, ...]) -> None:
    """Score every row of INPUT (CSV, Parquet, JSON lines, a folder or glob of Parquet) into OUTPUT.

    The artifact is loaded once with every check (its signature first, under --signature); the
    input is streamed in chunks, each checked by the input guard. Exit code 1 when rows were
    rejected (--on-error skip) or a check failed, 2 for unreadable input.
    """
    from modelsafe.batch.files import predict_file

    try:
        with _progress(state) as progress:
            report = predict_file(artifact, source, destination, method=method, batch_size=batch_size,
                                  keep_columns=keep_columns, on_error=on_error,
                                  storage_options=state.storage_options, env=env, trust_code=trust_code,
                                  trusted=trusted, progress=progress, **state.signature_options())
    except (errors.ModelsafeError, OSError, ValueError) as exc:
        if state.verbose:
            raise
        if state.as_json:
            emit(state, [{"artifact": artifact, "ok": False, "error": type(exc).__name__, "message": str(exc)}], [])
        else:
            click.echo(f"{source}: {type(exc).__name__}: {exc}", err=True)
        sys.exit(_exit_code(exc))
    emit(state, [report.to_dict()], [str(report)])
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


def _exit_code(exc: BaseException) -> int:
    """2 for an input or output that cannot be read or written (a BatchError naming a ``path``), as for artifacts."""
    if isinstance(exc, errors.BatchError) and hasattr(exc, "path"):
        return EXIT_USAGE
    return exit_code(exc)


@contextmanager
def _progress(state: State) -> Iterator[Callable[[int, int | None], None] | None]:
    """Rows, rows per second and (with a row count from Parquet metadata) an ETA, on a terminal only."""
    if not sys.stderr.isatty() or state.as_json:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[speed]} rows/s"), TimeRemainingColumn()]
    with Progress(*columns, console=rich_console(stderr=True), transient=True) as bar:
        task = bar.add_task("scoring", total=None, speed="-")

        def advance(done: int, total: int | None) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            speed = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
            bar.update(task, completed=done, total=total, speed=speed)

        yield advance
