rule generate_neutral:
    """A variant's images of the neutral prompt set (e.g. COCO captions), for preservation metrics."""
    input:
        unpack(after_tuning("generate_neutral", plan.neutral_inputs)),
    output:
        images=layout.NEUTRAL_IMAGES,
        meta=layout.NEUTRAL_IMAGES.replace(".tar", ".json"),
    params:
        spec=spec(plan.generate_spec),
        code=code("generate_neutral"),
        lineage=lineage("generate_neutral"),
        delta=flags("delta"),
    threads: 1
    log:
        "logs/generate_neutral/{model}/{variant}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} generate --base {input.base} {params.delta} --spec {params.spec:q} "
        "--prompts neutral={input.prompts} --images neutral={output.images} > {log} 2>&1"


rule quality:
    """CLIP score of a variant's neutral images, and their FID against the base model's."""
    input:
        unpack(after_tuning("quality", plan.quality_inputs)),
    output:
        layout.QUALITY,
    params:
        spec=spec(plan.quality_spec),
        code=code("quality"),
        lineage=lineage("quality"),
    threads: 1
    log:
        "logs/quality/{model}/{variant}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} quality --base {input.base} --images {input.images} "
        "--reference {input.reference} --spec {params.spec:q} --out {output} > {log} 2>&1"
