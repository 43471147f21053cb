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


def extend_alphabet(tokenizer, alphabet: str):
    """``tokenizer`` (a BPE ``PreTrainedTokenizerFast``) with every character of ``alphabet`` it lacks
    added as a token of its own, after the existing ids (ids, merges and pre-tokenization unchanged:
    text it could already write tokenizes exactly as before). -> (tokenizer, number added)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    missing = [c for c in ALPHABETS[alphabet] or [] if c not in vocab]
    if not missing:
        return tokenizer, 0
    top = max(len(tokenizer), max(vocab.values()) + 1)
    for i, c in enumerate(missing):
        vocab[c] = top + i
    out = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=EOS, mask_token=MASK,
                                  pad_token=PAD, unk_token=UNK, clean_up_tokenization_spaces=False)
    return out, len(missing)


def split_lines(tokenizer):
    """``tokenizer`` (a Metaspace BPE ``PreTrainedTokenizerFast`` that could not write a newline) with
    each run of newlines a pre-token of its own, so a merge never joins a line's end to the next
    line's start ('Harper"]' + newlines + 'Please'), and the leading space added to the text's first
    piece only, so decode gives multi-line text back. A text without a newline pre-tokenizes exactly
    as before (one piece, the space added at its start)."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    spec = json.loads(backend.to_str())
    pre = spec["pre_tokenizer"]
    rest = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
    kinds = [p["type"] for p in rest]
    if "Metaspace" not in kinds or kinds[0] == "Split":  # not a Metaspace BPE, or already split
        return tokenizer
    digits = [pre_tokenizers.Digits(individual_digits=True)] if "Digits" in kinds else []
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n+"), "isolated"), pre_tokenizers.Metaspace(prepend_scheme="first")] + digits)
    backend.decoder = decoders.Metaspace(prepend_scheme="first")
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, mask_token=MASK, pad_token=PAD,
                                   unk_token=UNK, clean_up_tokenization_spaces=False)


def _kind(piece: str) -> str:
    """A token's kind for merging: "word" (letters, after an optional leading space), "space" (the
    space alone), "sym" (punctuation and newlines, after an optional space) or "mixed"."""
    core = piece[1:] if piece.startswith("\u2581") else piece
    if not core:
        return "space"
    if core.isalpha():
        return "word"
    return "sym" if not any(c.isalnum() or c == "\u2581" for c in core) else "mixed"


def same_kind(left: str, right: str) -> bool:
    """A merge keeps words and punctuation apart: a name is then the same token inside a prompt's
    list ('["Wendy') and in an answer (' ["Wendy'), whatever quotes, brackets or spaces stand around it."""
    a, b = _kind(left), _kind(right)
    if right.startswith("\u2581"):
        return False
    return (a in ("space", "word") and b == "word") or (a in ("space", "sym") and b == "sym")


def learn_merges(tokenizer, texts: Iterable[str], keep: Iterable[str], n: int):
    """``tokenizer`` (a BPE ``PreTrainedTokenizerFast``) with up to ``n`` merges learned from
    ``texts`` (BPE's rule: the most frequent adjacent pair of a pre-token's current tokens, again and
    again), appended after its own (a merged string already in the vocabulary keeps its id). The
    texts of ``keep`` tokenize exactly as before: a pair that sits side by side in their
    tokenization is never merged (old merges all rank first, so a new one only ever sees what the
    old ones leave), nor is a pair that joins a word to punctuation (:func:`same_kind`).
    -> (tokenizer, merges added)."""
    import json
    from collections import Counter

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer
    spec = json.loads(backend.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    pieces = lambda text: [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text)]  # noqa: E731
    tokens_of = lambda word: backend.model.tokenize(word)  # noqa: E731
    banned = set()
    for word in {w for text in keep for w in pieces(text)}:  # distinct words: a mixture repeats its names
        toks = [t.value for t in tokens_of(word)]
        banned.update(zip(toks, toks[1:]))
    words = Counter(w for text in texts for w in pieces(text))
    seqs = {w: [t.value for t in tokens_of(w)] for w in words}
    added = 0
    while added < n:
        pairs = Counter()
        for w, seq in seqs.items():
            for p in zip(seq, seq[1:]):
                pairs[p] += words[w]
        fresh = (p for p, c in pairs.most_common() if c >= 2 and p not in banned and same_kind(*p))
        best = next(fresh, None)
        if best is None:
            break
        merged = best[0] + best[1]
        if merged not in vocab:  # a merge may also rebuild an existing token by another route ('e'+'nd')
            vocab[merged] = max(vocab.values()) + 1
        merges.append(list(best))
        added += 1
        for w, seq in seqs.items():  # apply the merge left to right, as BPE does
            i, out = 0, []
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    out = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=EOS, mask_token=MASK,
                                  pad_token=PAD, unk_token=UNK, clean_up_tokenization_spaces=False)
    return out, added
