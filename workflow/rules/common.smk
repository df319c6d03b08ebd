# Validation and the helpers every rule uses. The logic lives in src/eraselab (plan, config, layout).
import json
import os
import sys

from eraselab import layout, plan, sharing
from eraselab.config import ConfigError, validate

# Jobs run `eraselab`: the one installed beside the Python that runs Snakemake, whether or not its
# environment was activated (`.venv/bin/snakemake ...`). Jobs, and SLURM jobs, inherit this PATH.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

try:
    config.update(validate(config, root="."))  # paths in the config are relative to the working directory
except ConfigError as e:
    raise WorkflowError(str(e))


def ignore_file_times():
    """File times never decide what reruns here: `dvc pull`, git and copies reset them, and links
    into a shared DVC cache share one time among every workspace. Content decides instead
    (profiles/default/config.yaml). Snakemake 9 compares input and output times whatever
    --rerun-triggers says, and marking inputs `ancient` would also stop a rerun from reaching the
    jobs downstream, so no input is ever newer than an output in this workflow."""
    import snakemake.io

    async def never_newer(self, time):
        return False

    if not hasattr(snakemake.io._IOFile, "is_newer"):
        raise WorkflowError("ignore_file_times: snakemake.io._IOFile.is_newer is gone; "
                            "this Snakemake version needs another way to ignore file times")
    snakemake.io._IOFile.is_newer = never_newer


ignore_file_times()
if workflow.is_main_process:  # Snakemake rewrites these records in place: never through a DVC link
    sharing.make_private(".snakemake/metadata")


wildcard_constraints:
    model=layout.NAME,
    target=layout.NAME,
    prune=layout.NAME,
    method=layout.NAME,
    seed=layout.SEED,
    promptset=layout.NAME,
    variant=layout.VARIANT_RE,
    attack=layout.NAME,
    asset=layout.NAME,
    file=r"[^/]+",
    value=layout.NAME,


def spec(fn):
    """A params function giving a job's config slice as JSON (its change reruns the job)."""
    return lambda w: json.dumps(fn(config, **dict(w)), sort_keys=True)


PROMPT_SETS = layout.prompt_sets(config["run"])


def resources_of(rule):
    """A rule's resources from the config's `resources:` section (threads are set apart); a retried
    job asks for more time and memory (plan.resources)."""
    out = {k: v for k, v in plan.resources(config, rule).items() if k != "threads"}
    for key in ("runtime", "mem_mb"):
        if key in out:
            out[key] = lambda w, attempt, key=key: plan.resources(config, rule, attempt)[key]
    return out


def threads_of(rule):
    return plan.resources(config, rule).get("threads", 1)


def lineage(rule):
    """A params function: the digest of everything upstream of a job (plan.lineage), so a job reruns
    when an upstream job changed in an earlier invocation; timestamps are not a rerun trigger here."""
    return lambda w: plan.lineage(config, rule, memo=LINEAGE_MEMO, **dict(w))


LINEAGE_MEMO = {}  # one config and one code per Snakemake process: each job's identity is computed once


def code(rule):
    """A params function: the fingerprint of the code a job runs (plan.job_code). Snakemake's params
    trigger compares it, so a code edit reruns exactly the jobs that execute the edited code; the
    command hands it to the stage (`eraselab --code`), which records it in the outputs' provenance."""
    return lambda w: plan.job_code(config, rule, **dict(w))


def flags(*names):
    """A params function: `--name PATH` for each optional input a job has."""
    return lambda w, input: " ".join(f"--{n} {input[n]}" for n in names if n in input.keys() and input[n])


def after_tuning(rule, inputs):
    """A rule's input function, ``inputs(config, **wildcards)``, that first waits for the tuning selections
    the job's settings follow (plan.selections): while rule select has not run (or will rerun), the
    checkpoint defers the job, and Snakemake plans it again, with the chosen setting, once select is done."""
    def after(w):
        for s in plan.selections(config, rule, **dict(w)):
            checkpoints.select.get(**s)
        return inputs(config, **dict(w))
    return after


def finish_rules(workflow):
    """Run after every rule is defined: each rule that runs eraselab runs its planned command and hands
    over its code fingerprint; `resources:` names only rules."""
    for r in workflow.rules:
        if r.shellcmd and r.shellcmd.startswith("eraselab "):
            expected = f"--code {{params.code}} {plan.command(r.name)} "
            if expected not in r.shellcmd:
                raise WorkflowError(f"rule {r.name}: its command must run `eraselab ... {expected}...` "
                                    f"(plan.command names the stage a rule runs)")
    unknown = set(config["resources"]) - {"default"} - {r.name for r in workflow.rules}
    if unknown:
        raise WorkflowError(f"invalid config: resources: {', '.join(sorted(unknown))} is not a rule; "
                            f"rules: {', '.join(sorted(r.name for r in workflow.rules))}")
