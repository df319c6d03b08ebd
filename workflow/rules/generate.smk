rule generate:
    """Images for every prompt set of one model variant (base or erased), one archive per set."""
    input:
        unpack(after_tuning("generate", plan.generate_inputs)),
    output:
        images=expand(layout.IMAGES, promptset=PROMPT_SETS, allow_missing=True),
        meta=expand(layout.IMAGES.replace(".tar", ".json"), promptset=PROMPT_SETS, allow_missing=True),
    params:
        spec=spec(plan.generate_spec),
        code=code("generate"),
        lineage=lineage("generate"),
        delta=flags("delta"),
        prompts=lambda w: " ".join(f"{ps}={config['concepts'][ps]['prompts']}" for ps in PROMPT_SETS),
        images=lambda w, output: " ".join(f"{ps}={p}" for ps, p in zip(PROMPT_SETS, output.images)),
    threads: threads_of("generate")
    resources:
        **resources_of("generate"),
    log:
        "logs/generate/{model}/{variant}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} generate --base {input.base} {params.delta} --spec {params.spec:q} "
        "--prompts {params.prompts} --images {params.images} > {log} 2>&1"
