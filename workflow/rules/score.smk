rule score:
    """Detect each prompt set's concept in its images; per-image scores and per-concept rates."""
    input:
        unpack(after_tuning("score", plan.score_inputs)),
    output:
        scores=layout.SCORES,
        rates=layout.RATES,
    params:
        spec=spec(plan.score_spec),
        code=code("score"),
        lineage=lineage("score"),
        images=lambda w, input: " ".join(f"{ps}={p}" for ps, p in zip(PROMPT_SETS, input.images)),
    threads: threads_of("score")
    resources:
        **resources_of("score"),
    log:
        "logs/score/{model}/{variant}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} score --base {input.base} --spec {params.spec:q} "
        "--images {params.images} --scores {output.scores} --rates {output.rates} > {log} 2>&1"
