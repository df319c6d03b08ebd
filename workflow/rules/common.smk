# Validation and the helpers every rule uses. The logic lives in src/eraselab (plan, config, layout).
import json

from eraselab import layout, plan
from eraselab.config import ConfigError, validate

try:
    config.update(validate(config, root="."))  # paths in the config are relative to the working directory
except ConfigError as e:
    raise WorkflowError(str(e))


wildcard_constraints:
    model=layout.NAME,
    target=layout.NAME,
    prune=layout.NAME,
    method=layout.NAME,
    promptset=layout.NAME,
    variant=layout.VARIANT_RE,
    attack=layout.NAME,


def spec(fn):
    """A params function giving a job's config slice as JSON (its change reruns the job)."""
    return lambda w: json.dumps(fn(config, **dict(w)), sort_keys=True)


PROMPT_SETS = layout.prompt_sets(config["run"])
