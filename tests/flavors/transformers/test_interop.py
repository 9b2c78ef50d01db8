"""save_pretrained folders: ms.convert from them, ms.export to them, ms.doctor on them."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest

import modelsafe as ms

TEXTS = ["the cat sat on the mat", "a red dog", "save and load the model safely"]


def _logits(model, tokenizer, texts):
    import torch

    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits.numpy()


def test_convert_a_safetensors_folder_with_its_tokenizer_and_verify_it(tmp_path, fresh, tokenizer, classifier):
    folder = tmp_path / "hf"
    classifier.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    manifest = ms.convert(folder, tmp_path / "conv.msafe", sample=TEXTS)
    assert manifest.source["path"] == str(folder.resolve())
    assert set(manifest.components) == {"model", "preprocess"}
    np.save(tmp_path / "expected.npy", _logits(classifier, tokenizer, TEXTS))
    fresh(f"""
        import numpy as np, modelsafe as ms
        bundle = ms.load("conv.msafe")
        assert np.array_equal(bundle.predict({TEXTS!r}), np.load("expected.npy"))
    """)


def test_convert_a_pickled_bin_folder_through_the_restricted_reader(tmp_path, build):
    import torch

    tok = build.bpe()
    model = build.gpt2_lm(len(tok))
    folder = tmp_path / "hf"
    model.save_pretrained(folder, safe_serialization=False)
    tok.save_pretrained(folder)
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").exists()
    ms.convert(folder, tmp_path / "conv.msafe", sample=TEXTS)
    bundle = ms.load(tmp_path / "conv.msafe")
    assert bundle.model.lm_head.weight is bundle.model.transformer.wte.weight
    with torch.no_grad():
        expected = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    assert np.array_equal(bundle.predict(TEXTS), expected)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _malicious_bin(path, marker):
    """A torch zip checkpoint whose pickle calls os.system: torch.load(weights_only=False) would run it."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"bert.pooler.dense.bias": _RunsCommand(marker)}, protocol=2))
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")


def test_a_malicious_pytorch_model_bin_is_refused_with_nothing_run(tmp_path, classifier):
    folder = tmp_path / "hf"
    classifier.save_pretrained(folder, safe_serialization=False)
    marker = tmp_path / "pwned"
    _malicious_bin(folder / "pytorch_model.bin", marker)
    with pytest.raises(ms.UntrustedContentError) as info:
        ms.convert(folder, tmp_path / "conv.msafe")
    assert "posix.system" in info.value.globals or "os.system" in info.value.globals
    assert not marker.exists() and not (tmp_path / "conv.msafe").exists()
    report = ms.doctor(folder)
    assert not report.ok
    assert any(p.subject == "pytorch_model.bin" and "more than a state dict" in p.what for p in report.problems)
    assert not marker.exists()


def test_a_bin_holding_more_than_tensors_is_refused_even_when_its_globals_are_trusted(tmp_path, classifier):
    import torch

    folder = tmp_path / "hf"
    classifier.save_pretrained(folder, safe_serialization=False)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "note": {"epoch": 3}}, folder / "pytorch_model.bin")
    with pytest.raises(ms.UntrustedContentError, match="not only named tensors"):
        ms.convert(folder, tmp_path / "conv.msafe")


def test_a_folder_needing_remote_code_is_refused(tmp_path, classifier):
    folder = tmp_path / "hf"
    classifier.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("# coding=utf-8\nimport os\nos.system('echo pwned')\n")
    with pytest.raises(ms.UntrustedContentError, match="trust_remote_code"):
        ms.convert(folder, tmp_path / "conv.msafe")
    report = ms.doctor(folder)
    assert any(p.subject == "trust_remote_code" and "modeling_evil.EvilModel" in p.what for p in report.problems)


def test_doctor_explains_a_save_pretrained_folder(tmp_path, build):
    tok = build.bpe()
    model = build.gpt2_lm(len(tok))
    folder = tmp_path / "hf"
    model.save_pretrained(folder, safe_serialization=False)
    tok.save_pretrained(folder)
    report = ms.doctor(folder)
    assert report.facts["classes"] == "GPT2LMHeadModel" and report.facts["model type"] == "gpt2"
    assert report.facts["weights"] == "pytorch_model.bin"
    assert "tokenizer" in report.facts["with it"] and "generation config" in report.facts["with it"]
    assert "config.json" in report.facts["files"]
    assert report.ok, report  # pickled weights are a warning: they load, but only safetensors are safe
    assert any(p.subject == "pytorch_model.bin" and p.severity == "warning" for p in report.problems)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt9", "architectures": ["GPT9"]}))
    unknown = ms.doctor(folder)
    assert not unknown.ok and any(p.subject == "gpt9" for p in unknown.errors())


def test_export_to_a_folder_that_from_pretrained_reads(tmp_path, fresh, tokenizer, classifier):
    ms.save(classifier, tmp_path / "m.msafe", preprocess=tokenizer, sample=TEXTS)
    written = ms.export(tmp_path / "m.msafe", tmp_path / "hf", to="huggingface")
    assert written == tmp_path / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in written.iterdir()}
    np.save(tmp_path / "expected.npy", _logits(classifier, tokenizer, TEXTS))
    fresh(f"""
        import numpy as np, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained("hf", local_files_only=True).eval()
        tok = AutoTokenizer.from_pretrained("hf", local_files_only=True)
        with torch.no_grad():
            got = model(**tok({TEXTS!r}, padding=True, truncation=True, return_tensors="pt")).logits.numpy()
        assert np.array_equal(got, np.load("expected.npy"))
    """)


def test_export_of_a_pipeline_and_of_a_non_transformers_model(tmp_path, tokenizer, classifier, classification_data):
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    ms.save(pipeline("text-classification", model=classifier, tokenizer=tokenizer), tmp_path / "p.msafe",
            sample=TEXTS)
    folder = ms.export(tmp_path / "p.msafe", tmp_path / "hf", to="huggingface")
    assert AutoTokenizer.from_pretrained(folder, local_files_only=True).vocab == tokenizer.vocab
    assert AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).num_labels == 3
    X, y = classification_data
    ms.save(LogisticRegression().fit(X, y), tmp_path / "lr.msafe")
    with pytest.raises(ms.UnsupportedModelError, match="only transformers models"):
        ms.export(tmp_path / "lr.msafe", tmp_path / "lr-hf", to="huggingface")


def test_command_line_export_convert_and_doctor(tmp_path, cli, tokenizer, classifier):
    ms.save(classifier, tmp_path / "m.msafe", preprocess=tokenizer, sample=TEXTS)
    exported = cli("export", str(tmp_path / "m.msafe"), str(tmp_path / "hf"), "--to", "huggingface", "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["destination"] == str(tmp_path / "hf")
    doctor = cli("doctor", str(tmp_path / "hf"), "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    facts = json.loads(doctor.stdout)["facts"]
    assert facts["classes"] == "BertForSequenceClassification" and facts["weights"] == "model.safetensors"
    converted = cli("convert", str(tmp_path / "hf"), str(tmp_path / "back.msafe"))
    assert converted.returncode == 0, converted.stderr
    assert ms.inspect(tmp_path / "back.msafe").components["preprocess"].flavor == "transformers"
