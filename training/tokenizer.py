"""A small BPE tokenizer for the toolkit's own models, built with ``tokenizers``.

Digits are split one per token (so a puzzle grid or a number is decided digit by digit, the
dependency structure parallel decoding has to respect); words keep their leading space
(Metaspace), so names become single tokens once the merges are learned. Saved as
``tokenizer.json`` with mask, end-of-text and pad tokens; ``transformers.AutoTokenizer`` loads it.
"""

from __future__ import annotations

import string
from typing import Iterable

MASK, EOS, PAD, UNK = "<|mdm_mask|>", "<|endoftext|>", "<|pad|>", "<|unk|>"


# Every printable ASCII character and the newline, so a model can write any such text (ParallelBench's
# lists and grids: quotes, brackets, newlines, every letter and digit) even where the training data
# never shows a character. "▁" is Metaspace's space.
PRINTABLE = sorted(set(string.printable) - set(" \t\r\x0b\x0c")) + ["\u2581"]
ALPHABETS = {"data": None, "printable": PRINTABLE}


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024, alphabet: str = "data"):
    """``alphabet``: "data" (the characters of the texts) or "printable" (all printable ASCII and
    newline besides)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    # Free text (printable): punctuation and newlines are tokens of their own, so a name is the same
    # token inside a prompt's list and in the answer ('["Walter' and '\n\n["Walter' both hold
    # 'Walter'). Without this, merges over space-split chunks fuse names with the quotes, brackets
    # and newlines around them, and copying a list becomes a lookup between different tokens.
    split = ([pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Punctuation("contiguous")]
             if alphabet == "printable" else [])
    scheme = "never" if split else "always"  # split pieces keep their own spaces: decode gives the text back
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        split + [pre_tokenizers.Metaspace(prepend_scheme=scheme), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace(prepend_scheme=scheme)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, MASK, PAD, UNK], min_frequency=2,
                                  show_progress=False, initial_alphabet=ALPHABETS[alphabet] or [])
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, mask_token=MASK, pad_token=PAD,
                                   unk_token=UNK, clean_up_tokenization_spaces=False)
