rule report:
    """The results: tidy rates, a summary per erased model (CSV and Markdown), image grids."""
    input:
        rates=[e["rates"] for e in plan.report_entries(config)],
        scores=[e["scores"] for e in plan.report_entries(config)],
        images=[p for e in plan.report_entries(config) for p in e["images"]],
        quality=[e["quality"] for e in plan.report_entries(config) if e["quality"]],
        attack_rates=[e["rates"] for e in plan.attack_entries(config)],
        attack_scores=[e["scores"] for e in plan.attack_entries(config)],
        selections=after_tuning("report", lambda cfg: plan.tuning_outputs(cfg)),
    output:
        # Tables (HTML: Snakemake's report shows them in its main panel; overview.html is also on
        # its first page, workflow/report/workflow.rst), the data behind them, figures, grids.
        overview=report(f"{layout.REPORT}/overview.html", caption="../report/overview.rst", category="Tables",
                        labels={"table": "at a glance"}),
        summary_table=report(f"{layout.REPORT}/summary.html", caption="../report/summary.rst", category="Tables",
                             labels={"table": "summary"}),
        attacks_table=report(f"{layout.REPORT}/attacks.html", caption="../report/attacks_table.rst",
                             category="Tables", labels={"table": "attacks"})
        if plan.attack_report_outputs(config) else [],
        summary=report(f"{layout.REPORT}/summary.csv", caption="../report/data.rst", category="Data (CSV)",
                       labels={"table": "summary"}),
        markdown=f"{layout.REPORT}/summary.md",
        rates=report(f"{layout.REPORT}/rates.csv", caption="../report/rates.rst", category="Data (CSV)",
                     labels={"table": "rates"}),
        # what DVC reads (dvc.yaml): dvc/metrics/{family}/{model}/{target}/{prune}/{method}.json,
        # numbers only, and dvc/plots/; metrics.json: the same numbers in one file
        dvc=directory(f"{layout.REPORT}/dvc"),
        metrics=f"{layout.REPORT}/metrics.json",
        provenance=f"{layout.REPORT}/report.json",
        grids=report(expand(f"{layout.REPORT}/grid_{{model}}.png", model=config["run"]["models"]),
                     caption="../report/grid.rst", category="Image grids"),
        tradeoff=report(f"{layout.REPORT}/tradeoff.png", caption="../report/tradeoff.rst", category="Figures",
                        labels={"figure": "erasure vs preservation"}),
        attacks_data=report([p for p in plan.attack_report_outputs(config) if p.endswith(".csv")],
                            caption="../report/data.rst", category="Data (CSV)", labels={"table": "attacks"})
        if plan.attack_report_outputs(config) else [],
        attacks_figure=report([p for p in plan.attack_report_outputs(config) if p.endswith(".png")],
                              caption="../report/attacks.rst", category="Figures", labels={"figure": "attack success"})
        if plan.attack_report_outputs(config) else [],
        attacks=[p for p in plan.attack_report_outputs(config) if p.endswith(".md")],
        claims=report(f"{layout.REPORT}/claims.html", caption="../report/claims.rst", category="Tables",
                      labels={"table": "claims"}),
        claims_data=f"{layout.REPORT}/claims.csv",
        # published numbers against the measured ones, when the config names any (expected:)
        expected=report([p for p in plan.expected_outputs(config) if p.endswith(".html")],
                        caption="../report/expected.rst", category="Tables", labels={"table": "published numbers"})
        if plan.expected_outputs(config) else [],
        expected_data=[p for p in plan.expected_outputs(config) if p.endswith(".csv")],
        # every tuned method's candidates, their validation scores and the chosen one (tuning:)
        tuning=report([p for p in plan.tuning_report_outputs(config) if p.endswith(".html")],
                      caption="../report/tuning.rst", category="Tables", labels={"table": "tuning"})
        if plan.tuning_report_outputs(config) else [],
        tuning_data=[p for p in plan.tuning_report_outputs(config) if p.endswith(".csv")],
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
