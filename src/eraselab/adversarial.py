"""The adversarial set: what every attack produces, how it is stored, and how a model is conditioned on it.

Whatever the attack, its result is an ``AdversarialSet``: token ids per row (77,
CLIP's layout), optionally new token vectors that ids past the vocabulary refer
to (textual inversion), or the text-encoder output itself (embedding-space
attacks). On disk it is ``adversarial.safetensors`` (the tensors),
``adversarial.csv`` (one row per prompt: its adversarial text, whether the attack
succeeded while running, its cost) and ``adversarial.json`` (provenance, curves,
checksum). ``conditioning`` turns it into the ``prompt_embeds`` generation feeds
the pipeline, through the attacked model's own text encoder. Generation under
attack and attribution read it; neither runs any attack's code.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pandas as pd
import torch

from .artifacts import ArtifactError, atomic_paths, read_json, sha256, sidecar, write_json


@dataclasses.dataclass
class AdversarialSet:
    """One adversarial conditioning per prompt row."""
    input_ids: torch.Tensor                       # N x 77 int64; ids >= vocab size index new_tokens
    prompts: list[str]                            # readable text of each row's adversarial prompt
    new_tokens: torch.Tensor | None = None        # M x D token-embedding vectors (textual inversion)
    prompt_embeds: torch.Tensor | None = None     # N x 77 x D' text-encoder outputs, used as they are

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids}
        if self.new_tokens is not None:
            out["new_tokens"] = self.new_tokens
        if self.prompt_embeds is not None:
            out["prompt_embeds"] = self.prompt_embeds
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def save_adversarial(path: str | Path, adv: AdversarialSet, rows: pd.DataFrame, meta: dict) -> None:
    """Tensors, the per-row table and the metadata, atomically together (metadata renamed last: it marks
    completeness)."""
    from safetensors.torch import save_file
    per_row = meta.get("rows", [])
    table = rows[[c for c in ("case_number", "prompt", "evaluation_seed", "evaluation_guidance")]].copy()
    table.insert(2, "adversarial_prompt", adv.prompts)
    for key in ("pre_success", "attack_success", "steps", "seconds", "objective_start", "objective"):
        if per_row and key in per_row[0]:
            table[key] = [r[key] for r in per_row]
    with atomic_paths(path, sidecar(path, ".csv"), sidecar(path, ".json")) as (tmp, tmp_csv, tmp_meta):
        save_file(adv.tensors(), str(tmp))
        table.to_csv(tmp_csv, index=False)
        write_json(tmp_meta, {**meta, "sha256": sha256(tmp), "n_prompts": len(table)})


def load_adversarial(path: str | Path) -> tuple[AdversarialSet, pd.DataFrame, dict]:
    from safetensors.torch import load_file
    path = Path(path)
    meta = read_json(sidecar(path, ".json"))
    if not path.is_file() or sha256(path) != meta.get("sha256"):
        raise ArtifactError(f"{path}: checksum mismatch: missing, truncated or corrupted (metadata "
                            f"{sidecar(path, '.json')}); rerun its attack job")
    tensors = load_file(str(path))
    table = pd.read_csv(sidecar(path, ".csv"), keep_default_na=False)
    adv = AdversarialSet(tensors["input_ids"], table["adversarial_prompt"].astype(str).tolist(),
                         tensors.get("new_tokens"), tensors.get("prompt_embeds"))
    return adv, table, meta


@contextlib.contextmanager
def token_embeddings(text_encoder, embeds: torch.Tensor):
    """Run the text encoder on these token embeddings (B x 77 x D) instead of the ids' own.

    A hook replaces the token-embedding layer's output, so position embeddings,
    the causal mask and EOS pooling stay the text encoder's own, whatever the
    transformers version.
    """
    handle = text_encoder.get_input_embeddings().register_forward_hook(lambda module, args, out: embeds)
    try:
        yield
    finally:
        handle.remove()


def embed_ids(text_encoder, input_ids: torch.Tensor, new_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Token embeddings of ids, where ids past the vocabulary take rows of ``new_tokens``."""
    table = text_encoder.get_input_embeddings().weight
    vocab = table.shape[0]
    embeds = table[input_ids.clamp_max(vocab - 1)]
    if new_tokens is not None and (input_ids >= vocab).any():
        extra = input_ids >= vocab
        embeds = torch.where(extra[..., None], new_tokens[(input_ids - vocab).clamp_min(0)].to(embeds.dtype), embeds)
    return embeds


def encode(text_encoder, input_ids: torch.Tensor, embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The text encoder's last hidden states (B x 77 x D'), as the pipeline conditions the UNet."""
    input_ids = input_ids.to(text_encoder.device)
    if embeds is None:
        return text_encoder(input_ids)[0]
    # new tokens have no row in the table the layer looks up before the hook replaces its output
    vocab = text_encoder.get_input_embeddings().num_embeddings
    lookup = torch.where(input_ids < vocab, input_ids, torch.zeros_like(input_ids))
    with token_embeddings(text_encoder, embeds.to(text_encoder.device, text_encoder.dtype)):
        return text_encoder(lookup)[0]


@torch.no_grad()
def conditioning(pipe, adv: AdversarialSet, batch_size: int = 256) -> torch.Tensor:
    """prompt_embeds (N x 77 x D') for the pipeline: the adversarial set through this model's text encoder."""
    if adv.prompt_embeds is not None:
        return adv.prompt_embeds.to(pipe.device, pipe.text_encoder.dtype)
    out = []
    for i in range(0, len(adv.input_ids), batch_size):
        ids = adv.input_ids[i:i + batch_size].to(pipe.device)
        new = adv.new_tokens.to(pipe.device) if adv.new_tokens is not None else None
        out.append(encode(pipe.text_encoder, ids, embed_ids(pipe.text_encoder, ids, new)))
    return torch.cat(out)
