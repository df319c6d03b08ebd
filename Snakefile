# Concept erasure, attacked and measured: base model -> erasure -> generation -> scoring -> report.
# The default config runs on ConceptWorld on a CPU; presets in config/ scale it to Stable Diffusion.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/attribute.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/erase.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/report.smk"


# After every include: check each rule's eraselab command (common.smk).
finish_rules(workflow)


rule all:
    input:
        plan.tuning_outputs(config),   # every selection planned at once (a checkpoint is found one at a time)
        after_tuning("all", lambda cfg: plan.final_outputs(cfg)),
