"""``modelsafe export ARTIFACT --to FORMAT DEST``: the model in another tool's format."""

from __future__ import annotations

from typing import Any

import click

import modelsafe as ms
from modelsafe.cli._app import State, cli, json_option, run_each


@cli.command()
@click.argument("artifact")
@click.argument("destination")
@click.option("--to", "to", required=True, metavar="FORMAT", help="onnx, mlflow, docker or huggingface.")
@click.option("--trust-code", is_flag=True, help="Allow importing code bundled in the artifact.")
@json_option
@click.pass_obj
def export(state: State, artifact: str, destination: str, to: str, trust_code: bool) -> None:
    """Write the artifact's model in another tool's format, after every check of load."""

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        written = ms.export(path, destination, to=to, trust_code=trust_code)
        return {"path": path, "ok": True, "to": to, "destination": str(written)}, f"exported {path} -> {written} ({to})", True

    run_each(state, (artifact,), work)
