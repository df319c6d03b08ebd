"""UCE and RECE: the closed forms solve their objectives, the edits touch only K/V, RECE keeps its best epoch."""
import pytest
import torch

from eraselab.erase import method
from eraselab.erase.common import Concept
from eraselab.erase.closed_form import closed_form_edit, derive_embedding, edit_operator, gram, guided_edit
from eraselab.erase.common import cross_attention_kv
from eraselab.erase.rece import resolve

UCE = dict(algorithm="uce", lamb=0.5, erase_scale=1.0, preserve_scale=None, tokens="subject_to_end",
           preserve_unconditional=True)
RECE = dict(algorithm="rece", uce=UCE, derivation="regzero", regular_scale=None, epochs=None, lamb=0.1,
            erase_scale=1.0, preserve_scale=0.1,
            retain=None, by_type={"object": {"regular_scale": 1e-3, "epochs": 1, "retain": "preserve"},
                                  "style": {"regular_scale": 1e-3, "epochs": 1, "retain": "preserve"},
                                  "implicit": {"regular_scale": 0.1, "epochs": 3, "retain": "unconditional"}})
TRIANGLE = Concept(name="triangle", type="object", erase=("triangle",))


def rel(x, scale):
    return (x.norm() / scale.norm()).item()


@pytest.mark.parametrize("d,n,m", [(16, 5, 3), (12, 30, 40)])   # fewer and more key rows than dimensions
def test_uce_solution_satisfies_its_normal_equations(d, n, m):
    g = torch.Generator().manual_seed(d + n)
    w, k, v, p = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((7, d), (n, d), (n, 7), (m, d)))
    lamb, s_e, s_p = 0.3, 1.7, 0.4
    new = closed_form_edit(w, k, v, p, lamb, s_e, s_p)
    # gradient of lamb||W'-W||^2 + s_e||K W'^T - V||^2 + s_p||P W'^T - P W^T||^2, halved
    grad = lamb * (new - w) + s_e * (new @ k.T - v.T) @ k + s_p * (new - w) @ p.T @ p
    assert rel(grad, lamb * w) < 1e-12
    # and it is UCE's eq. 7 as printed: (lamb W + s_e V^T K + s_p W P^T P)(lamb I + s_e K^T K + s_p P^T P)^-1
    eq7 = (lamb * w + s_e * v.T @ k + s_p * w @ p.T @ p) @ torch.linalg.inv(
        lamb * torch.eye(d, dtype=torch.float64) + s_e * k.T @ k + s_p * p.T @ p)
    assert rel(new - eq7, eq7) < 1e-12


def test_guided_edit_is_the_closed_form_with_values_from_guide_tokens():
    """v_i = W g_i makes the edit a right-multiplication W (I + T), the same for every layer."""
    g = torch.Generator().manual_seed(3)
    k, gd, p = (torch.randn(n, 9, generator=g, dtype=torch.float64) for n in (4, 4, 6))
    op = edit_operator(k, p, 0.5, 1.0, 0.3)
    for out in (5, 11):
        w = torch.randn(out, 9, generator=g, dtype=torch.float64)
        assert rel(guided_edit(w, k, gd, op) - closed_form_edit(w, k, gd @ w.T, p, 0.5, 1.0, 0.3), w) < 1e-12
    q = guided_edit(torch.eye(9, dtype=torch.float64), k, gd, op)
    assert rel(w @ q - guided_edit(w, k, gd, op), w) < 1e-12


@pytest.mark.parametrize("variant", ["regzero", "standard", "surrogate"])
def test_rece_embedding_satisfies_its_normal_equations(variant):
    g = torch.Generator().manual_seed(1)
    d = 10
    old = [torch.randn(o, d, generator=g, dtype=torch.float64) for o in (6, 9, 4)]
    new = [w + 0.3 * torch.randn(w.shape, generator=g, dtype=torch.float64) for w in old]
    c, c_old = torch.randn(5, d, generator=g, dtype=torch.float64), torch.randn(5, d, generator=g, dtype=torch.float64)
    reg = 0.2
    x = derive_embedding(new, old, c, reg, variant, c_old)
    # gradient of sum_l ||W'_l x - W_l c||^2 + reg * R(x), halved, for each row
    grad = sum((x @ wn.T - c @ wo.T) @ wn for wn, wo in zip(new, old))
    grad = grad + {"regzero": reg * x, "standard": reg * (x - c_old),
                   "surrogate": sum(reg * (x - c) @ wn.T @ wn for wn in new)}[variant]
    assert rel(grad, sum(c @ wo.T @ wn for wn, wo in zip(new, old))) < 1e-12


def test_rece_embedding_inverts_an_unedited_model():
    """With W' = W, the embedding that reproduces c is c itself (up to the small regulariser)."""
    g = torch.Generator().manual_seed(2)
    ws = [torch.randn(20, 8, generator=g, dtype=torch.float64) for _ in range(4)]
    c = torch.randn(3, 8, generator=g, dtype=torch.float64)
    assert rel(derive_embedding(ws, ws, c, 1e-9) - c, c) < 1e-8


def kv_weights(pipe):
    named = dict(pipe.unet.named_parameters())
    return [named[n].detach().clone() for n in cross_attention_kv(pipe.unet)]


def test_uce_edits_only_cross_attention_kv_and_is_deterministic(tiny_pipe_dir):
    from eraselab.models import load_pipeline
    pipe = load_pipeline(tiny_pipe_dir)
    before = {n: p.clone() for n, p in pipe.unet.named_parameters()}
    text = {n: p.clone() for n, p in pipe.text_encoder.named_parameters()}
    tensors, record = method("uce")(pipe, TRIANGLE, UCE, seed=0)
    kv = set(cross_attention_kv(pipe.unet))
    assert {k.removeprefix("unet.") for k in tensors} == kv and all(n.endswith(("to_k.weight", "to_v.weight")) for n in kv)
    for n, p in pipe.unet.named_parameters():
        assert torch.equal(p, before[n]) != (n in kv), n
    assert all(torch.equal(p, text[n]) for n, p in pipe.text_encoder.named_parameters())
    assert record["preserve_prompts"] == [""] and record["preserve_scale_used"] == 1.0
    again, _ = method("uce")(load_pipeline(tiny_pipe_dir), TRIANGLE, UCE, seed=5)
    assert all(torch.equal(tensors[k], again[k]) for k in tensors)


def test_uce_token_choices_and_multi_concept(tiny_pipe):
    """Old repo: subject token through padding, aligned with the guide; new repo: the subject token only."""
    from eraselab.erase.uce import Encodings, erase_tokens
    enc = Encodings(tiny_pipe, ["a red triangle", "circle", "", "a square"])
    k_old, g_old = erase_tokens(enc, ["a red triangle", "circle"], ["", "a square"], "subject_to_end")
    # "a red triangle": subject at 3; "": from BOS (0) -> 74 rows; "circle" (1) vs "a square" (2) -> 75 rows
    assert k_old.shape[0] == g_old.shape[0] == 74 + 75
    k_new, g_new = erase_tokens(enc, ["a red triangle", "circle"], ["", "a square"], "last_subject")
    assert k_new.shape[0] == 2 and torch.equal(k_new[0], k_old[0]) and torch.equal(g_new[1], g_old[74])
    # two concepts at once, each toward its own anchor: both keys now give (nearly) their guide's values
    two = Concept(name="shapes", type="object", erase=("triangle", "circle"), anchor=("square", ""))
    enc = Encodings(tiny_pipe, ["triangle", "circle", "square", ""])
    keys, guide = erase_tokens(enc, ["triangle", "circle"], ["square", ""], "last_subject")
    old = kv_weights(tiny_pipe)
    _, record = method("uce")(tiny_pipe, two, {**UCE, "tokens": "last_subject"}, seed=0)
    new = kv_weights(tiny_pipe)
    assert record["erase_tokens"] == 2
    for w0, w1 in zip(old, new):
        for i in (0, 1):
            assert (keys[i] @ w1.T - guide[i] @ w0.T).norm() < 0.25 * (keys[i] @ w0.T - guide[i] @ w0.T).norm()
    with pytest.raises(ValueError, match="2 anchors for 3 erase prompts"):
        Concept(name="x", type="object", erase=("a", "b", "c"), anchor=("d", "e")).guides()


def test_tracked_gram_matches_the_edited_weights(tiny_pipe):
    """RECE's Gram matrices via W' = W_0 Q agree with the ones computed from the edited weights."""
    from eraselab.erase.uce import CrossAttentionKV, Encodings, uce_edit
    original = kv_weights(tiny_pipe)
    kv = CrossAttentionKV(tiny_pipe, with_gram=True)
    uce_edit(kv, Encodings(tiny_pipe, ["triangle", ""]), TRIANGLE, UCE)
    uce_edit(kv, Encodings(tiny_pipe, ["triangle", ""]), TRIANGLE, {**UCE, "tokens": "last_subject"})
    new = kv_weights(tiny_pipe)
    g_new, cross = kv.grams()
    assert rel(g_new - gram(new).double(), g_new) < 1e-5 and rel(cross - gram(new, original).double(), cross) < 1e-5


def test_rece_presets_by_concept_type():
    assert resolve(RECE, "implicit")["epochs"] == 3 and resolve(RECE, "implicit")["regular_scale"] == 0.1
    assert resolve(RECE, "style")["regular_scale"] == 1e-3
    assert resolve({**RECE, "epochs": 5}, "implicit")["epochs"] == 5          # explicit beats the preset


def test_rece_keeps_the_best_validated_state(tiny_pipe_dir):
    from eraselab.models import load_pipeline
    rates = iter([0.5, 0.2, 0.4, 0.3])       # uce, epoch 0 (best), epoch 1, epoch 2

    def validator(pipe):
        return next(rates)

    pipe = load_pipeline(tiny_pipe_dir)
    implicit = Concept(name="night", type="implicit", erase=("night",))
    tensors, record = method("rece")(pipe, implicit, RECE, seed=0, validator=validator)
    assert record["selected"] == "epoch-0" and record["selected_rate"] == 0.2
    assert list(record["validation_rates"]) == ["uce", "epoch-0", "epoch-1", "epoch-2"]
    # the returned tensors are epoch 0's: one epoch of RECE without validation gives them too
    one, rec1 = method("rece")(load_pipeline(tiny_pipe_dir), implicit, {**RECE, "epochs": 1}, seed=0)
    assert rec1["selected"].startswith("epoch-0") and all(torch.equal(tensors[k], one[k]) for k in one)
    # and the pipeline is left in the returned state
    named = dict(pipe.unet.named_parameters())
    assert all(torch.equal(named[k.removeprefix("unet.")], v) for k, v in tensors.items())


def test_rece_delta_reproduces_the_erased_model(tiny_pipe_dir, tmp_path):
    from eraselab.delta import apply_delta, save_delta
    from eraselab.models import load_pipeline
    pipe = load_pipeline(tiny_pipe_dir)
    tensors, record = method("rece")(pipe, TRIANGLE, RECE, seed=0)
    save_delta(tmp_path / "d.safetensors", tensors, record)
    rebuilt = load_pipeline(tiny_pipe_dir)
    apply_delta(rebuilt, tmp_path / "d.safetensors")
    for (n, p), (_, q) in zip(pipe.unet.named_parameters(), rebuilt.unet.named_parameters()):
        assert torch.equal(p, q), n


def _official_uce_sd_erase(pipe, edit, guide, preserve, erase_scale, preserve_scale, lamb):
    """The current official trainscripts/uce_sd_erase.py, transcribed: per K/V module, the last subject token
    (attention-mask sum - 2) of every erase, guide and preserve prompt; mat1 = lamb W + sum s v* c^T,
    mat2 = lamb I + sum s c c^T, W* = mat1 @ inverse(mat2). No empty prompt unless given in ``preserve``."""
    from eraselab.models import encode_prompts
    emb = {}
    for e in edit + guide + preserve:
        last = pipe.tokenizer(e, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt")["attention_mask"].sum() - 2
        emb[e] = encode_prompts(pipe, [e])[0][last]
    named = dict(pipe.unet.named_modules())
    out = {}
    for name in cross_attention_kv(pipe.unet):
        w = named[name.removesuffix(".weight")].weight.detach()
        mat1, mat2 = lamb * w, lamb * torch.eye(w.shape[1])
        for e, g in zip(edit, guide):
            c, v = emb[e][:, None], (w @ emb[g])[:, None]
            mat1, mat2 = mat1 + erase_scale * v @ c.T, mat2 + erase_scale * c @ c.T
        for p in preserve:
            c, v = emb[p][:, None], (w @ emb[p])[:, None]
            mat1, mat2 = mat1 + preserve_scale * v @ c.T, mat2 + preserve_scale * c @ c.T
        out["unet." + name] = mat1 @ torch.inverse(mat2)
    return out


def test_last_subject_uce_matches_the_current_official_script(tiny_pipe_dir):
    """tokens: last_subject leaves the empty prompt out of the preserve set, as uce_sd_erase.py does;
    preserving it (the paper-era repo's habit) is a different edit."""
    from eraselab.models import load_pipeline
    concept = Concept(name="triangle", type="object", erase=("a triangle",), preserve=("a circle", "a square"))
    params = {**UCE, "tokens": "last_subject", "preserve_scale": 1.0, "preserve_unconditional": None}
    pipe = load_pipeline(tiny_pipe_dir)
    official = _official_uce_sd_erase(pipe, ["a triangle"], [""], ["a circle", "a square"], 1.0, 1.0, 0.5)
    ours, record = method("uce")(pipe, concept, params, seed=0)
    assert record["preserve_prompts"] == ["a circle", "a square"]
    assert max(rel(ours[k] - official[k], official[k]) for k in official) < 1e-4
    with_empty, _ = method("uce")(load_pipeline(tiny_pipe_dir), concept, {**params, "preserve_unconditional": True},
                                  seed=0)
    assert max(rel(with_empty[k] - official[k], official[k]) for k in official) > 1e-3


def _official_rece_epoch(pipe, original, concept, guide, retain, reg, lamb, erase_scale, preserve_scale):
    """One epoch of the official RECE, transcribed: close_form_emb_regzero derives
    c' = c (lambda_reg I + sum W'^T W')^-1 (sum W'^T W) ^T from the full 77-token encoding c, then
    edit_model_adversarial, per K/V module, mat1 = lamb W' + s_e sum_k W' g_k c'_k^T + s_p sum_r sum_k W' r_k r_k^T,
    mat2 = lamb I + s_e sum_k c'_k c'_k^T + s_p sum_r sum_k r_k r_k^T, W' <- mat1 @ inverse(mat2)."""
    from eraselab.models import encode_prompts
    names = cross_attention_kv(pipe.unet)
    named = dict(pipe.unet.named_parameters())
    edited = [named[n].detach().double() for n in names]   # float64: the formula, not float32's rounding
    d = edited[0].shape[1]
    mat1 = reg * torch.eye(d).double() + sum(w.T @ w for w in edited)
    mat2 = sum(w.T @ w0.double() for w, w0 in zip(edited, original))
    c = encode_prompts(pipe, [concept])[0].double()
    adv = c @ (torch.inverse(mat1) @ mat2).T
    g, kept = encode_prompts(pipe, [guide])[0].double(), encode_prompts(pipe, retain).double()
    out = {}
    for name, w in zip(names, edited):
        m1, m2 = lamb * w, lamb * torch.eye(d).double()
        m1, m2 = m1 + erase_scale * (g @ w.T).T @ adv, m2 + erase_scale * adv.T @ adv
        for r in kept:
            m1, m2 = m1 + preserve_scale * (r @ w.T).T @ r, m2 + preserve_scale * r.T @ r
        out["unet." + name] = m1 @ torch.inverse(m2)
    return out


def test_rece_epoch_matches_the_official_code_and_retains_only_the_empty_prompt_for_nudity(tiny_pipe_dir):
    """An implicit concept (nudity) retains " " only in RECE's steps, even when it has preserve prompts
    (which its UCE start keeps); an object retains "" and its preserve prompts."""
    from eraselab.models import load_pipeline
    base = load_pipeline(tiny_pipe_dir)
    original = kv_weights(base)
    params = {**RECE, "epochs": 1}
    for ctype, retain in (("implicit", [" "]), ("object", [" ", "a circle"])):
        concept = Concept(name="night", type=ctype, erase=("at night",), preserve=("a circle",))
        start = load_pipeline(tiny_pipe_dir)
        method("uce")(start, concept, UCE, seed=0)
        official = _official_rece_epoch(start, original, "at night", " ", retain, resolve(params, ctype)["regular_scale"],
                                        0.1, 1.0, 0.1)
        ours, record = method("rece")(load_pipeline(tiny_pipe_dir), concept, params, seed=0)
        assert record["retained"] == ([""] if ctype == "implicit" else ["", "a circle"])
        assert max(rel(ours[k].double() - official[k], official[k]) for k in official) < 2e-5, ctype
    other, _ = method("rece")(load_pipeline(tiny_pipe_dir), concept, {**params, "retain": "unconditional"}, seed=0)
    assert max(rel(other[k] - ours[k], ours[k]) for k in ours) > 1e-3
