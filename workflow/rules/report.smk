rule report:
    """The results: tidy rates, a summary per erased model (CSV and Markdown), image grids."""
    input:
        rates=[e["rates"] for e in plan.report_entries(config)],
        images=[p for e in plan.report_entries(config) for p in e["images"]],
        quality=[e["quality"] for e in plan.report_entries(config) if e["quality"]],
        attack_rates=[e["rates"] for e in plan.attack_entries(config)],
    output:
        summary=report(f"{layout.REPORT}/summary.csv", caption="../report/summary.rst", category="Results",
                       labels={"table": "summary"}),
        markdown=f"{layout.REPORT}/summary.md",
        rates=report(f"{layout.REPORT}/rates.csv", caption="../report/rates.rst", category="Results",
                     labels={"table": "rates"}),
        metrics=f"{layout.REPORT}/metrics.json",
        provenance=f"{layout.REPORT}/report.json",
        grids=report(expand(f"{layout.REPORT}/grid_{{model}}.png", model=config["run"]["models"]),
                     caption="../report/grid.rst", category="Image grids"),
        tradeoff=report(f"{layout.REPORT}/tradeoff.png", caption="../report/tradeoff.rst", category="Figures",
                        labels={"figure": "erasure vs preservation"}),
        attacks=report(plan.attack_report_outputs(config), category="Attacks")
        if plan.attack_report_outputs(config) else [],
    params:
        spec=lambda w: json.dumps(plan.report_spec(config), sort_keys=True),
        code=code("report"),
        lineage=lineage("report"),
        out=layout.REPORT,
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    log:
        "logs/report.log",
    shell:
        "eraselab --code {params.code} report --spec {params.spec:q} --out {params.out} > {log} 2>&1"
