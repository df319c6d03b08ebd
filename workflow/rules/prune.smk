# Pruning (eraselab/prune). A variant whose pruning is not `none` erases on a mask (rule prune ->
# rule erase); attribution-guided pruning reads the base model's attribution table (attribute.smk).


rule prune:
    """A pruning mask for one target, stored apart from the weights (sparse indices)."""
    input:
        unpack(lambda w: plan.prune_inputs(config, w.model, w.target, w.prune)),
    output:
        mask=layout.MASK,
        meta=layout.MASK.replace(".safetensors", ".json"),
    params:
        spec=spec(plan.prune_spec),
        code=code("prune"),
        lineage=lineage("prune"),
        opts=flags("pairs", "attribution"),
    threads: threads_of("prune")
    resources:
        **resources_of("prune"),
    log:
        "logs/prune/{model}/{target}/seed{seed}/{prune}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} prune --base {input.base} {params.opts} --spec {params.spec:q} "
        "--out {output.mask} > {log} 2>&1"


rule prune_report:
    """The pruning table: each variant's pruned fraction, rates, ASR per attack and attribution summary."""
    input:
        after_tuning("prune_report", lambda cfg: plan.prune_report_inputs(cfg)),
    output:
        csv=f"{layout.REPORT}/pruning.csv",
        markdown=f"{layout.REPORT}/pruning.md",
        table=report(f"{layout.REPORT}/pruning.html", caption="../report/pruning.rst", category="Tables",
                     labels={"table": "pruning"}),
    params:
        spec=lambda w: json.dumps(plan.prune_report_spec(config), sort_keys=True),
        code=code("prune_report"),
        out=layout.REPORT,
    threads: 1
    log:
        "logs/prune_report.log",
    shell:
        "eraselab --code {params.code} prune_report --spec {params.spec:q} --out {params.out} > {log} 2>&1"
