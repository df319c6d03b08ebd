# Attacks: adversarial prompts or embeddings per erased variant, generation under attack, and the
# pre- and post-attack success rates. Attacks that read only the text encoder (Ring-A-Bell) run
# once per base model and target (rule attack_shared) and every variant that keeps the base
# text encoder reuses the result (plan.adversarial_path decides which one a variant uses).


rule attack:
    """Attack one erased model (white-box attacks, or text-encoder attacks on a changed text encoder)."""
    input:
        unpack(after_tuning("attack", plan.attack_inputs)),
    output:
        layout.adversarial_files(layout.ADVERSARIAL),
    params:
        spec=spec(plan.attack_spec),
        code=code("attack"),
        lineage=lineage("attack"),
        opts=flags("delta", "reference", "pairs"),
    threads: 1
    log:
        "logs/attack/{model}/{variant}/{attack}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} attack --base {input.base} {params.opts} --spec {params.spec:q} "
        "--out {output[0]} > {log} 2>&1"


rule attack_shared:
    """An attack that reads only the text encoder, on the base model: shared by its erased variants."""
    input:
        unpack(lambda w: plan.shared_attack_inputs(config, w.model, w.target, w.attack)),
    output:
        layout.adversarial_files(layout.SHARED_ADVERSARIAL),
    params:
        spec=spec(plan.shared_attack_spec),
        code=code("attack_shared"),
        lineage=lineage("attack_shared"),
        opts=flags("delta", "reference", "pairs"),
    threads: 1
    log:
        "logs/attack/{model}/shared/{target}/seed{seed}/{attack}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} attack --base {input.base} {params.opts} --spec {params.spec:q} "
        "--out {output[0]} > {log} 2>&1"


rule attack_generate:
    """The target's images under attack, each prompt row with its own seed and guidance."""
    input:
        unpack(after_tuning("attack_generate", plan.attack_generate_inputs)),
    output:
        images=layout.ATTACK_IMAGES,
        meta=layout.ATTACK_IMAGES.replace(".tar", ".json"),
    params:
        spec=spec(plan.attack_generate_spec),
        code=code("attack_generate"),
        lineage=lineage("attack_generate"),
        delta=flags("delta"),
    threads: 1
    log:
        "logs/attack_generate/{model}/{variant}/{attack}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} attack_generate --base {input.base} {params.delta} "
        "--adversarial {input.adversarial} --spec {params.spec:q} --out {output.images} > {log} 2>&1"


rule attack_score:
    """Pre-attack, attack-only and attack success rates of one variant under one attack."""
    input:
        unpack(after_tuning("attack_score", plan.attack_score_inputs)),
    output:
        scores=layout.ATTACK_SCORES,
        rates=layout.ATTACK_RATES,
    params:
        spec=spec(plan.attack_score_spec),
        code=code("attack_score"),
        lineage=lineage("attack_score"),
    threads: 1
    log:
        "logs/attack_score/{model}/{variant}/{attack}.log",
    shell:
        "eraselab --threads {threads} --code {params.code} attack_score --base {input.base} --images {input.images} "
        "--plain-scores {input.plain} --spec {params.spec:q} --scores {output.scores} --rates {output.rates} "
        "> {log} 2>&1"
