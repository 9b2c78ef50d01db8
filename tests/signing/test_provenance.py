"""Provenance: recorded by ``save`` in the manifest, signed by ``sign`` in the statement, shown by inspect."""

from __future__ import annotations

import hashlib
import pickle
import subprocess

import pytest

import modelsafe as ms


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "training-code"
    repo.mkdir()
    (repo / "train.py").write_text("print('train')\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "exp"], ["add", "train.py"], ["commit", "-q", "-m", "first"],
                 ["remote", "add", "origin", "https://example.com/team/models.git"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return repo


def test_save_records_git_datasets_and_free_fields(tmp_path, kit, repo, fresh):
    data = tmp_path / "train.csv"
    data.write_bytes(b"a,b\n1,2\n")
    given = {"git": repo, "datasets": [data, "s3://bucket/extra.parquet", {"uri": "hf://d/x", "sha256": "ab" * 32}],
             "experiment": {"id": 7, "lr": 0.01, "tags": ["baseline"]}}
    path = kit.save(tmp_path / "model.msafe", provenance=given)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    proc = fresh(f"import modelsafe as ms, json; print(json.dumps(dict(ms.inspect({str(path)!r}).provenance)))")
    import json

    recorded = json.loads(proc.stdout)
    assert recorded["git"] == {"commit": commit, "dirty": False, "branch": "exp",
                               "remote": "https://example.com/team/models.git"}
    assert recorded["datasets"] == [
        {"uri": data.resolve().as_uri(), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "size": 8},
        {"uri": "s3://bucket/extra.parquet"}, {"uri": "hf://d/x", "sha256": "ab" * 32}]
    assert recorded["experiment"] == {"id": 7, "lr": 0.01, "tags": ["baseline"]}
    assert "provenance (recorded at save)" in str(ms.inspect(path))


def test_the_signed_statement_always_holds_version_environment_and_the_save_record(tmp_path, kit, keys):
    path = kit.save(tmp_path / "model", provenance={"owner": "risk", "stage": "dev"})
    report = ms.sign(path, key=keys.private, provenance={"stage": "prod", "approved_by": "ana"})
    checked = ms.verify_signature(path, trusted_keys=[keys.public])
    manifest = ms.inspect(path)
    assert checked.provenance == report.provenance
    signed = checked.provenance
    assert signed["signed_with"] == f"modelsafe {ms.__version__}" and signed["signed_at"]
    assert signed["artifact"] == {"created": manifest.created, "modelsafe_version": manifest.modelsafe_version,
                                  "format_version": 1, "flavor": "sklearn"}
    assert signed["environment"]["packages"]["scikit-learn"] == manifest.environment["packages"]["scikit-learn"][
        "version"]
    assert signed["owner"] == "risk" and signed["stage"] == "prod" and signed["approved_by"] == "ana"


def test_convert_passes_provenance_to_the_artifact(tmp_path, kit):
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(pickle.dumps(kit.small_model[0]))
    manifest = ms.convert(legacy, tmp_path / "converted.msafe", provenance={"origin": "legacy pickle"})
    assert manifest.provenance == {"origin": "legacy pickle"} and manifest.source["kind"] == "pickle"


@pytest.mark.parametrize("given, message", [
    ("git", "provenance must be a mapping"),
    ({"git": 3}, r"provenance\['git'\] must be True, a path inside a git repository, or a mapping"),
    ({"datasets": ["missing.csv"]}, "is not a file here, so its digest cannot be recorded"),
    ({"datasets": [{"sha256": "00"}]}, "must have a 'uri' string"),
    ({"score": float("nan")}, "provenance.score is nan, which JSON cannot hold"),
    ({"rows": 2**60}, "beyond 2\\*\\*53"),
    ({"when": object()}, "provenance.when has the type object, not a JSON type"),
])
def test_provenance_that_cannot_be_recorded_stops_the_save(tmp_path, kit, given, message):
    with pytest.raises(ms.SaveError, match=message):
        kit.save(tmp_path / "model.msafe", provenance=given)
    assert not (tmp_path / "model.msafe").exists()


def test_git_outside_a_repository(tmp_path, kit, keys):
    path = kit.save(tmp_path / "model.msafe")
    with pytest.raises(ms.SigningError, match="Cannot record the git commit of .*not a git repository") as info:
        ms.sign(path, key=keys.private, provenance={"git": tmp_path})
    assert info.value.path == str(tmp_path) and not kit.sig_of(path).exists()
