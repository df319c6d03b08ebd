rule base_model:
    """A base model as a diffusers directory: downloaded (hub) or assembled (ConceptWorld)."""
    input:
        weights=lambda w: plan.conceptworld_weights(config, w.model),
    output:
        directory(layout.RESOURCES),
    params:
        spec=spec(plan.base_model_spec),
        code=code("base_model"),
        lineage=lineage("base_model"),
        weights=flags("weights"),
    threads: threads_of("base_model")
    resources:
        **resources_of("base_model"),
    log:
        "logs/base_model/{model}.log",
    shell:
        "eraselab --code {params.code} base_model --spec {params.spec:q} {params.weights} --out {output} > {log} 2>&1"


rule train_conceptworld:
    """Train ConceptWorld's tiny SD-architecture model and its attribute classifier from scratch."""
    output:
        directory(layout.CONCEPTWORLD_TRAINED),
    params:
        spec=lambda w: json.dumps(plan.train_spec(config), sort_keys=True),
        code=code("train_conceptworld"),
    threads: threads_of("train_conceptworld")  # locally: at most --cores
    resources:
        **resources_of("train_conceptworld"),
    log:
        "logs/train_conceptworld/{model}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} train_conceptworld --spec {params.spec:q} --out {output} > {log} 2>&1"
