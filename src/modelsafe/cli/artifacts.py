"""The commands on artifacts and model files: inspect, verify, env, scan, doctor, convert."""

from __future__ import annotations

from typing import Any

import click

import modelsafe as ms
from modelsafe.cli._app import State, artifact_bytes, cli, json_option, progress_bar, run_each, storage_option
from modelsafe.cli.signing import signature_options, trusted_key_option


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@json_option
@storage_option
@trusted_key_option
@click.pass_obj
def inspect(state: State, paths: tuple[str, ...]) -> None:
    """Show what an artifact holds (reads the manifest only; runs nothing), and who signed it."""
    from modelsafe.artifact.describe import describe
    from modelsafe.artifact.reader import ignored_files

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        manifest = ms.inspect(path, trusted_keys=list(state.trusted_keys), storage_options=state.storage_options)
        ignored = ignored_files(path)
        return ({"path": path, "ok": True, **manifest.to_dict(), "ignored": ignored},
                describe(manifest, path, ignored=ignored), True)

    run_each(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--env", "env", type=click.Choice(["strict", "warn", "ignore"]), default="warn", show_default=True)
@click.option("--trust-code", is_flag=True, help="Allow importing code bundled in the artifact.")
@click.option("--trusted", multiple=True, metavar="MODULE.NAME", help="Extra global the unpickler may resolve.")
@signature_options
@json_option
@storage_option
@click.pass_obj
def verify(state: State, paths: tuple[str, ...], env: str, trust_code: bool, trusted: tuple[str, ...]) -> None:
    """Load each artifact (signature, integrity, audit, environment) and replay its verification sample."""
    import os
    import warnings

    from modelsafe.signing.location import TRUSTED_KEYS_VARIABLE

    signature = state.signature_options()
    checks = signature["signature"] != "ignore" and bool(state.trusted_keys or os.environ.get(TRUSTED_KEYS_VARIABLE))

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        size = artifact_bytes(path, state.storage_options)
        with progress_bar("verifying", size) as progress, warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            report = ms.verify(path, env=env, trust_code=trust_code, trusted=trusted, progress=progress,
                               storage_options=state.storage_options, **signature)
        notes = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
        signed = (ms.inspect(path, trusted_keys=signature["trusted_keys"], storage_options=state.storage_options)
                  .signature if checks else None)
        text = "\n".join([*(f"warning: {n}" for n in notes), *([signed.section(indent="")] if signed else []),
                          str(report)])
        return ({"path": path, **report.to_dict(), "warnings": notes,
                 "signature": signed.to_dict() if signed else None}, text, report.ok)

    run_each(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Exit 1 on any difference beyond a patch release.")
@click.option("--recreate", "recreate", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Build the saved environment (in DIR, or the user cache) and load and verify the artifact in it. "
                   "Put it after ARTIFACT.")
@click.option("--installer", type=click.Choice(["auto", "uv", "pip"]), default="auto", show_default=True,
              help="With --recreate: uv, or venv + pip.")
@click.option("--trust-code", is_flag=True, help="With --recreate: allow the self-check to import bundled code.")
@json_option
@storage_option
@click.pass_obj
def env(state: State, paths: tuple[str, ...], strict: bool, recreate: str | None, installer: str,
        trust_code: bool) -> None:
    """Compare the environment an artifact was saved in with this one; --recreate builds it."""
    if recreate is not None:
        from modelsafe.cli.recreate import recreate_each

        recreate_each(state, paths, recreate or None, installer, trust_code)

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        report = ms.check_env(path, storage_options=state.storage_options)
        return {"path": path, **report.to_dict()}, f"{path}\n{report}", report.ok or not strict

    run_each(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@json_option
@storage_option
@click.pass_obj
def scan(state: State, paths: tuple[str, ...]) -> None:
    """Scan model files for content that could run code (never executes anything)."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        report = ms.scan(path, storage_options=state.storage_options)
        data = {"path": path, **report.to_dict()} if state.as_json else {"path": path, "ok": report.ok}
        return data, str(report), report.ok

    run_each(state, paths, work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@json_option
@storage_option
@click.pass_obj
def doctor(state: State, paths: tuple[str, ...]) -> None:
    """Explain why a model file won't load here, without loading it."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        report = ms.doctor(path, storage_options=state.storage_options)
        data = {"path": path, **report.to_dict()} if state.as_json else {"path": path, "ok": report.ok}
        return data, str(report), report.ok

    run_each(state, paths, work)


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--trusted", multiple=True, metavar="MODULE.NAME", help="Global the legacy file may use.")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact at DST.")
@click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (their bytecode runs at load).")
@click.option("--sample", "sample_file", metavar="FILE", default=None,
              help="A few input rows (.npy, .csv with a header row, or .parquet): their outputs are recorded and "
                   "the artifact is verified against them, now and at every load.")
@signature_options
@json_option
@storage_option
@click.pass_obj
def convert(state: State, src: str, dst: str, trusted: tuple[str, ...], overwrite: bool, trust_code: bool,
            sample_file: str | None) -> None:
    """Convert a legacy pickle / joblib / torch / h5 file into an artifact."""
    from modelsafe.cli.sample_files import read_sample

    sample = None if sample_file is None else read_sample(sample_file)

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        manifest = ms.convert(path, dst, trusted=trusted, overwrite=overwrite, trust_code=trust_code,
                              sample=sample, storage_options=state.storage_options, **state.signature_options())
        rows = (manifest.verification or {}).get("rows")
        verification = (f"verification: passed on {rows} sample row(s) from {sample_file}" if sample is not None else
                        "verification: not possible (no sample)\nnote: nothing checks that the converted model "
                        "predicts as the original did; convert again with --sample FILE (.npy, .csv or .parquet) "
                        "holding a few input rows, and every load replays them")
        data = {"path": dst, "source": path, "ok": True, **manifest.to_dict(),
                "verified": "passed" if sample is not None else "not possible (no sample)"}
        return data, f"converted {path} -> {dst} (flavor {manifest.flavor})\n{verification}", True

    run_each(state, (src,), work)
