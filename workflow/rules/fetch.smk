# External assets (config/assets.yaml): pinned files fetched into resources/assets/, and the per-value
# prompt sets split from them into resources/prompts/. Configs name these paths; eraselab.assets plans them.
rule fetch:
    """An external asset from its pinned URL (or the config's local copy), sha256-checked."""
    output:
        file=layout.ASSET,
        meta=layout.ASSET_SOURCE,
    params:
        spec=spec(plan.fetch_spec),
        code=code("fetch"),
        local=lambda w: plan.fetch_local(config, w.asset),
    threads: 1
    log:
        "logs/fetch/{asset}/{file}.log",
    shell:
        "eraselab --code {params.code} fetch {params.local} --spec {params.spec:q} --out {output.file} > {log} 2>&1"


rule split:
    """The rows of one value of a CSV asset's split column, as a prompt set."""
    input:
        unpack(lambda w: plan.split_inputs(config, w.asset, w.value)),
    output:
        prompts=layout.SPLIT,
        meta=layout.SPLIT.replace(".csv", ".json"),
    params:
        spec=spec(plan.split_spec),
        code=code("split"),
        lineage=lineage("split"),
    threads: 1
    log:
        "logs/split/{asset}/{value}.log",
    shell:
        "eraselab --code {params.code} split --source {input.source} --spec {params.spec:q} --out {output.prompts} "
        "> {log} 2>&1"


# Both run where Snakemake runs, not as cluster jobs: a login node has network where compute nodes
# often have none, and neither needs more than a few seconds and megabytes.
localrules: fetch, split
