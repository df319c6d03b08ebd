# Pruning and neuron attribution (eraselab/prune, eraselab/attribution). A variant whose pruning is
# not `none` erases on a mask (rule prune -> rule erase); attribution-guided pruning reads the base
# model's attribution table (rule attribute_base); with `attribution.enabled`, every erased variant
# under every attack gets its rho/delta analysis (rule attribute).


def _flag(name, input):
    """--name PATH for an optional input file."""
    return f"--{name} {input[name]}" if name in input.keys() else ""


rule prune:
    """A pruning mask for one target, stored apart from the weights (sparse indices)."""
    input:
        unpack(lambda w: plan.prune_inputs(config, w.model, w.target, w.prune)),
    output:
        mask=layout.MASK,
        meta=layout.MASK.replace(".safetensors", ".json"),
    params:
        spec=spec(plan.prune_spec),
        lineage=lineage("prune"),
        opts=lambda w, input: " ".join(_flag(n, input) for n in ("pairs", "attribution")),
    threads: threads_of("prune")
    resources:
        **resources_of("prune"),
    log:
        "logs/prune/{model}/{target}/{prune}.log",
    shell:
        "eraselab --threads {threads} prune --base {input.base} {params.opts} --spec {params.spec:q} "
        "--out {output.mask} > {log} 2>&1"


rule attribute_base:
    """The base model's per-neuron activations on a target's prompts and their matched neutral prompts."""
    input:
        unpack(lambda w: plan.attribute_base_inputs(config, w.model, w.target)),
    output:
        layout.with_suffixes(layout.ATTRIBUTION_BASE, ".json"),
    params:
        spec=spec(plan.attribute_base_spec),
        lineage=lineage("attribute_base"),
    threads: threads_of("attribute_base")
    resources:
        **resources_of("attribute_base"),
    log:
        "logs/attribute/{model}/base/{target}.log",
    shell:
        "eraselab --threads {threads} attribute --base {input.base} --pairs {input.pairs} "
        "--spec {params.spec:q} --out {output[0]} > {log} 2>&1"


rule attribute:
    """rho (deactivation by erasure) and delta (re-activation under attack) of every neuron."""
    input:
        unpack(lambda w: plan.attribute_inputs(config, w.model, w.variant, w.attack)),
    output:
        layout.with_suffixes(layout.ATTRIBUTION, ".json", ".png"),
    params:
        spec=spec(plan.attribute_spec),
        lineage=lineage("attribute"),
    threads: threads_of("attribute")
    resources:
        **resources_of("attribute"),
    log:
        "logs/attribute/{model}/{variant}/{attack}.log",
    shell:
        "eraselab --threads {threads} attribute --base {input.base} --delta {input.delta} "
        "--adversarial {input.adversarial} --spec {params.spec:q} --out {output[0]} > {log} 2>&1"


rule prune_report:
    """The pruning table: each variant's pruned fraction, rates, ASR per attack and attribution summary."""
    input:
        lambda w: [p for p in (plan.prune_report_spec(config)["summary"], plan.prune_report_spec(config)["attacks"]) if p]
        + [m["path"] for m in plan.prune_report_spec(config)["masks"]]
        + [a["path"] for a in plan.prune_report_spec(config)["attributions"]],
    output:
        plan.prune_report_outputs(config) or [f"{layout.REPORT}/pruning.csv", f"{layout.REPORT}/pruning.md"],
    params:
        spec=lambda w: json.dumps(plan.prune_report_spec(config), sort_keys=True),
        out=layout.REPORT,
    threads: 1
    log:
        "logs/prune_report.log",
    shell:
        "eraselab prune_report --spec {params.spec:q} --out {params.out} > {log} 2>&1"
