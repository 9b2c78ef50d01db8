"""The model card page at ``GET /``: what each model is, where it came from, and a form to try it.

For each model: flavor and type, the environment saved vs now with each difference's
level, the verification result, the input schema as a table, the user metadata, and a
form that posts pasted JSON or CSV rows to ``/invocations`` and shows the predictions.
On a server started with a token, a browser without it gets :func:`render_locked` instead:
nothing about the models, a field for the token, which the page keeps in the tab's
``sessionStorage`` only and sends as the ``Authorization`` header (never in a URL) to fetch
this page and to predict.
Every value from a manifest (metadata, column names, even package names) is escaped, and
the page allows only its own script (``Content-Security-Policy``), so a ``<script>`` or an
``onerror=`` in user metadata is shown as text and never runs. Nothing is loaded from
outside the server.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any, Iterable

from modelsafe._version import __version__
from modelsafe.serving.outputs import jsonable

if TYPE_CHECKING:
    from modelsafe.serving.models import ServedModel

__all__ = ["render_card", "render_locked", "example_payloads", "CONTENT_SECURITY_POLICY"]

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def e(value: Any) -> str:
    """Escaped text of any value (the only way a value reaches the page)."""
    return escape(value if isinstance(value, str) else str(value), quote=True)


def render_card(models: Iterable["ServedModel"], ready: bool) -> str:
    models = list(models)
    names = ", ".join(m.name for m in models)
    sections = "\n".join(_model_section(m) for m in models)
    status = "ready" if ready else "not ready"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>modelsafe: {e(names)}</title><link rel="stylesheet" href="/static/card.css"></head>
<body><header><h1>modelsafe serve</h1>
<p class="about">modelsafe {e(__version__)} &middot; {len(models)} model(s) &middot;
<span class="status {e(status.replace(' ', '-'))}">{e(status)}</span> &middot;
<a href="/docs">API</a> &middot; <a href="/metrics">metrics</a></p></header>
<main>{sections}</main><script src="/static/card.js"></script></body></html>"""


def render_locked() -> str:
    """The page a browser without the token gets at ``/`` (with the 401): it asks for the token.

    Nothing about the models is on it. ``card.js`` keeps the token in ``sessionStorage`` and
    fetches :func:`render_card`'s page with it in the ``Authorization`` header.
    """
    return """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>modelsafe: token required</title><link rel="stylesheet" href="/static/card.css"></head>
<body data-token="required"><header><h1>modelsafe serve</h1><p class="about">This server requires a bearer token.</p>
<form class="token" autocomplete="off"><label>Token <input type="password" name="token" autocomplete="off"
 spellcheck="false" required></label> <button type="submit">Show the models</button>
<button type="button" class="forget" hidden>Forget the token</button><p class="error" role="alert"></p></form></header>
<main><p class="locked">The server was started with a token (<code>--token-file</code>): enter it to see the models
and try them. It is kept in this tab only (<code>sessionStorage</code>) and sent as the <code>Authorization</code>
header, never in a URL.</p></main><script src="/static/card.js"></script></body></html>"""


def _model_section(model: "ServedModel") -> str:
    manifest = model.manifest
    component = manifest.components["model"]
    verification = model.verification
    verdict = "skipped" if verification.skipped else ("passed" if verification.ok else "FAILED")
    facts = [("flavor", manifest.flavor), ("type", component.type_name or "?"),
             ("created", manifest.created), ("written by", f"modelsafe {manifest.modelsafe_version}"),
             ("members", f"{len(manifest.members)}, {sum(m.size for m in manifest.members.values())} bytes"),
             ("methods", ", ".join(model.methods)), ("loaded in", f"{model.load_seconds:.3f} s")]
    if "preprocess" in manifest.components:
        pre = manifest.components["preprocess"]
        facts.insert(2, ("preprocess", f"{pre.type_name or '?'} ({pre.flavor})"))
    warnings = "".join(f"<li>{e(w)}</li>" for w in model.load_warnings)
    return f"""<section class="model" id="model-{e(model.name)}">
<h2>{e(model.name)} <small>{e(manifest.flavor)}</small></h2>
{_table(("", ""), facts, "facts")}
<h3>Verification: <span class="verdict {e(verdict.lower())}">{e(verdict)}</span></h3>
<pre class="verification">{e(verification)}</pre>
{f'<h3>Load warnings</h3><ul class="load-warnings">{warnings}</ul>' if warnings else ''}
<h3>Environment: saved vs now</h3>{_environment(model)}
<h3>Input schema</h3>{_schema(model)}
<h3>Metadata</h3>{_metadata(manifest.metadata)}
<h3>Try it</h3>{_form(model)}
</section>"""


def _table(head: tuple[str, ...], rows: Iterable[Iterable[Any]], css: str, classes: Iterable[str] = ()) -> str:
    extra = list(classes)
    lines = []
    for i, row in enumerate(rows):
        cls = f' class="{e(extra[i])}"' if i < len(extra) else ""
        lines.append(f"<tr{cls}>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>")
    heading = f"<thead><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr></thead>" if any(head) else ""
    return f'<table class="{e(css)}">{heading}<tbody>{"".join(lines)}</tbody></table>'


def _environment(model: "ServedModel") -> str:
    report = model.bundle.env_report
    if report is None:
        return "<p>No environment was recorded.</p>"
    rows = [(d.package, d.saved or "-", d.current or "not installed",
             d.level.value + (f" ({d.direction})" if d.direction else "")) for d in report.differences]
    verdict = "no relevant package differs beyond a patch release" if report.ok else \
        "some packages differ beyond a patch release"
    intro = (f"<p>Saved on Python {e(report.saved_python)} ({e(report.saved_platform)}), now Python "
             f"{e(report.current_python)} ({e(report.current_platform)}): {verdict}.</p>")
    return intro + _table(("package", "saved", "now", "level"), rows, "environment",
                          [f"level-{d.level.value}" for d in report.differences])


def _schema(model: "ServedModel") -> str:
    schema = model.manifest.schema or {}
    spec = model.spec
    if spec.is_frame:
        rows = [(label, c.get("dtype"), "yes" if c.get("nullable") else "no", _number(c.get("min")),
                 _number(c.get("max"))) for label, c in zip(spec.labels, spec.columns)]
        origin = schema.get("ranges_from")
        note = f"<p>Ranges from the {e(origin)} ({e(schema.get('range_rows'))} rows).</p>" if origin else ""
        return _table(("column", "dtype", "nullable", "min", "max"), rows, "schema") + note
    if not schema:
        return "<p>No input schema was recorded (the model was saved without a sample).</p>"
    rows = [("kind", schema.get("kind"))] + [(k, json.dumps(schema[k], default=str)) for k in ("dtype", "shape", "keys")
                                             if k in schema]
    return _table(("", ""), rows, "schema")


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _metadata(metadata: Any) -> str:
    if not metadata:
        return "<p>None.</p>"
    rows = [(key, value if isinstance(value, str) else json.dumps(value, default=str))
            for key, value in dict(metadata).items()]
    return _table(("key", "value"), rows, "metadata")


def example_payloads(model: "ServedModel") -> tuple[str, str]:
    """The first rows of the verification sample as a JSON request and as CSV ('' when there is none)."""
    rows = model.example_rows()
    if rows is None:
        return "", ""
    if hasattr(rows, "iloc"):
        columns = [c if isinstance(c, (str, int)) else str(c) for c in rows.columns]
        payload: Any = {"dataframe_split": {"columns": columns, "data": jsonable(rows.to_numpy(dtype=object))}}
        return json.dumps(payload, indent=1), rows.to_csv(index=False)
    if isinstance(rows, dict):
        return json.dumps({"inputs": jsonable(rows)}, indent=1), ""
    if isinstance(rows, tuple):
        return json.dumps({"inputs": jsonable(list(rows))}, indent=1), ""
    return json.dumps({"instances": jsonable(rows)}, indent=1), ""


def _form(model: "ServedModel") -> str:
    as_json, as_csv = example_payloads(model)
    methods = "".join(f'<option value="{e(m)}">{e(m)}</option>' for m in model.methods)
    csv_option = '<option value="text/csv">CSV</option>' if model.spec.is_frame else ""
    return f"""<form class="try" data-model="{e(model.name)}" data-example-json="{e(as_json)}"
 data-example-csv="{e(as_csv)}">
<label>Rows <textarea name="payload" rows="8" spellcheck="false">{e(as_json)}</textarea></label>
<label>Format <select name="format"><option value="application/json">JSON</option>{csv_option}</select></label>
<label>Method <select name="method">{methods}</select></label>
<button type="submit">Predict</button>
<p class="error" role="alert"></p><pre class="result" aria-live="polite"></pre><ul class="warnings"></ul>
</form>"""
