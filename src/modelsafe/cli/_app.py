"""The command group and what every command shares: output, progress, errors and exit codes.

Exit codes: 0 all good; 1 a check failed (unsafe content, verification failed, integrity,
environment mismatch under ``--strict``); 2 usage error or unreadable input.
No traceback unless ``-v``, which only adds them (on stderr): every path is still processed,
the exit code and the ``--json`` output are the same. Every command accepts ``-v`` and
``--json`` after its name too.
"""

from __future__ import annotations

import json
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

import modelsafe as ms
from modelsafe import errors

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Errors that mean "the input could not be read" rather than "a check failed".
_UNREADABLE = (errors.FormatError, errors.FlavorNotInstalledError, FileNotFoundError,
               IsADirectoryError, PermissionError, ValueError)


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, (errors.IntegrityError, errors.SecurityError, errors.VerificationError,
                        errors.EnvironmentMismatchError, errors.ArchitectureMismatchError)):
        return EXIT_FAILED
    if isinstance(exc, _UNREADABLE):
        return EXIT_USAGE
    return EXIT_FAILED


class State:
    def __init__(self, verbose: bool, as_json: bool) -> None:
        self.verbose = verbose
        self.as_json = as_json
        #: ``--storage-option key=value`` pairs, for URL paths (``s3://...``); None when none was given.
        self.storage_options: dict[str, Any] | None = None
        #: ``--trusted-key`` paths and ``--signature`` (see :func:`modelsafe.cli.signing.signature_options`).
        self.trusted_keys: tuple[str, ...] = ()
        self.signature: str | None = None

    def signature_options(self) -> dict[str, Any]:
        """``load``'s ``signature=`` and ``trusted_keys=``: ``--signature``, else ``"require"`` when
        ``--trusted-key`` was given (naming the keys you trust means you want them checked), else ``"auto"``
        (which checks a signature that is there when ``MODELSAFE_TRUSTED_KEYS`` is set)."""
        return {"signature": self.signature or ("require" if self.trusted_keys else "auto"),
                "trusted_keys": list(self.trusted_keys)}


def rich_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit(state: State, results: list[dict[str, Any]], texts: list[str]) -> None:
    if state.as_json:
        click.echo(json.dumps(results if len(results) != 1 else results[0], indent=2, default=str))
    elif not sys.stdout.isatty():
        for text in texts:  # plain text to pipes and files: rich adds nothing there but start-up time
            click.echo(text)
    else:
        out = rich_console()
        for text in texts:
            out.print(text, markup=False)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
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
                  console=rich_console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def artifact_bytes(path: str, storage_options: dict[str, Any] | None = None) -> int:
    from modelsafe.artifact.reader import manifest_of

    try:
        return sum(m.size for m in manifest_of(path, storage_options).members.values())
    except errors.ModelsafeError:
        return 0


def run_each(state: State, paths: tuple[str, ...], work: Callable[[str], tuple[dict[str, Any], str, bool]]) -> None:
    """Run ``work`` on each path; print results; exit with the worst code."""
    code = EXIT_OK
    results: list[dict[str, Any]] = []
    texts: list[str] = []
    for path in paths:
        try:
            data, text, ok = work(path)
        except Exception as exc:  # noqa: BLE001 - one path's failure is its result; the others still run
            if state.verbose:
                traceback.print_exception(exc, file=sys.stderr)
            code = max(code, exit_code(exc))
            results.append({"path": path, "ok": False, "error": type(exc).__name__, "message": str(exc)})
            texts.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        results.append(data)
        texts.append(text)
        if not ok:
            code = max(code, EXIT_FAILED)
    emit(state, results, texts)
    sys.exit(code)


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(State).verbose = True


class _Command(click.Command):
    """A sub-command that also takes ``-v`` after its name (``modelsafe verify -v PATH``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any("--verbose" in getattr(p, "opts", ()) for p in self.params):
            self.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                                            callback=_set_verbose, help="Show tracebacks (on stderr)."))


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ms.__version__, prog_name="modelsafe")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks (on stderr); changes nothing else.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, as_json: bool) -> None:
    """Save models that load, and predict the same, anywhere, safely."""
    ctx.obj = State(verbose, as_json)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """Accept --json after the sub-command too (``modelsafe inspect --json PATH``)."""
    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(State).as_json = True
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                        help="Machine-readable JSON output.")(f)


def parse_storage_option(text: str) -> tuple[list[str], Any]:
    """``key=value`` -> (key path, value). A dotted key nests (``client_kwargs.region_name=eu-west-1``);
    a value that reads as JSON (``true``, ``3``, ``{...}``) is that value, any other is a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise click.BadParameter(f"expected KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000). Received: {text!r}",
                                 param_hint="--storage-option")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip().split("."), value


def storage_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--storage-option KEY=VALUE`` (repeatable): options of the store's fsspec filesystem for URL paths."""
    def set_options(ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> None:
        options: dict[str, Any] = {}
        for text in values:
            keys, value = parse_storage_option(text)
            node = options
            for key in keys[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise click.BadParameter(f"{'.'.join(keys)} nests under a key given a value: {text!r}",
                                             param_hint="--storage-option")
            node[keys[-1]] = value
        if options:
            ctx.find_object(State).storage_options = options
    return click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                        expose_value=False, callback=set_options,
                        help="Option of the store's fsspec filesystem for s3://, gs://... paths (repeatable), "
                             "e.g. endpoint_url=http://127.0.0.1:9000.")(f)


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
        sys.exit(exit_code(exc))
