"""Tokenizers trained offline with the `tokenizers` library for the tiny models."""

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tiny_models.corpus import tokenizer_corpus

# vLLM's Gemma3 processor looks these up as single vocabulary entries (KeyError: '\n' otherwise).
GEMMA_NEWLINES = ("\n", "\n\n", "\n\n\n", "\n\n\n\n")
REASONING_TAGS = ("<think>", "</think>", "<solution>", "</solution>")


def train_sentencepiece_like(vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """Metaspace BPE with byte fallback, like Gemma's SentencePiece model."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token=None, fuse_unk=False))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens + byte_tokens,
        show_progress=False,
        initial_alphabet=[],
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer.normalizer = None  # Metaspace's own replacement suffices at encode time
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tokenizer.add_tokens([AddedToken(text, normalized=False, special=False) for text in GEMMA_NEWLINES])
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in REASONING_TAGS])
    return tokenizer


def train_byte_level(vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """Byte-level BPE, like Qwen's tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in REASONING_TAGS])
    return tokenizer


def wrap(tokenizer: Tokenizer, chat_template: str, **special: object) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    wrapped.chat_template = chat_template
    return wrapped
