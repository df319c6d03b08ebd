"""The real CLIP BPE tokenizer, built offline from the vocabulary open_clip ships.

Stable Diffusion v1 uses OpenAI's CLIP tokenizer (49,408 tokens). open_clip
bundles the same byte-pair merges as ``bpe_simple_vocab_16e6.txt.gz``; from
them we write the ``vocab.json`` and ``merges.txt`` that transformers'
``CLIPTokenizer`` reads, so ConceptWorld's pipeline tokenizes exactly like
SD v1.4 does and needs no model hub.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges: 256 bytes x 2 + merges + 2 specials = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def open_clip_bpe_path() -> Path:
    import open_clip.tokenizer
    return Path(open_clip.tokenizer.default_bpe())


def clip_vocab_and_merges(bpe_path: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """CLIP's token->id map and merge list, in CLIP's own order."""
    lines = gzip.open(bpe_path or open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    units = list(_bytes_to_unicode().values())
    tokens = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_files(out_dir: Path) -> None:
    """Write vocab.json and merges.txt for transformers' CLIPTokenizer into out_dir."""
    vocab, merges = clip_vocab_and_merges()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def build_clip_tokenizer(out_dir: Path, model_max_length: int = 77):
    """A transformers CLIPTokenizer identical to SD v1's, saved in out_dir."""
    from transformers import CLIPTokenizer

    write_tokenizer_files(out_dir)
    tok = CLIPTokenizer(vocab=str(out_dir / "vocab.json"), merges=str(out_dir / "merges.txt"),
                        model_max_length=model_max_length)
    tok.save_pretrained(out_dir)
    return tok
