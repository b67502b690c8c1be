"""A tokenizer of MedGemma's real size (262,145 entries, as the Gemma 3 tokenizer has), built offline
with the `tokenizers` library, its special tokens at the ids MedGemma-4B's config names.

Only a few hundred entries are real subwords (a SentencePiece-like BPE trained on our prompts, see
`tiny_models.tokenizer`); every other id holds a placeholder `<unusedN>` that encoding never
produces and decoding spells out. What a 262k vocabulary changes downstream (the [tokens, 262k]
logits, the embedding and output matrices, vLLM's detokenizer, the sampler) is then real, while the
tokenizer still builds in seconds and deterministically.
"""

import json

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from tiny_models.tokenizer import GEMMA_NEWLINES, REASONING_TAGS, train_sentencepiece_like

# MedGemma-4B's tokenizer: 262,144 pieces plus <image_soft_token> appended at 262144.
TOKENIZER_SIZE = 262_145
# The ids MedGemma-4B's config.json and generation_config.json name (pad, eos [1, 106], bos, the
# image markers) and the Gemma 3 tokenizer's own for the rest of the turn markup.
FIXED_IDS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<mask>": 4,
    "<start_of_turn>": 105,
    "<end_of_turn>": 106,
    "<start_of_image>": 255_999,  # boi_token_index
    "<end_of_image>": 256_000,  # eoi_token_index
    "<image_soft_token>": 262_144,  # image_token_index
}
SPECIAL_TOKENS = tuple(FIXED_IDS)
FIRST_FREE_ID = 107  # newlines, reasoning tags and the trained subwords from here on
TRAINED_PIECES = 1024  # the trained BPE's own vocabulary (byte fallback included)


def full_size_tokenizer(size: int = TOKENIZER_SIZE, fixed_ids: dict[str, int] | None = None) -> Tokenizer:
    """A Metaspace BPE with byte fallback over `size` ids; `fixed_ids` (default `FIXED_IDS`) are
    special tokens at exactly those ids."""
    fixed_ids = dict(FIXED_IDS if fixed_ids is None else fixed_ids)
    if max(fixed_ids.values()) >= size or len(set(fixed_ids.values())) != len(fixed_ids):
        raise ValueError(f"fixed ids must be distinct and below the size {size}")
    trained = train_sentencepiece_like(TRAINED_PIECES, [])
    trained_vocab = trained.get_vocab(with_added_tokens=False)
    pieces = [*GEMMA_NEWLINES, *REASONING_TAGS] + sorted(trained_vocab, key=trained_vocab.__getitem__)
    vocab = dict(fixed_ids)
    taken = set(fixed_ids.values())
    free = (index for index in range(FIRST_FREE_ID, size) if index not in taken)
    for piece in pieces:
        if piece not in vocab:
            vocab[piece] = next(free)
    used = set(vocab.values())
    vocab.update({f"<unused{index}>": index for index in range(size) if index not in used})
    merges = [
        tuple(pair.split(" ", 1)) if isinstance(pair, str) else tuple(pair) for pair in _merges(trained)
    ]
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token=None, fuse_unk=False)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    # Already in the vocabulary: registering them keeps their ids and makes them match whole.
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in fixed_ids])
    tokenizer.add_tokens(
        [AddedToken(text, normalized=False, special=False) for text in (*GEMMA_NEWLINES, *REASONING_TAGS)]
    )
    assert tokenizer.get_vocab_size(with_added_tokens=True) == size
    return tokenizer


def _merges(tokenizer: Tokenizer) -> list:
    return json.loads(tokenizer.to_str())["model"]["merges"]
