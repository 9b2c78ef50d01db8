"""``modelsafe keygen DIR`` and ``modelsafe sign ARTIFACT --key KEY.pem``; the signature options every
command that reads an artifact shares: ``--trusted-key`` (repeatable; ``MODELSAFE_TRUSTED_KEYS``
otherwise) on ``inspect``, and with ``--signature auto|require|ignore`` on ``verify``, ``serve`` and
``predict``. What ``inspect`` and ``verify`` print about a signature is ``ms.inspect``'s report.

A password is read from ``--password-file``, then ``MODELSAFE_KEY_PASSWORD``, then a hidden
prompt on a terminal: never from the command line, where other users' ``ps`` would see it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

import modelsafe as ms
from modelsafe import errors
from modelsafe.cli._app import State, cli, json_option, run_each, storage_option
from modelsafe.signing.gate import MODES
from modelsafe.signing.location import TRUSTED_KEYS_VARIABLE

PASSWORD_VARIABLE = "MODELSAFE_KEY_PASSWORD"


def trusted_key_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--trusted-key PUB.pem`` (repeatable): a public key, a root certificate or a folder of them, kept in
    ``state.trusted_keys``."""
    def keep(ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> None:
        if values:
            ctx.find_object(State).trusted_keys = tuple(values)
    return click.option("--trusted-key", "trusted_keys", multiple=True, metavar="PUB.pem", expose_value=False,
                        callback=keep,
                        help="Public key (or root certificate, or a folder of them) whose signatures are trusted; "
                             f"repeatable. Default: the paths in {TRUSTED_KEYS_VARIABLE}.")(f)


def signature_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--trusted-key`` and ``--signature auto|require|ignore``, of every command that loads an artifact
    (``verify``, ``serve``, ``predict``) or converts one (``convert``): ``state.signature_options()`` gives them
    to ``load`` or ``convert``."""
    def keep(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.find_object(State).signature = value
    f = click.option("--signature", "signature", type=click.Choice(list(MODES)), default=None, expose_value=False,
                     callback=keep,
                     help="Check the signature beside each artifact (ARTIFACT.sig) before anything else is read: "
                          "require refuses an unsigned artifact or a signer not trusted, auto checks one that is "
                          "there when trusted keys are set, ignore skips it. Default: require with --trusted-key, "
                          "else auto.")(f)
    return trusted_key_option(f)


def _password(password_file: str | None) -> str | None:
    if password_file:
        try:
            return Path(password_file).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError) as exc:
            raise click.BadParameter(f"cannot read a password from {password_file!r}: {exc}",
                                     param_hint="--password-file") from None
    return os.environ.get(PASSWORD_VARIABLE) or None


@cli.command()
@click.argument("directory")
@click.option("--curve", type=click.Choice(["P-256", "P-384", "P-521"]), default="P-256", show_default=True)
@click.option("--password-file", metavar="FILE", help="Encrypt the private key with the password in FILE.")
@click.option("--encrypt", is_flag=True, help=f"Encrypt the private key ({PASSWORD_VARIABLE}, or a prompt).")
@json_option
@click.pass_obj
def keygen(state: State, directory: str, curve: str, password_file: str | None, encrypt: bool) -> None:
    """Write a new ECDSA key pair: DIRECTORY/private.pem (mode 0600) and DIRECTORY/public.pem."""
    from modelsafe.signing.keys import keygen as make_pair

    password = _password(password_file) if (password_file or encrypt) else None
    if encrypt and password is None:
        password = click.prompt("Password for the private key", hide_input=True, confirmation_prompt=True,
                                err=True)

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        private, public, fingerprint = make_pair(path, password=password, curve=curve)
        text = (f"wrote {private} (private: keep it secret{', encrypted' if password else ''}) and {public}\n"
                f"key fingerprint: {fingerprint}\n"
                f"sign with: modelsafe sign ARTIFACT --key {private}\n"
                f"check with: modelsafe verify ARTIFACT --trusted-key {public}")
        return ({"path": path, "ok": True, "private_key": str(private), "public_key": str(public),
                 "fingerprint": fingerprint, "curve": curve, "encrypted": bool(password)}, text, True)

    run_each(state, (directory,), work)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--key", "key", required=True, metavar="KEY.pem", help="The ECDSA private key (PEM).")
@click.option("--password-file", metavar="FILE", help=f"The key's password (else {PASSWORD_VARIABLE}, or a prompt).")
@click.option("--certificate-chain", "chain", multiple=True, metavar="CERT.pem",
              help="Certificate mode: the key's certificate, then its intermediates (repeatable).")
@click.option("--provenance", "provenance_file", metavar="FILE.json",
              help="A JSON object of provenance fields to sign with the artifact ({\"git\": true, \"datasets\": [...]}).")
@click.option("--git", "git", is_flag=True, help="Record the git commit (and dirty flag) of the current directory.")
@json_option
@storage_option
@click.pass_obj
def sign(state: State, paths: tuple[str, ...], key: str, password_file: str | None, chain: tuple[str, ...],
         provenance_file: str | None, git: bool) -> None:
    """Sign artifacts in the OpenSSF Model Signing format: writes ARTIFACT.sig beside each one."""
    provenance = _provenance(provenance_file, git)
    password = [_password(password_file)]

    def work(path: str) -> tuple[dict[str, Any], str, bool]:
        try:
            report = ms.sign(path, key=key, password=password[0], certificate_chain=chain, provenance=provenance,
                             storage_options=state.storage_options)
        except errors.SigningError as exc:
            if getattr(exc, "reason", "") != "password required" or not sys.stdin.isatty():
                raise
            password[0] = click.prompt(f"Password for {key}", hide_input=True, err=True)
            report = ms.sign(path, key=key, password=password[0], certificate_chain=chain, provenance=provenance,
                             storage_options=state.storage_options)
        text = (f"signed {path} -> {report.signature}\n  key {report.signer}"
                f"{f' (certificate {report.certificate})' if report.certificate else ''}, {report.files} files")
        return {"path": path, **report.to_dict()}, text, True

    run_each(state, paths, work)


def _provenance(provenance_file: str | None, git: bool) -> dict[str, Any] | None:
    provenance: dict[str, Any] = {}
    if provenance_file:
        try:
            provenance = json.loads(Path(provenance_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read a JSON object from {provenance_file!r}: {exc}",
                                     param_hint="--provenance") from None
        if not isinstance(provenance, dict):
            raise click.BadParameter(f"{provenance_file!r} holds a JSON {type(provenance).__name__}, not an object",
                                     param_hint="--provenance")
    if git:
        provenance["git"] = True
    return provenance or None
