"""A small Llama-2-layout SentencePiece vocabulary, for tokenizer and constrained-decoding tests."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

SPM_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there, general kenobi",
    "¿Cuál es la capital de España? Madrid es la capital.",
    "def main():\n    print('hello world')\n",
    "numbers like 12345 and 678 are numbers",
    "the theory of the thesis: there and then",
]


def llama2_style_tokenizer_json(directory: Path) -> Path:
    """A small Llama-2-layout tokenizer.json: <unk> <s> </s>, 256 byte tokens, trained pieces."""
    trainer_tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Replace(" ", "\u2581")
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=220, special_tokens=[], show_progress=False)
    trainer_tok.train_from_iterator(SPM_CORPUS * 10, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [t for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1])]
    vocab = {t: i for i, t in enumerate(pieces)}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in trained["merges"]],
                                unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    hf.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    hf.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])
    from tokenizers import AddedToken

    hf.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t in ("<unk>", "<s>", "</s>")])
    path = directory / "tokenizer.json"
    hf.save(str(path))
    return path
