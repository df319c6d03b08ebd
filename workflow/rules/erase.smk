rule erase:
    """Erase a concept with one method; writes only the changed tensors and their metadata."""
    input:
        unpack(after_tuning("erase", plan.erase_inputs)),
    output:
        delta=layout.DELTA,
        meta=layout.DELTA.replace(".safetensors", ".json"),
    params:
        spec=spec(plan.erase_spec),
        code=code("erase"),
        lineage=lineage("erase"),
        mask=flags("mask"),
    threads: threads_of("erase")
    resources:
        **resources_of("erase"),
    log:
        "logs/erase/{model}/{target}/seed{seed}/{prune}/{method}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} erase --base {input.base} {params.mask} --spec {params.spec:q} "
        "--out {output.delta} > {log} 2>&1"
