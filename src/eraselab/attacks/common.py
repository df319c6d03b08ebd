"""What attacks share: token vocabularies, soft-token machinery, prompt ids, the diffusion loss's inputs.

An attack turns each row of a concept's prompt set into an adversarial
conditioning for the model, an ``AdversarialSet`` (``adversarial.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
from functools import lru_cache

import numpy as np
import pandas as pd
import torch


@dataclasses.dataclass
class AttackInputs:
    """What an attack may use besides the model: the rows to attack and the evidence about them."""
    prompts: pd.DataFrame                  # case_number, prompt, evaluation_seed, evaluation_guidance, ...
    reference: np.ndarray | None = None    # uint8 N x H x W x 3: the base model's image for each row
    detector: object | None = None         # images -> DataFrame with `detected` (early stopping)
    generation: dict | None = None         # steps, batch_size: how success is checked while attacking
    pairs: pd.DataFrame | None = None      # prompt / prompt_without (Ring-A-Bell's concept vector)
    base_unet: torch.nn.Module | None = None  # the unerased UNet (P4D-style attacks)
    base_text_encoder: torch.nn.Module | None = None  # the unerased text encoder, only where the erasure changed it


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of ints (seed, prompt row, step): same keys, same draws."""
    digest = hashlib.sha256(np.asarray(keys, dtype=np.int64).tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def numpy_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) % 2**63 for k in keys])


# --- vocabulary -------------------------------------------------------------------------------

def tokenizer_key(tokenizer) -> tuple:
    return (tokenizer.name_or_path, len(tokenizer))


@lru_cache(maxsize=4)
def _word_ids(key: tuple, tokenizer) -> tuple[int, ...]:
    vocab = tokenizer.get_vocab()
    by_id = {i: s for s, i in vocab.items()}
    ok = []
    for i in sorted(by_id):
        # Whole-word tokens that come back as themselves: a space-separated sequence of them is
        # tokenized word by word, so any sequence round-trips through text.
        if by_id[i].endswith("</w>") and tokenizer(tokenizer.decode([i]), add_special_tokens=False).input_ids == [i]:
            ok.append(i)
    return tuple(ok)


def vocabulary(tokenizer, kind: str) -> torch.Tensor:
    """Token ids an attack may choose from.

    ``words``: whole-word tokens that round-trip through text (about 34k of CLIP's
    49,408), so the adversarial prompt is a string a user could type; ``all``:
    every id but BOS/EOS (the papers' setting; the text may then not re-tokenize
    to the same ids, but generation uses the ids themselves).
    """
    if kind == "words":
        return torch.tensor(_word_ids(tokenizer_key(tokenizer), tokenizer))
    if kind == "all":
        special = {tokenizer.bos_token_id, tokenizer.eos_token_id}
        return torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    raise ValueError(f"unknown vocabulary {kind!r}; allowed: words, all")


# --- soft tokens (UnlearnDiff, P4D) -------------------------------------------------------------

def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row (last dim) onto the probability simplex.

    The exact sort-based solution (Duchi et al., 2008) of the problem UnlearnDiff's
    code solves by bisection: argmin ||x - v|| subject to x >= 0, sum(x) = 1.
    """
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    rho = (u - css / k > 0).sum(-1, keepdim=True)           # the support size, >= 1
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0)


class _SampleOneHot(torch.autograd.Function):
    """Forward: a one-hot token drawn from each distribution; backward: the clipped gradient.

    UnlearnDiff's straight-through estimator: the loss sees a real (hard) token,
    and the distribution gets the gradient of its one-hot, clipped to [-1, 1].
    """

    @staticmethod
    def forward(ctx, probs: torch.Tensor, gens: list[torch.Generator]):
        rows = probs.reshape(len(gens), -1, probs.shape[-1])
        picks = torch.stack([torch.multinomial(r.detach().cpu().clamp_min(0), 1, generator=g).squeeze(-1)
                             for r, g in zip(rows, gens)]).to(probs.device)
        return torch.nn.functional.one_hot(picks, probs.shape[-1]).to(probs.dtype).reshape(probs.shape)

    @staticmethod
    def backward(ctx, grad):
        return torch.nn.functional.hardtanh(grad), None


def sample_one_hot(probs: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """probs: B x k x V (rows on the simplex), one generator per batch row -> B x k x V one-hot."""
    return _SampleOneHot.apply(probs, gens)


# --- prompts as ids and embeddings --------------------------------------------------------------

def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def layout_ids(tokenizer, tokens: list[int]) -> list[int]:
    """BOS + tokens + EOS, padded with the pad token to the model's length (tokens truncated to fit)."""
    n = tokenizer.model_max_length
    body = [tokenizer.bos_token_id, *tokens[:n - 2], tokenizer.eos_token_id]
    return body + [tokenizer.pad_token_id] * (n - len(body))


def decode(tokenizer, ids, new_token_names: list[str] = ()) -> str:
    """Readable text of a 77-id row: specials dropped, new tokens shown by name."""
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    vocab, words, run = len(tokenizer), [], []
    for i in (int(x) for x in ids):
        if i in specials:
            continue
        if i >= vocab:
            words += [tokenizer.decode(run)] if run else []
            words.append(new_token_names[i - vocab])
            run = []
        else:
            run.append(i)
    words += [tokenizer.decode(run)] if run else []
    return " ".join(w.strip() for w in words if w.strip())


def prompt_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    """N x 77 ids exactly as the pipeline tokenizes prompts."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def retokenize(tokenizer, ids: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Discrete prompts as the official attacks hand them on: decoded to text, and the text tokenized again.

    Ids that do not survive the round trip (a sub-word token with no word after it, bytes that are
    not text) become the text's own ids, so what is checked and generated is the prompt a user
    would type."""
    texts = [decode(tokenizer, r) for r in ids]
    return prompt_ids(tokenizer, texts), texts


@torch.no_grad()
def reference_latents(pipe, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """x0 for the diffusion loss: the VAE's latent (posterior mean, scaled) of uint8 images."""
    vae = pipe.vae
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2).to(pipe.device, vae.dtype) / 127.5 - 1
        out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def noised(pipe, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps on the model's own training schedule."""
    a = pipe.scheduler.alphas_cumprod.to(x0.device)[t.to(x0.device)].view(-1, 1, 1, 1).to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def detected(pipe, prompt_embeds: torch.Tensor, rows: pd.DataFrame, detector, generation: dict) -> np.ndarray:
    """Generate each row's image from its conditioning (row seed and guidance); does it show the concept?"""
    from ..generate import generate_images
    images = generate_images(pipe, None, rows["evaluation_seed"].tolist(), rows["evaluation_guidance"].tolist(),
                             generation["steps"], generation["batch_size"], prompt_embeds=prompt_embeds)
    return detector(images)["detected"].to_numpy(bool)
