# Neuron attribution (eraselab/attribute). The base model's activations on a target's prompts and
# their matched neutral prompts (rule attribute_base) guide attribution pruning; with
# `attribution.enabled`, every erased variant under every attack gets its rho/delta analysis (rule attribute).


rule attribute_base:
    """The base model's per-neuron activations on a target's prompts and their matched neutral prompts."""
    input:
        unpack(lambda w: plan.attribute_base_inputs(config, w.model, w.target)),
    output:
        layout.with_suffixes(layout.ATTRIBUTION_BASE, ".json"),
    params:
        spec=spec(plan.attribute_base_spec),
        code=code("attribute_base"),
        lineage=lineage("attribute_base"),
    threads: threads_of("attribute_base")
    resources:
        **resources_of("attribute_base"),
    log:
        "logs/attribute/{model}/base/{target}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} attribute --base {input.base} --pairs {input.pairs} "
        "--spec {params.spec:q} --out {output[0]} > {log} 2>&1"


rule attribute:
    """rho (deactivation by erasure) and delta (re-activation under attack) of every neuron."""
    input:
        unpack(after_tuning("attribute", plan.attribute_inputs)),
    output:
        layout.with_suffixes(layout.ATTRIBUTION, ".json", ".png"),
    params:
        spec=spec(plan.attribute_spec),
        code=code("attribute"),
        lineage=lineage("attribute"),
    threads: threads_of("attribute")
    resources:
        **resources_of("attribute"),
    log:
        "logs/attribute/{model}/{variant}/{attack}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} attribute --base {input.base} --delta {input.delta} "
        "--adversarial {input.adversarial} --spec {params.spec:q} --out {output[0]} > {log} 2>&1"
