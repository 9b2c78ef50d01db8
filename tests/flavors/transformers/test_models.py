"""PreTrainedModels with their tokenizers and processors: saved here, loaded in fresh processes."""

from __future__ import annotations

import json
import textwrap
import zipfile

import numpy as np
import pytest

import modelsafe as ms

TEXTS = ["the cat sat on the mat", "a red dog", "save and load the model safely", "quick brown fish"]


def _logits(model, tokenizer, texts):
    import torch

    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits.numpy()


def test_bert_classifier_with_wordpiece_tokenizer_predicts_the_same_in_a_fresh_process(tmp_path, fresh, tokenizer,
                                                                                       classifier):
    manifest = ms.save(classifier, tmp_path / "bert.msafe", preprocess=tokenizer, sample=TEXTS)
    assert manifest.flavor == "transformers"
    assert manifest.components["preprocess"].data["role"] == "tokenizer"
    members = set(manifest.members)
    assert {"preprocess/files/tokenizer.json", "preprocess/files/tokenizer_config.json",
            "preprocess/files/special_tokens_map.json"} <= members
    assert not any(m.endswith((".pkl", ".bin", ".pickle")) for m in members)
    assert {"transformers", "tokenizers", "torch"} <= set(manifest.environment["packages"])
    np.save(tmp_path / "expected.npy", _logits(classifier, tokenizer, TEXTS))
    fresh(f"""
        import numpy as np, modelsafe as ms
        bundle = ms.load("bert.msafe")
        assert type(bundle.model).__name__ == "BertForSequenceClassification"
        assert not bundle.model.training
        assert type(bundle.preprocess).__name__ == "PreTrainedTokenizerFast"
        assert np.array_equal(bundle.predict({TEXTS!r}), np.load("expected.npy"))
        assert bundle.predict({TEXTS[:1]!r}).shape == (1, 3)
        assert bundle.verify().ok
    """)


def test_a_tokenizer_with_another_vocabulary_fails_verification_at_load(tmp_path, build, tokenizer, classifier):
    path = tmp_path / "bert"
    ms.save(classifier, path, preprocess=tokenizer, sample=TEXTS)
    # The tokenizer file is replaced by one with another vocabulary, and the manifest is brought up to
    # date (as a careless re-packaging would): integrity passes, the sample's replay does not.
    other = build.wordpiece(vocab_size=60, seed=1)
    other.save_pretrained(tmp_path / "other", legacy_format=False)
    new = (tmp_path / "other" / "tokenizer.json").read_bytes()
    assert new != (path / "preprocess/files/tokenizer.json").read_bytes()
    (path / "preprocess/files/tokenizer.json").write_bytes(new)
    _rehash(path, "preprocess/files/tokenizer.json")
    with pytest.raises(ms.VerificationError) as info:
        ms.load(path)
    assert "predict" in str(info.value)
    bundle = ms.load(path, verify=False)
    assert not bundle.verify().ok


def _rehash(folder, member):
    import hashlib

    manifest = json.loads((folder / "modelsafe.json").read_text())
    data = (folder / member).read_bytes()
    manifest["members"][member] = {**manifest["members"][member], "size": len(data),
                                   "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "modelsafe.json").write_text(json.dumps(manifest))


def test_gpt2_tied_embeddings_are_stored_once_and_tied_after_load(tmp_path, fresh, build):
    tok = build.bpe()
    model = build.gpt2_lm(len(tok))
    assert model.lm_head.weight is model.transformer.wte.weight
    manifest = ms.save(model, tmp_path / "gpt2.msafe", preprocess=tok, sample=TEXTS)
    weights = manifest.components["model"].data["weights"]["data"]["weights"]
    assert weights["aliases"] == {"lm_head.weight": "transformer.wte.weight"}
    stored = sum(manifest.members[m].size for m in manifest.members if m.startswith("model/weights/"))
    unique = sum(p.numel() * p.element_size() for p in model.parameters())  # parameters() yields a tie once
    assert unique <= stored < unique + model.transformer.wte.weight.numel() * 4  # no second copy of the embedding
    np.save(tmp_path / "expected.npy", _logits(model, tok, TEXTS))
    fresh(f"""
        import numpy as np, torch, modelsafe as ms
        bundle = ms.load("gpt2.msafe")
        m = bundle.model
        assert np.array_equal(bundle.predict({TEXTS!r}), np.load("expected.npy"))
        assert m.lm_head.weight is m.transformer.wte.weight
        with torch.no_grad():
            m.transformer.wte.weight[0, 0] += 1.0           # still one tensor: the head sees the change
        assert m.lm_head.weight[0, 0] == m.transformer.wte.weight[0, 0]
        assert m.generation_config.eos_token_id == m.config.eos_token_id
    """)


def test_t5_shared_embeddings_and_slow_sentencepiece_tokenizer(tmp_path, fresh, build):
    from transformers import T5Tokenizer

    (tmp_path / "spiece.model").write_bytes(build.sentencepiece_model())
    tok = T5Tokenizer(vocab_file=str(tmp_path / "spiece.model"), extra_ids=0, legacy=False)
    assert not tok.is_fast
    model = build.t5(len(tok))
    manifest = ms.save(model, tmp_path / "t5.msafe", preprocess=tok, sample=TEXTS)
    aliases = manifest.components["model"].data["weights"]["data"]["weights"]["aliases"]
    assert set(aliases) == {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert "preprocess/files/spiece.model" in manifest.members  # the sentencepiece model, stored as data
    assert "sentencepiece" in manifest.environment["packages"]
    fresh("""
        import modelsafe as ms
        bundle = ms.load("t5.msafe")
        m = bundle.model
        assert m.shared.weight is m.encoder.embed_tokens.weight is m.decoder.embed_tokens.weight is m.lm_head.weight
        assert type(bundle.preprocess).__name__ == "T5Tokenizer"
        out = bundle.predict(["the cat"])
        assert out.shape == (1, 1, m.config.vocab_size)   # logits of the first decoder step
    """)


def test_vit_with_its_image_processor(tmp_path, fresh, build):
    import torch

    model, processor = build.vit()
    batch = build.images(3)
    manifest = ms.save(model, tmp_path / "vit.msafe", preprocess=processor, sample=batch)
    assert manifest.components["preprocess"].data["files"] == {
        "preprocessor_config.json": "files/preprocessor_config.json"}
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", model(**processor(images=batch, return_tensors="pt")).logits.numpy())
    np.save(tmp_path / "batch.npy", batch)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("vit.msafe")
        assert type(bundle.preprocess).__name__ == "ViTImageProcessor"
        assert np.array_equal(bundle.predict(np.load("batch.npy")), np.load("expected.npy"))
    """)


def test_a_model_without_tokenizer_takes_token_ids_and_explains_raw_text(tmp_path, classifier):
    import torch

    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    ms.save(classifier, tmp_path / "ids.msafe", sample={"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    bundle = ms.load(tmp_path / "ids.msafe")
    with torch.no_grad():
        expected = classifier(input_ids=ids).logits.numpy()
    assert np.array_equal(bundle.predict({"input_ids": ids.numpy(), "attention_mask": np.ones((2, 6), np.int64)}),
                          expected)
    with pytest.raises(ms.FlavorError, match="preprocess=tokenizer"):
        bundle.predict(["raw text"], check=False)  # past the input guard, which refuses texts for a dict schema


def test_custom_model_class_from_main_needs_trust_code(tmp_path, fresh):
    fresh.script("train.py", """
        import os
        os.environ.setdefault("USE_TF", "0")
        import torch, modelsafe as ms
        from transformers import BertConfig, BertModel, BertPreTrainedModel

        class MeanPooled(BertPreTrainedModel):
            def __init__(self, config):
                super().__init__(config)
                self.bert = BertModel(config, add_pooling_layer=False)
                self.head = torch.nn.Linear(config.hidden_size, 2)
                self.post_init()

            def forward(self, input_ids, attention_mask=None):
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return {"logits": self.head(hidden.mean(dim=1))}

        torch.manual_seed(0)
        model = MeanPooled(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=20)).eval()
        ids = torch.randint(0, 50, (3, 5))
        ms.save(model, "custom.msafe", sample={"input_ids": ids})
    """)
    manifest = ms.inspect(tmp_path / "custom.msafe")
    assert manifest.code[0]["symbols"] == ["MeanPooled"]
    refused = fresh("""
        import modelsafe as ms
        try:
            ms.load("custom.msafe")
        except ms.UntrustedContentError as exc:
            print("refused", exc.modules)
    """)
    assert "refused ['__main__']" in refused.stdout
    fresh("""
        import modelsafe as ms
        bundle = ms.load("custom.msafe", trust_code=True)
        assert type(bundle.model).__name__ == "MeanPooled" and bundle.verify().ok
    """)


def test_a_class_path_that_is_not_transformers_own_is_refused_before_import(tmp_path, classifier):
    path = tmp_path / "edited"
    ms.save(classifier, path)
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["components"]["model"]["data"]["class"] = ["subprocess", "Popen"]
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    with pytest.raises(ms.UntrustedContentError) as info:
        ms.load(path)
    assert info.value.globals == ["subprocess.Popen"]
    assert "trusted=" in str(info.value)


def test_a_model_class_that_is_not_a_pretrained_model_is_refused(tmp_path, classifier):
    path = tmp_path / "edited"
    ms.save(classifier, path)
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["components"]["model"]["data"]["class"] = ["transformers.pipelines.base", "Pipeline"]
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    with pytest.raises(ms.UntrustedContentError, match="not a subclass of transformers.PreTrainedModel"):
        ms.load(path)


def test_a_config_that_builds_other_shapes_is_an_architecture_mismatch(tmp_path, classifier):
    path = tmp_path / "edited"
    ms.save(classifier, path)
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["components"]["model"]["data"]["config"]["num_labels"] = 5
    manifest["components"]["model"]["data"]["config"]["id2label"] = {str(i): f"L{i}" for i in range(5)}
    manifest["components"]["model"]["data"]["config"]["label2id"] = {f"L{i}": i for i in range(5)}
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    with pytest.raises(ms.ArchitectureMismatchError) as info:
        ms.load(path)
    assert set(info.value.mismatched) == {"classifier.weight", "classifier.bias"}
    assert info.value.mismatched["classifier.bias"] == ((3,), (5,))


def test_single_file_artifact_is_a_plain_zip_with_safetensors_weights(tmp_path, classifier, tokenizer):
    from safetensors import safe_open

    ms.save(classifier, tmp_path / "m.msafe", preprocess=tokenizer, sample=TEXTS)
    with zipfile.ZipFile(tmp_path / "m.msafe") as zf:
        zf.extract("model/weights/weights-0.safetensors", tmp_path)
    with safe_open(str(tmp_path / "model/weights/weights-0.safetensors"), framework="pt") as f:
        assert "classifier.weight" in set(f.keys())


def test_device_and_memory_map_options(tmp_path, classifier, tokenizer):
    ms.save(classifier, tmp_path / "m.msafe", preprocess=tokenizer, sample=TEXTS)
    copied = ms.load(tmp_path / "m.msafe", device="cpu", mmap=False)
    assert str(copied.model.device) == "cpu"
    with pytest.raises(ms.FlavorError, match="CUDA"):
        ms.load(tmp_path / "m.msafe", device="cuda:3")


def test_a_feature_extractor_saved_on_its_own(tmp_path, fresh):
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=8000, padding_value=0.0, do_normalize=True)
    audio = np.random.default_rng(0).normal(size=(3, 800)).astype(np.float32)
    manifest = ms.save(extractor, tmp_path / "fe.msafe", sample=audio)
    assert manifest.components["model"].data["role"] == "feature_extractor"
    assert set(manifest.verification["outputs"]) == {"predict.input_values"}  # return_attention_mask=False
    np.save(tmp_path / "audio.npy", audio)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("fe.msafe")
        assert type(bundle.model).__name__ == "Wav2Vec2FeatureExtractor" and bundle.model.sampling_rate == 8000
        values = bundle.predict(np.load("audio.npy"))["input_values"].numpy()
        assert values.shape == (3, 800) and abs(float(values.mean())) < 1e-3   # normalized per row
    """)


def test_custom_config_and_model_from_a_local_module(tmp_path, fresh):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "tinymodels.py").write_text(textwrap.dedent("""
        import torch
        from transformers import PretrainedConfig, PreTrainedModel

        class TinyConfig(PretrainedConfig):
            model_type = "tiny-local"

            def __init__(self, width=8, **kwargs):
                self.width = width
                super().__init__(**kwargs)

        class TinyModel(PreTrainedModel):
            config_class = TinyConfig

            def __init__(self, config):
                super().__init__(config)
                self.embed = torch.nn.Embedding(20, config.width)
                self.out = torch.nn.Linear(config.width, 2)
                self.post_init()

            def forward(self, input_ids):
                return {"logits": self.out(self.embed(input_ids).mean(dim=1))}
    """))
    fresh("""
        import os
        os.environ.setdefault("USE_TF", "0")
        import torch, modelsafe as ms
        from tinymodels import TinyConfig, TinyModel
        torch.manual_seed(0)
        ms.save(TinyModel(TinyConfig(width=6)).eval(), "../tiny.msafe", sample={"input_ids": torch.randint(0, 20, (3, 4))})
    """, cwd=tmp_path / "project")
    manifest = ms.inspect(tmp_path / "tiny.msafe")
    assert manifest.components["model"].data["config_class"] == ["tinymodels", "TinyConfig"]
    assert [r["module"] for r in manifest.code] == ["tinymodels"]
    fresh("""
        import modelsafe as ms                       # run from the project: its own tinymodels.py is used
        bundle = ms.load("../tiny.msafe")
        assert bundle.model.config.width == 6 and bundle.verify().ok
    """, cwd=tmp_path / "project")
    refused = fresh("""
        import modelsafe as ms                       # elsewhere: only the bundled copy, behind the trust gate
        try:
            ms.load("tiny.msafe")
        except ms.UntrustedContentError as exc:
            print("refused", exc.modules)
        print(type(ms.load("tiny.msafe", trust_code=True).model).__name__)
    """)
    assert "refused ['tinymodels']" in refused.stdout and "TinyModel" in refused.stdout
