"""Every YAML under conf/ is composed the way a command composes it, and every object node in it is
bound to its target's signature (samplers are also built), every ``decode:`` node (and bench entry)
to generate()'s: no file is skipped. Shared facts (the Hydra settings, the recipes' task mixture)
are written once."""

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

import dllm.conf
from dllm.errors import check_types
from dllm.generate import DECODE_KEYS, generate
from dllm.training.fit import TrainConfig

CONF = Path(dllm.conf.__file__).parent
# group folder -> (the primary config that takes the group, how a choice is written)
GROUPS = {"model": ("generate", "model={}"), "sampler": ("generate", "sampler={}"), "recipe": ("train", "recipe={}"),
          "sweep": ("eval", "+sweep={}"), "shared": (None, None)}


def yaml_files():
    return sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml"))


def composed(primary: str, *overrides: str, hydra: bool = False):
    with initialize_config_module("dllm.conf", version_base=None):
        return compose(primary, overrides=list(overrides), return_hydra_config=hydra)


def bind_decode(values: dict, where: str) -> None:
    """Decode settings (a ``decode:`` node, a bench entry's overrides) are generate()'s keywords."""
    assert set(values) <= set(DECODE_KEYS), f"{where}: {sorted(set(values) - set(DECODE_KEYS))} not in generate()"
    inspect.signature(generate).bind(None, None, None, **values)
    check_types(generate, values, prefix=f"{where}.")


def bind_targets(node, where: str = "") -> int:
    """Bind every ``_target_`` node under ``node`` (a plain container) to its target, and every
    ``decode`` node and bench entry (``samplers.<name>``: a sampler + decode overrides) to
    generate(); -> how many nodes."""
    count = 0
    if isinstance(node, dict):
        if isinstance(node.get("decode"), dict):
            bind_decode(node["decode"], f"{where}.decode".lstrip("."))
            count += 1
        if isinstance(node.get("samplers"), dict):
            for name, entry in node["samplers"].items():
                if isinstance(entry, dict) and "sampler" in entry:
                    bind_decode({k: v for k, v in entry.items() if k not in ("sampler", "model")},
                                f"{where}.samplers.{name}".lstrip("."))
        if "_target_" in node:
            target = get_method(node["_target_"])
            values = {k: v for k, v in node.items() if not k.startswith("_")}
            inspect.signature(target).bind(**values)
            check_types(target, values, prefix=f"{where}.")
            if isinstance(values.get("train"), dict):  # a recipe's training settings: a TrainConfig
                assert set(values["train"]) == {f for f in TrainConfig.__dataclass_fields__}, where
                TrainConfig(**values["train"])
            count += 1
        for key, value in node.items():
            count += bind_targets(value, f"{where}.{key}".lstrip("."))
    elif isinstance(node, list):
        count += sum(bind_targets(v, f"{where}[{i}]") for i, v in enumerate(node))
    return count


def test_every_yaml_has_a_kind():
    """A new folder under conf/ needs a line in GROUPS (and so a way to be checked here)."""
    for rel in yaml_files():
        assert len(rel.parts) == 1 or rel.parts[0] in GROUPS, f"conf/{rel}: add its group to GROUPS"


@pytest.mark.parametrize("primary", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_primary_config_composes_and_binds(primary):
    cfg = composed(primary, hydra=True)
    assert cfg.hydra.run.dir == "." and cfg.hydra.output_subdir is None and cfg.hydra.job.chdir is False
    assert cfg.hydra.job_logging.root.level == "ERROR"  # shared/hydra: no log files, no chatter
    del cfg.hydra
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert not set(values) & set(DECODE_KEYS), f"{primary}: decode settings go under decode:"
    bind_targets(values)


def test_an_unknown_decode_key_fails_the_binding():
    bind_targets({"decode": {"gen_length": 8, "cache": "dual"}, "samplers": {"a": {"sampler": {}, "steps": 4}}})
    for bad in ({"decode": {"gen_lenght": 8}}, {"samplers": {"a": {"sampler": {}, "step": 4}}},
                {"x": {"decode": {"trace": True}}}):
        with pytest.raises(AssertionError, match="not in generate"):
            bind_targets(bad)


@pytest.mark.parametrize("rel", [p for p in yaml_files()
                                 if len(p.parts) == 2 and p.parts[0] in ("model", "sampler", "recipe")],
                         ids=str)
def test_group_choice_composes_and_binds(rel):
    group, name = rel.parts[0], rel.stem
    primary, choice = GROUPS[group]
    cfg = composed(primary, choice.format(name))
    node = OmegaConf.to_container(cfg[group], resolve=True, throw_on_missing=False)
    assert "_target_" in node, f"conf/{rel} names no _target_"
    assert bind_targets(node, group) >= 1
    if group == "sampler":
        from dllm.samplers import Sampler

        assert isinstance(instantiate(cfg[group]), Sampler)


def test_recipe_yaml_holds_only_the_settings_that_differ():
    """A recipe's ``train:`` node is the recipe's own defaults (its module's TRAIN) plus the keys its
    YAML writes; a derived recipe writes only what differs from its parent."""
    import yaml

    from dllm.conf import TRAIN_DEFAULTS

    for path in sorted((CONF / "recipe").glob("*.yaml")):
        text = yaml.safe_load(path.read_text())
        written = text.get("train") or {}
        node = OmegaConf.to_container(composed("train", f"recipe={path.stem}").recipe, resolve=True)
        recipe = node["_target_"].split(".")[-2]
        if recipe not in TRAIN_DEFAULTS:
            assert "train" not in node, path.name  # learn2pd_filter, trajectories: no optimisation loop of fit()
            continue
        parent = next((d for d in text.get("defaults", []) if isinstance(d, str) and d != "_self_"), None)
        base = TRAIN_DEFAULTS[recipe] if parent is None else TrainConfig(**OmegaConf.to_container(
            composed("train", f"recipe={parent}").recipe.train))
        for key, value in written.items():
            assert getattr(base, key) != value, f"{path.name}: train.{key} repeats the default {value!r}"
        assert TrainConfig(**node["train"]) == base.updated(written)


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONF / "sweep").glob("*.yaml")))
def test_sweep_values_compose(sweep):
    """Every value a sweep lists composes (a group choice that exists, a key that exists) and binds."""
    params = composed("eval", f"+sweep={sweep}", hydra=True).hydra.sweeper.params
    grid = {k: str(v).split(",") for k, v in params.items()}
    for key, values in grid.items():
        for value in values:
            chosen = {k: (value if k == key else v[0]) for k, v in grid.items()}
            cfg = composed("eval", f"+sweep={sweep}", *[f"{k}={v}" for k, v in chosen.items()])  # an unknown key fails
            assert bind_targets(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)) >= 2


def test_shared_facts_are_written_once():
    texts = {p: p.read_text() for p in CONF.rglob("*.yaml")}
    hydra_lines = [p for p, t in texts.items() if "hydra/job_logging" in t or "output_subdir" in t]
    assert hydra_lines == [CONF / "shared" / "hydra.yaml"]
    mixture = str(composed("train").mixture)
    assert [p for p, t in texts.items() if mixture in t] == [CONF / "train.yaml"]
    for p in CONF.glob("*.yaml"):
        if "defaults:" in texts[p] and p.stem != "serve_ray":
            assert "- shared/hydra" in texts[p], p.name
