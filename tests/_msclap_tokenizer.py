"""GPT-2 and BERT tokenizer files made here, offline, for the msclap tests.

* :func:`gpt2_small_files`: a real byte-level BPE vocabulary in GPT-2's layout (the 256
  byte symbols first, in GPT-2's order, so that ``"!"`` is id 0; a few merges;
  ``<|endoftext|>`` last), about 300 tokens: fits the one-layer GPT-2 of the random models.
* :func:`gpt2_shaped_files`: 50,257 tokens in which ``"Hello world"`` becomes
  ``[15496, 995]`` and ``<|endoftext|>`` is 50256, as in the real gpt2: passes
  :func:`clapnb.msclap.check_tokenizer`.
* :func:`bert_small_vocab` / :func:`bert_shaped_vocab`: WordPiece ``vocab.txt`` files, a
  small one (letters, ``##`` letters, a few words) and one of 30,522 tokens in which
  ``"hello world"`` becomes ``[101, 7592, 2088, 102]`` as in bert-base-uncased.
"""

from __future__ import annotations

import json
import string

from _laion_tokenizer import _merges_for, byte_symbols

END = "<|endoftext|>"


def gpt2_byte_order() -> list[str]:
    """The byte symbols in GPT-2's vocabulary order: printable bytes first."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    symbols = byte_symbols()
    return [symbols[b] for b in printable + [b for b in range(256) if b not in printable]]


def _gpt2_files(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, bytes]:
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return {"vocab.json": json.dumps(vocab, ensure_ascii=False).encode(),
            "merges.txt": merges_txt.encode()}


def gpt2_small_files() -> dict[str, bytes]:
    """About 300 tokens in GPT-2's layout."""
    vocab = {s: i for i, s in enumerate(gpt2_byte_order())}
    merges = _merges_for(["Ġdog", "Ġbarks", "Ġrain", "Ġon", "Ġa", "Ġroof", "the", "Ġthe"])
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[END] = len(vocab)
    return _gpt2_files(vocab, merges)


def gpt2_shaped_files() -> dict[str, bytes]:
    """50,257 tokens; ``"Hello world"`` -> ``[15496, 995]``; ``!`` = 0; ``<|endoftext|>`` = 50256."""
    size, fixed = 50257, {"Hello": 15496, "Ġworld": 995, END: 50256}
    merges = _merges_for(["Hello", "Ġworld"])
    vocab = {s: i for i, s in enumerate(gpt2_byte_order())}
    vocab.update(fixed)
    free = (i for i in range(256, size) if i not in fixed.values())
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = next(free)
    for i in free:
        vocab[f"<filler{i}>"] = i
    assert len(vocab) == size and sorted(vocab.values()) == list(range(size))
    return _gpt2_files(vocab, merges)


_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_small_vocab() -> dict[str, bytes]:
    """A WordPiece vocabulary of ~90 tokens: every lowercase word splits into letters."""
    words = ["dog", "barks", "rain", "on", "a", "roof", "the"]
    tokens = [*_BERT_SPECIALS, *string.ascii_lowercase, *(f"##{c}" for c in string.ascii_lowercase),
              *string.digits, *"!?.,'-", *words]
    tokens = list(dict.fromkeys(tokens))
    return {"vocab.txt": ("\n".join(tokens) + "\n").encode()}


def bert_shaped_vocab() -> dict[str, bytes]:
    """30,522 tokens; ``"hello world"`` -> ``[101, 7592, 2088, 102]`` as in bert-base-uncased."""
    size = 30522
    fixed = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]",
             7592: "hello", 2088: "world"}
    tokens = [fixed.get(i, f"[unused{i}]") for i in range(size)]
    return {"vocab.txt": ("\n".join(tokens) + "\n").encode()}
