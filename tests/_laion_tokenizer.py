"""RoBERTa-style tokenizer files (``vocab.json``, ``merges.txt``) made here, offline.

* :func:`small_files`: a real byte-level BPE vocabulary (the 256 byte symbols of
  GPT-2/RoBERTa, a few merges, the special tokens at RoBERTa's ids), about 290
  tokens: what a mirror serves in the rehearsal, and the tokenizer of the
  text-parity test.
* :func:`roberta_shaped_files`: 50,265 tokens in which ``"Hello world"`` becomes
  ``[0, 31414, 232, 2]`` as in the real roberta-base: passes
  :func:`clapnb.laion.check_roberta_tokenizer`, so the download path of the real
  files can be tested without them.
"""

from __future__ import annotations

import json

SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}


def byte_symbols() -> list[str]:
    """GPT-2's ``bytes_to_unicode``: one printable character per byte value."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _merges_for(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that build each word from its characters."""
    merges = []
    for word in words:
        for i in range(2, len(word) + 1):
            pair = (word[:i - 1], word[i - 1])
            if pair not in merges:
                merges.append(pair)
    return merges


def _files(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, bytes]:
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return {"vocab.json": json.dumps(vocab, ensure_ascii=False).encode(),
            "merges.txt": merges_txt.encode()}


def small_files() -> dict[str, bytes]:
    """A ~290-token byte-level BPE tokenizer in RoBERTa's layout."""
    vocab = dict(SPECIALS)
    for symbol in byte_symbols():
        vocab.setdefault(symbol, len(vocab))
    merges = _merges_for(["Ġdog", "Ġbarks", "Ġrain", "Ġon", "Ġa", "Ġroof", "the"])
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<mask>"] = len(vocab)
    return _files(vocab, merges)


def roberta_shaped_files() -> dict[str, bytes]:
    """50,265 tokens; ``"Hello world"`` -> ``[0, 31414, 232, 2]`` as in roberta-base."""
    size, fixed = 50265, {"Hello": 31414, "Ġworld": 232, "<mask>": 50264, **SPECIALS}
    merges = _merges_for(["Hello", "Ġworld"])
    needed = byte_symbols() + [a + b for a, b in merges]
    free = (i for i in range(size) if i not in fixed.values())
    vocab = dict(fixed)
    for symbol in needed:
        if symbol not in vocab:
            vocab[symbol] = next(free)
    for i in free:
        vocab[f"<filler{i}>"] = i
    assert len(vocab) == size and sorted(vocab.values()) == list(range(size))
    return _files(vocab, merges)
