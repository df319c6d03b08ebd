"""Configuration: validation with readable errors, defaults, and per-job parameter slices.

The JSON schema (workflow/schemas/config.schema.yaml) says which keys exist,
their types, allowed values and defaults. ``validate`` checks a config against
it and against the things a schema cannot express (names that refer to other
sections, files that must exist, prompt CSVs that must parse), and raises one
``ConfigError`` listing every problem, each naming the key, the value and what
is allowed. The Snakefile calls it before any job is scheduled.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from . import assets

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
NONE = "none"  # the grid value meaning "no pruning" / "no attack"


class ConfigError(ValueError):
    """The config is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"invalid {source} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n"
                         + "\n".join(f"  - {p}" for p in problems))


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(path.read_text())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error, schema_root: dict) -> str:
    """One line for a jsonschema error: the key, the offending value, and what is allowed."""
    key, v, s = _key(error.absolute_path), error.instance, error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(s.get("properties", {}))
        extra = sorted(set(v) - set(allowed)) if isinstance(v, dict) else []
        return (f"{_key([*error.absolute_path, extra[0]]) if extra else key}: unknown key "
                f"{', '.join(map(repr, extra))}; allowed keys here: {', '.join(allowed)}")
    if error.validator == "enum":
        return f"{key}: {v!r} is not allowed; allowed values: {', '.join(map(repr, s['enum']))}"
    if error.validator == "type":
        return f"{key}: {v!r} has type {type(v).__name__}, expected {s['type']}"
    if error.validator == "required":
        return f"{key}: missing required key; {error.message}"
    if error.validator in ("minItems", "minProperties"):
        return f"{key}: {v!r} has {len(v)} entries; at least {error.validator_value} required"
    if error.validator == "oneOf":
        kinds = [sub.get("type", "?") for sub in s["oneOf"]]
        return f"{key}: {v!r} has type {type(v).__name__}; allowed types: {', '.join(map(str, kinds))}"
    if error.validator == "const":
        return f"{key}: {v!r} is not allowed; allowed value: {error.validator_value!r}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{key}: {v!r} is out of range ({error.validator} {error.validator_value})"
    return f"{key}: {error.message}"


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = Draft202012Validator(schema)
    return [_describe(e, schema) for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))]


def fill_defaults(obj: Any, schema: dict, root: dict | None = None) -> Any:
    """Copy of obj with every schema default filled in (recursing into objects and maps)."""
    root = root or schema
    if "$ref" in schema:
        schema = _resolve(schema["$ref"], root)
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for name, sub in schema.get("properties", {}).items():
        sub_resolved = _resolve(sub["$ref"], root) if "$ref" in sub else sub
        has_default = "default" in sub or "default" in sub_resolved
        if name not in out and has_default:   # a default beside a $ref wins over the referenced one's
            out[name] = copy.deepcopy(sub["default"] if "default" in sub else sub_resolved["default"])
        if name in out:
            out[name] = fill_defaults(out[name], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name in set(out) - set(schema.get("properties", {})):
            out[name] = fill_defaults(out[name], extra, root)
    return out


def _resolve(ref: str, root: dict) -> dict:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"  # names become path components and wildcards
RESERVED = {NONE, "base", "attacks", "tuning"}  # results/{model}/attacks/: shared attack results; /tuning/: selections


def _algorithm_errors(section: str, entries: dict, field: str, defs: dict, root: dict) -> tuple[dict, list[str]]:
    """Validate each entry of a section against the sub-schema its ``field`` names; fill its defaults."""
    resolved, problems = {}, []
    for name, entry in entries.items():
        kind = entry.get(field) if isinstance(entry, dict) else None
        sub = defs.get(kind)
        if sub is None:  # the generic schema pass has already reported it
            resolved[name] = entry
            continue
        schema = {**sub, "$defs": root.get("$defs", {})}
        for e in Draft202012Validator(schema).iter_errors(entry):
            problems.append(f"{section}.{name}." + _describe(e, schema).removeprefix("(top level)").lstrip("."))
        resolved[name] = fill_defaults(entry, schema)
    return resolved, problems


def _add_tuning_candidates(cfg: dict, defs: dict, root: dict) -> list[str]:
    """With tuning enabled, each tuned method's candidates become methods of their own
    (``layout.candidate``: ``esd-u.tune1``, ...), each validated as its algorithm's settings, so the
    erase stage runs them like any method. Tuned: the methods of run.methods that tuning.methods lists."""
    from .layout import candidate
    from .tuning import SearchError, candidates
    t, problems = cfg["tuning"], []
    for name in t["methods"]:
        if name not in cfg["methods"]:
            problems.append(f"tuning.methods.{name}: not a method; allowed values: {', '.join(map(repr, cfg['methods']))}")
    if not t["enabled"] or problems:
        return problems
    for c in dict.fromkeys([*cfg["run"]["targets"], *cfg["run"].get("preserve", [])]):
        if c in cfg.get("concepts", {}) and not cfg["concepts"][c].get("validation"):
            problems.append(f"concepts.{c}.validation: required when tuning is enabled (candidates are scored on "
                            f"the validation prompt sets, never on the evaluation ones)")
    for name in [m for m in cfg["run"]["methods"] if m in t["methods"]]:
        try:
            settings = candidates(t["methods"][name], t["budget"], t["search"], t["seed"], name)
        except SearchError as e:
            problems.append(str(e))
            continue
        for i, overrides in enumerate(settings, 1):
            tried, p = _algorithm_errors("tuning.methods", {name: {**cfg["methods"][name], **overrides}}, "algorithm",
                                         defs, root)
            problems += [f"{q} (candidate {i}: {overrides})" for q in p]
            if candidate(name, i) in cfg["methods"]:
                problems.append(f"methods.{candidate(name, i)}: the name of a tuning candidate of {name!r}; rename it")
            cfg["methods"][candidate(name, i)] = tried[name]
    return problems


def _reference_errors(cfg: dict) -> list[str]:
    problems = []
    refs = [("run.models", "models", ()), ("run.targets", "concepts", ()),
            ("run.preserve", "concepts", ()), ("run.methods", "methods", ()),
            ("run.prunings", "prunings", (NONE,)), ("run.attacks", "attacks", (NONE,))]
    for key, section, extra in refs:
        known = [*extra, *cfg.get(section, {})]
        for value in cfg["run"].get(key.split(".")[1]) or []:
            if value not in known:
                problems.append(f"{key}: {value!r} is not defined; allowed values: {', '.join(map(repr, known)) or '(none defined)'}")
    import re
    for section in ("models", "concepts", "methods", "prunings", "attacks"):
        for name in cfg.get(section, {}):
            if not re.match(NAME_PATTERN, name) or name in RESERVED:
                problems.append(f"{section}.{name}: invalid name; names become file paths: use letters, digits "
                                f"and _ . + - (not starting with a symbol), and not {' or '.join(sorted(RESERVED))}")
    for name, concept in cfg.get("concepts", {}).items():
        anchor = concept.get("anchor", "")
        if isinstance(anchor, list) and len(anchor) != len(concept["erase"]):
            problems.append(f"concepts.{name}.anchor: {len(anchor)} anchors for {len(concept['erase'])} erase "
                            f"prompts; give one anchor (a string), or one per erase prompt")
    guided = [p for p in cfg["run"].get("prunings", []) if cfg.get("prunings", {}).get(p, {}).get("algorithm") == "attribution"]
    if guided and not cfg.get("attribution", {}).get("pairs"):
        problems.append(f"attribution.pairs: required by attribution-guided pruning {', '.join(map(repr, guided))} "
                        f"(the base model's table compares concept prompts with matched neutral prompts)")
    stray = [m for m in cfg["run"].get("pruned_methods") or [] if m not in cfg["run"]["methods"]]
    if stray:
        problems.append(f"run.pruned_methods: {', '.join(map(repr, stray))} not in run.methods; allowed values: "
                        f"{', '.join(map(repr, cfg['run']['methods']))}")
    problems += _expected_errors(cfg)
    overlap = set(cfg["run"]["targets"]) & set(cfg["run"].get("preserve", []))
    if overlap:
        problems.append(f"run.preserve: {sorted(overlap)} also in run.targets; a concept is erased or preserved, not both")
    return problems


ATTACK_MEASURES = ("pre_rate", "attack_rate", "asr")


def _expected_errors(cfg: dict) -> list[str]:
    """Each published number must name an erased model (and attack) the run produces."""
    problems, run = [], cfg["run"]
    for i, e in enumerate(cfg.get("expected", [])):
        grid = [("model", run["models"], False), ("target", run["targets"], False),
                ("prune", run.get("prunings", [NONE]), False), ("method", run["methods"], False),
                ("attack", [a for a in run.get("attacks", []) if a != NONE], e["measure"] in ATTACK_MEASURES)]
        for key, allowed, required in grid:
            value = e.get(key, NONE if key == "prune" else None)
            if (value is not None or required) and value not in allowed:
                problems.append(f"expected[{i}].{key}: {value!r} is not in this run; allowed values: "
                                f"{', '.join(map(repr, allowed)) or '(none: the run has no attacks)'}"
                                + (f" (measure {e['measure']!r} is measured under an attack)" if required else ""))
        if e.get("attack") and e["measure"] not in ATTACK_MEASURES:
            problems.append(f"expected[{i}].attack: measure {e['measure']!r} is not measured under an attack; "
                            f"drop attack, or use one of {', '.join(ATTACK_MEASURES)}")
    return problems


def _file_errors(cfg: dict, root: Path) -> list[str]:
    from .prompts import PromptSetError, load_prompts
    problems = []
    for name, model in cfg["models"].items():
        if model["source"] == "hub":
            for key in ("repo_id", "revision"):
                if not model.get(key):
                    problems.append(f"models.{name}.{key}: required for source 'hub' "
                                    f"(a pinned revision makes every download the same model)")
        elif model["source"] == "local" or (model["source"] == "conceptworld" and not model.get("retrain")):
            path = model.get("path")
            # a local model is a pipeline directory; ConceptWorld's weights hold one in pipeline/
            index = "model_index.json" if model["source"] == "local" else "pipeline/model_index.json"
            if not path:
                problems.append(f"models.{name}.path: required for source {model['source']!r}")
            elif not (root / path / index).is_file():
                problems.append(f"models.{name}.path: {path!r} is not a {model['source']} model directory "
                                f"({root / path / index} not found)")
    problems += _attack_file_errors(cfg, root)
    problems += _pruning_file_errors(cfg, root)
    problems += _method_file_errors(cfg, root)
    problems += _world_errors(cfg, root)
    used = set(cfg["run"]["targets"]) | set(cfg["run"].get("preserve", []))
    prompt_files = [(f"concepts.{name}.{key}", cfg["concepts"][name][key]) for name in sorted(used & set(cfg["concepts"]))
                    for key in ("prompts", "validation") if key in cfg["concepts"][name]]
    if cfg.get("quality", {}).get("prompts"):
        prompt_files.append(("quality.prompts", cfg["quality"]["prompts"]))
    for key, path in prompt_files:
        unmade = assets.problems(cfg["assets"], path, key)   # under resources/ but no rule makes it, or unpinned
        if unmade or assets.producer(cfg["assets"], path):   # a fetch or split job makes it, and checks it
            problems += unmade
            continue
        try:
            load_prompts(root / path, cfg["generation"]["guidance"])
        except PromptSetError as e:
            problems.append(f"{key}: {e}")
    for name in sorted(used & set(cfg["concepts"])):
        key, path = f"concepts.{name}.detector.model_path", cfg["concepts"][name]["detector"].get("model_path")
        unmade = assets.problems(cfg["assets"], path, key) if path else []
        if path and not unmade and not assets.producer(cfg["assets"], path) and not (root / path).is_file():
            unmade = [f"{key}: {path!r} not found ({root / path})"]
        problems += unmade
    real = cfg["quality"]["fid"].get("real_images") if cfg.get("quality", {}).get("prompts") else None
    if real and not (root / real).is_dir():
        problems.append(f"quality.fid.real_images: {real!r} is not a directory ({root / real} not found)")
    return problems


def _resolve_detector_models(cfg: dict) -> list[str]:
    """A NudeNet detector of a fetched model reads it from the asset's path, unless model_path names a copy."""
    from .score.nudenet import MODEL_ASSETS
    problems = []
    for name, concept in cfg.get("concepts", {}).items():
        det = concept["detector"]
        if det["kind"] != "nudenet" or det["model"] not in MODEL_ASSETS:
            continue
        if det.get("resolution") is not None:
            problems.append(f"concepts.{name}.detector.resolution: {det['resolution']!r} is not allowed with model "
                            f"{det['model']!r}, whose input size is fixed by the model file; remove it")
        if not det.get("model_path"):
            det["model_path"] = assets.path(cfg["assets"], MODEL_ASSETS[det["model"]])
    return problems


def _world_errors(cfg: dict, root: Path) -> list[str]:
    """A ConceptWorld detector must name a class of the world its model was trained on (world.json
    beside shipped weights; retraining uses the default world)."""
    import json

    from .conceptworld.world import World, world_from_dict
    problems = []
    used = set(cfg["run"]["targets"]) | set(cfg["run"].get("preserve", []))
    for m in cfg["run"]["models"]:
        model = cfg["models"][m]
        if model["source"] != "conceptworld":
            continue
        saved = root / model.get("path", "") / "world.json"
        world = world_from_dict(json.loads(saved.read_text())) \
            if not model.get("retrain") and saved.is_file() else World()
        for name in sorted(used & set(cfg["concepts"])):
            det = cfg["concepts"][name]["detector"]
            allowed = world.values(det["attribute"]) if det["kind"] == "conceptworld" else ()
            if det["kind"] == "conceptworld" and det["value"] not in allowed:
                problems.append(f"concepts.{name}.detector.value: {det['value']!r} is not a {det['attribute']} in "
                                f"the world of model {m!r}; allowed values: {', '.join(map(repr, allowed))}")
    return problems


def _scoring_errors(cfg: dict) -> list[str]:
    """What the detector and quality schemas cannot say: a CLIP target must be a candidate, and
    ConceptWorld's classifier (detector or FID features) exists only in ConceptWorld models."""
    problems = []
    used = set(cfg["run"]["targets"]) | set(cfg["run"].get("preserve", []))
    cw_models = [m for m in cfg["run"]["models"] if cfg["models"][m]["source"] != "conceptworld"]
    for name in sorted(used & set(cfg["concepts"])):
        det = cfg["concepts"][name]["detector"]
        if det["kind"] == "clip" and det["target"] not in det["candidates"]:
            problems.append(f"concepts.{name}.detector.target: {det['target']!r} is not one of the candidates; "
                            f"allowed values: {', '.join(map(repr, det['candidates']))}")
        if det["kind"] == "conceptworld" and cw_models:
            problems.append(f"concepts.{name}.detector.kind: 'conceptworld' needs a ConceptWorld model, but "
                            f"run.models has {', '.join(map(repr, cw_models))}; use nudenet or clip")
    fid = cfg.get("quality", {}).get("fid", {})
    if fid.get("features") == "conceptworld" and cw_models and cfg["quality"].get("prompts"):
        problems.append(f"quality.fid.features: 'conceptworld' needs a ConceptWorld model, but run.models has "
                        f"{', '.join(map(repr, cw_models))}; use inception")
    gen = cfg.get("generation", {})
    if fid.get("features", "none") != "none" and cfg["quality"].get("prompts") \
            and (gen.get("max_prompts") or 2) * gen.get("images_per_prompt", 1) < 2:
        problems.append(f"quality.fid.features: FID needs at least 2 images per variant, but generation.max_prompts "
                        f"{gen['max_prompts']} x images_per_prompt {gen.get('images_per_prompt', 1)} gives 1")
    return problems


def _attack_detector_errors(cfg: dict, schema: dict) -> list[str]:
    """An attack's detector keys, merged over each target's detector of that kind, must make a valid detector."""
    problems = []
    for name in sorted(set(cfg["run"].get("attacks", [])) - {NONE}):
        for kind, keys in cfg["attacks"][name].get("detector", {}).items():
            if "kind" in keys:
                problems.append(f"attacks.{name}.detector.{kind}.kind: an attack cannot change the detector's kind")
                continue
            for target in cfg["run"]["targets"]:
                det = cfg["concepts"][target]["detector"]
                if det["kind"] == kind:
                    _, p = _algorithm_errors(f"attacks.{name}.detector (over concepts.{target}",
                                             {"detector)": {**det, **keys}}, "kind", schema["$defs"]["detectors"],
                                             schema)
                    problems += p
    return problems


def _attack_file_errors(cfg: dict, root: Path) -> list[str]:
    """Files the run's attacks read: Ring-A-Bell's paired prompts, one CSV per target."""
    problems = []
    for name in cfg["run"].get("attacks", []):
        pattern = cfg.get("attacks", {}).get(name, {}).get("pairs")
        for target in cfg["run"]["targets"] if pattern else []:
            path = root / pattern.format(concept=target)
            if not path.is_file() and not assets.producer(cfg["assets"], pattern.format(concept=target)):
                problems.append(f"attacks.{name}.pairs: {str(path)!r} not found (for target {target!r}); "
                                f"it needs columns prompt, prompt_without")
    return problems


def _method_file_errors(cfg: dict, root: Path) -> list[str]:
    """What the run's AdvUnlearn methods retain: a prompt CSV, or the targets' preserve prompts."""
    problems = []
    for name in cfg["run"].get("methods", []):
        method = cfg.get("methods", {}).get(name, {})
        if method.get("algorithm") != "advunlearn" or not method.get("retain_weight", 0.3) > 0:
            continue
        retain = method.get("retain", "preserve")
        if retain == "preserve":
            problems += [f"methods.{name}.retain: 'preserve' but concepts.{t} has no preserve prompts; "
                         f"give it some, or set retain to a CSV with a 'prompt' column"
                         for t in cfg["run"]["targets"] if not cfg["concepts"].get(t, {}).get("preserve")]
        elif not (root / retain).is_file() and not assets.producer(cfg["assets"], retain):
            problems.append(f"methods.{name}.retain: {retain!r} is neither 'preserve' nor a file "
                            f"({root / retain} not found); it needs a 'prompt' column")
    return problems


def _pruning_file_errors(cfg: dict, root: Path) -> list[str]:
    """Paired prompt files that pruning and attribution read, one CSV per target."""
    patterns = [(f"prunings.{n}.pairs", cfg["prunings"][n].get("pairs"))
                for n in cfg["run"].get("prunings", []) if n in cfg.get("prunings", {})]
    patterns.append(("attribution.pairs", cfg.get("attribution", {}).get("pairs")))
    return [f"{key}: {str(root / pattern.format(concept=t))!r} not found (for target {t!r}); "
            f"it needs columns prompt, prompt_without"
            for key, pattern in patterns if pattern for t in cfg["run"]["targets"]
            if not (root / pattern.format(concept=t)).is_file() and not assets.producer(cfg["assets"], pattern.format(concept=t))]


def validate(config: dict, root: str | Path = ".", schema: dict | None = None) -> dict:
    """The config with defaults filled in; raise ConfigError listing every problem found.

    Checks run in layers: the schema, then each method/detector against its own
    sub-schema, then names that refer to other sections, then files. A layer
    that needs a well-formed section runs only if that section is well formed,
    so one run reports as many independent problems as it can.
    """
    schema = schema or load_schema()
    root = Path(root)
    if isinstance(config.get("assets", {}), dict):   # the shipped registry, the config's entries over it
        config = {**config, "assets": assets.merged(config.get("assets"))}
    cfg = fill_defaults(config, schema)
    problems = schema_errors(cfg, schema)
    defs = schema["$defs"]
    if _is_map_of_maps(cfg.get("methods")):
        cfg["methods"], p = _algorithm_errors("methods", cfg["methods"], "algorithm", defs["algorithms"], schema)
        problems += p
    if _is_map_of_maps(cfg.get("methods")) and not problems:
        problems += _add_tuning_candidates(cfg, defs["algorithms"], schema)
    if _is_map_of_maps(cfg.get("attacks")):
        cfg["attacks"], p = _algorithm_errors("attacks", cfg["attacks"], "algorithm", defs["attacks_algorithms"], schema)
        problems += p
    if _is_map_of_maps(cfg.get("prunings")):
        cfg["prunings"], p = _algorithm_errors("prunings", cfg["prunings"], "algorithm", defs["prunings_algorithms"],
                                               schema)
        problems += p
    if _is_map_of_maps(cfg.get("concepts")):
        for name, concept in cfg["concepts"].items():
            concept.setdefault("erase", [name])
            if isinstance(concept.get("detector"), dict):
                det, p = _algorithm_errors(f"concepts.{name}", {"detector": concept["detector"]}, "kind",
                                           defs["detectors"], schema)
                concept["detector"] = det["detector"]
                problems += p
    if problems:  # cross-references and files assume a well-formed config
        raise ConfigError(problems)
    problems += _resolve_detector_models(cfg)
    problems += _reference_errors(cfg)
    if not problems:
        problems += _scoring_errors(cfg) + _attack_detector_errors(cfg, schema)
    if not problems:
        problems += _file_errors(cfg, root)
    if problems:
        raise ConfigError(problems)
    return cfg


def _is_map_of_maps(x) -> bool:
    return isinstance(x, dict) and all(isinstance(v, dict) for v in x.values())


def load_config(*paths: str | Path, root: str | Path = ".") -> dict:
    """Config files layered as Snakemake layers ``--configfile`` (later keys win, sections merge), validated.

    For code that plans or runs stages without Snakemake: tests, notebooks (``eraselab.api``)."""
    merged: dict = {}
    for path in paths:
        _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return validate(merged, root)


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)

