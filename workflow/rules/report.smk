rule report:
    """The results: tidy rates, a summary per erased model (CSV and Markdown), image grids."""
    input:
        rates=[e["rates"] for e in plan.report_entries(config)],
        images=[p for e in plan.report_entries(config) for p in e["images"]],
        attack_rates=[e["rates"] for e in plan.attack_entries(config)],
    output:
        summary=report(f"{layout.REPORT}/summary.csv", category="Results", labels={"table": "summary"}),
        markdown=f"{layout.REPORT}/summary.md",
        rates=report(f"{layout.REPORT}/rates.csv", category="Results", labels={"table": "rates"}),
        metrics=f"{layout.REPORT}/metrics.json",
        grids=report(expand(f"{layout.REPORT}/grid_{{model}}.png", model=config["run"]["models"]),
                     category="Image grids"),
        attacks=report(plan.attack_report_outputs(config), category="Attacks")
        if plan.attack_report_outputs(config) else [],
    params:
        spec=lambda w: json.dumps(plan.report_spec(config), sort_keys=True),
        out=layout.REPORT,
    log:
        "logs/report.log",
    shell:
        "eraselab report --spec {params.spec:q} --out {params.out} > {log} 2>&1"
