"""``modelsafe export ARTIFACT --to FORMAT DEST``: the model in another tool's format (ARTIFACT may be a URL)."""

from __future__ import annotations

from typing import Any

import click

import modelsafe as ms
from modelsafe.cli._app import State, cli, json_option, run_each, storage_option


@cli.command()
@click.argument("artifact")
@click.argument("destination")
@click.option("--to", "to", required=True, metavar="FORMAT", help="onnx, mlflow, docker or huggingface.")
@click.option("--trust-code", is_flag=True, help="Allow importing code bundled in the artifact.")
@json_option
@storage_option
@click.pass_obj
def export(state: State, artifact: str, destination: str, to: str, trust_code: bool) -> None:
    """Write the artifact's model in another tool's format, after every check of load."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        remote = {"storage_options": state.storage_options} if state.storage_options else {}
        written = ms.export(path, destination, to=to, trust_code=trust_code, **remote)
        record = {"path": path, "ok": True, "to": to, "destination": str(written)}
        text = f"exported {path} -> {written} ({to})"
        if to == "onnx":  # what a caller of the graph needs: its inputs, and the tolerance it was checked to
            from modelsafe.portable.export import describe

            spec = dict(ms.inspect(path, **remote).portable or {})
            record["inputs"], record["outputs"] = spec.get("inputs"), spec.get("outputs")
            text += "".join(f"\n  {line}" for line in describe(spec))
        return record, text, True

    run_each(state, (artifact,), work)
