# Tuning (config tuning:, off by default): each tuned method's candidates are erased by rule erase
# (as methods `{method}.tune{i}`, with the tuning seed), scored with the base model on the validation
# prompt sets (rule validate), and one is chosen per (model, target, method) by the checkpoint select.
# The evaluation grid's jobs wait for it (common.smk, after_tuning) and take the chosen setting.


rule validate:
    """Score one variant, the base model or a tuning candidate, on the concepts' validation prompt sets."""
    input:
        unpack(lambda w: plan.validate_inputs(config, w.model, w.variant)),
    output:
        scores=layout.VALIDATION_SCORES,
        rates=layout.VALIDATION_RATES,
    params:
        spec=spec(plan.validate_spec),
        code=code("validate"),
        lineage=lineage("validate"),
        delta=flags("delta"),
    threads: threads_of("validate")
    resources:
        **resources_of("validate"),
    log:
        "logs/validate/{model}/{variant}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} validate --base {input.base} {params.delta} "
        "--spec {params.spec:q} --scores {output.scores} --rates {output.rates} > {log} 2>&1"


def by_variant(key):
    """`VARIANT=PATH` for each validation result select compares (base model first)."""
    return lambda w, input: " ".join(f"{v}={p}" for v, p in zip(
        plan.validation_variants(config, w.model, w.target, w.method), input[key]))


checkpoint select:
    """One setting per model, target and tuned method, from its candidates' validation scores."""
    input:
        unpack(lambda w: plan.select_inputs(config, w.model, w.target, w.method)),
    output:
        selection=layout.SELECTION,
        table=layout.CANDIDATES,
    params:
        spec=spec(plan.select_spec),
        code=code("select"),
        lineage=lineage("select"),
        rates=by_variant("rates"),
        scores=by_variant("scores"),
    log:
        "logs/select/{model}/{target}/{method}.log",
    shell:
        "eraselab --code {params.code} select --spec {params.spec:q} --rates {params.rates} "
        "--scores {params.scores} --out {output.selection} --table {output.table} > {log} 2>&1"


localrules: select
