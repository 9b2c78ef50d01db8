"""The ``modelsafe`` command line: parse, call the public API, render, map errors to exit codes.

Exit codes: 0 all good; 1 a check failed (unsafe content, verification failed, integrity,
environment mismatch under ``--strict``); 2 usage error or unreadable input.
No traceback unless ``-v``.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

import modelsafe as ms
from modelsafe import errors

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Errors that mean "the input could not be read" rather than "a check failed".
_UNREADABLE = (errors.FormatError, errors.FlavorNotInstalledError, FileNotFoundError,
               IsADirectoryError, PermissionError, ValueError)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (errors.IntegrityError, errors.SecurityError, errors.VerificationError,
                        errors.EnvironmentMismatchError, errors.ArchitectureMismatchError)):
        return EXIT_FAILED
    if isinstance(exc, _UNREADABLE):
        return EXIT_USAGE
    return EXIT_FAILED


class _State:
    def __init__(self, verbose: bool, as_json: bool) -> None:
        self.verbose = verbose
        self.as_json = as_json


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _emit(state: _State, results: list[dict[str, Any]], texts: list[str]) -> None:
    if state.as_json:
        click.echo(json.dumps(results if len(results) != 1 else results[0], indent=2, default=str))
    elif not sys.stdout.isatty():
        for text in texts:  # plain text to pipes and files: rich adds nothing there but start-up time
            click.echo(text)
    else:
        console = _console()
        for text in texts:
            console.print(text, markup=False)


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal for work over ``total`` bytes; nothing otherwise."""
    if not sys.stderr.isatty() or total < (64 << 20):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _artifact_bytes(path: str) -> int:
    try:
        return sum(m.size for m in ms.inspect(path).members.values())
    except errors.ModelsafeError:
        return 0


def _run(state: _State, paths: tuple[str, ...], work: Callable[[str], tuple[dict[str, Any], str, bool]]) -> None:
    """Run ``work`` on each path; print results; exit with the worst code."""
    code = EXIT_OK
    results: list[dict[str, Any]] = []
    texts: list[str] = []
    for path in paths:
        try:
            data, text, ok = work(path)
        except (errors.ModelsafeError, OSError, ValueError) as exc:
            if state.verbose:
                raise
            exc_code = _exit_code(exc)
            code = max(code, exc_code)
            results.append({"path": path, "ok": False, "error": type(exc).__name__, "message": str(exc)})
            texts.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        results.append(data)
        texts.append(text)
        if not ok:
            code = max(code, EXIT_FAILED)
    _emit(state, results, texts)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ms.__version__, prog_name="modelsafe")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, as_json: bool) -> None:
    """Save models that load, and predict the same, anywhere, safely."""
    ctx.obj = _State(verbose, as_json)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """Accept --json after the sub-command too (``modelsafe inspect --json PATH``)."""
    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(_State).as_json = True
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                        help="Machine-readable JSON output.")(f)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@_json_option
@click.pass_obj
def inspect(state: _State, paths: tuple[str, ...]) -> None:
    """Show what an artifact holds (reads the manifest only; runs nothing)."""
    from modelsafe._render import describe_manifest

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        manifest = ms.inspect(path)
        return {"path": path, "ok": True, **manifest.to_dict()}, describe_manifest(path, manifest), True

    _run(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--env", "env", type=click.Choice(["strict", "warn", "ignore"]), default="warn", show_default=True)
@click.option("--trust-code", is_flag=True, help="Allow importing code bundled in the artifact.")
@click.option("--trusted", multiple=True, metavar="MODULE.NAME", help="Extra global the unpickler may resolve.")
@_json_option
@click.pass_obj
def verify(state: _State, paths: tuple[str, ...], env: str, trust_code: bool, trusted: tuple[str, ...]) -> None:
    """Load each artifact (integrity, audit, environment) and replay its verification sample."""
    import warnings

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        with _progress("verifying", _artifact_bytes(path)) as progress, warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            report = ms.verify(path, env=env, trust_code=trust_code, trusted=trusted, progress=progress)
        notes = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
        text = "\n".join([*(f"warning: {n}" for n in notes), str(report)])
        return {"path": path, **report.to_dict(), "warnings": notes}, text, report.ok

    _run(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Exit 1 on any difference beyond a patch release.")
@_json_option
@click.pass_obj
def env(state: _State, paths: tuple[str, ...], strict: bool) -> None:
    """Compare the environment an artifact was saved in with this one."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        report = ms.check_env(path)
        return {"path": path, **report.to_dict()}, f"{path}\n{report}", report.ok or not strict

    _run(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@_json_option
@click.pass_obj
def scan(state: _State, paths: tuple[str, ...]) -> None:
    """Scan model files for content that could run code (never executes anything)."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        report = ms.scan(path)
        data = {"path": path, **report.to_dict()} if state.as_json else {"path": path, "ok": report.ok}
        return data, str(report), report.ok

    _run(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@_json_option
@click.pass_obj
def doctor(state: _State, paths: tuple[str, ...]) -> None:
    """Explain why a model file won't load here, without loading it."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        report = ms.doctor(path)
        data = {"path": path, **report.to_dict()} if state.as_json else {"path": path, "ok": report.ok}
        return data, str(report), report.ok

    _run(state, paths, work)


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--trusted", multiple=True, metavar="MODULE.NAME", help="Global the legacy file may use.")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact at DST.")
@click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (their bytecode runs at load).")
@_json_option
@click.pass_obj
def convert(state: _State, src: str, dst: str, trusted: tuple[str, ...], overwrite: bool, trust_code: bool) -> None:
    """Convert a legacy pickle / joblib / torch / h5 file into an artifact."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        manifest = ms.convert(path, dst, trusted=trusted, overwrite=overwrite, trust_code=trust_code)
        return ({"path": dst, "source": path, "ok": True, **manifest.to_dict()},
                f"converted {path} -> {dst} (flavor {manifest.flavor})", True)

    _run(state, (src,), work)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``modelsafe`` and ``python -m modelsafe``."""
    try:
        cli.main(args=argv, prog_name="modelsafe", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_FAILED)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback without -v
        if "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv):
            raise
        click.echo(f"modelsafe: {type(exc).__name__}: {exc}", err=True)
        sys.exit(_exit_code(exc))
