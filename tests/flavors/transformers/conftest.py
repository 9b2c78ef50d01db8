"""Tiny transformers models, tokenizers and processors, all built here (nothing comes from a hub)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

os.environ.setdefault("USE_TF", "0")  # PyTorch models only: transformers need not import TensorFlow

WORDS = ("the cat dog sat on a mat red blue green fast slow model safe load save token text bird fish tree "
         "house river stone cloud light dark small large quick lazy").split()
TEXTS = ["the cat sat on the mat", "a red dog", "save and load the model safely", "quick brown fish"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) for _ in range(n)]


def wordpiece(vocab_size: int = 90, seed: int = 0):
    """A BERT-style WordPiece tokenizer trained on a generated corpus, as a PreTrainedTokenizerFast."""
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.train_from_iterator(corpus(seed=seed), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tk.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def bpe(vocab_size: int = 120):
    """A GPT-2-style byte-level BPE tokenizer trained on a generated corpus, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=64)


def sentencepiece_model(vocab_size: int = 48) -> bytes:
    """A unigram sentencepiece model trained on a generated corpus (the bytes of a ``spiece.model``)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=out, vocab_size=vocab_size,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return out.getvalue()


def bert_classifier(vocab_size: int, seed: int = 0):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(config).eval()


def gpt2_lm(vocab_size: int, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()


def t5(vocab_size: int, seed: int = 0):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(config).eval()


def vit(seed: int = 0):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=37, num_labels=4)
    return ViTForImageClassification(config).eval(), ViTImageProcessor(size={"height": 32, "width": 32})


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tokenizer():
    return wordpiece()


@pytest.fixture(scope="session")
def classifier(tokenizer):
    return bert_classifier(len(tokenizer))


@pytest.fixture(scope="session")
def build():
    """The builders above, for tests that need their own models and tokenizers."""
    import types

    return types.SimpleNamespace(wordpiece=wordpiece, bpe=bpe, sentencepiece_model=sentencepiece_model,
                                 bert_classifier=bert_classifier, gpt2_lm=gpt2_lm, t5=t5, vit=vit, images=images,
                                 corpus=corpus, texts=list(TEXTS))
