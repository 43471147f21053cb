"""Hydra config groups (design.md §4). Besides the YAML files, one structured config per training
recipe: ``training/<recipe>`` is the recipe's ``TRAIN`` (a ``TrainConfig``), so a recipe YAML's
``train:`` node is typed and holds only the values that differ from the recipe's defaults."""

from hydra.core.config_store import ConfigStore

from dllm.training import ar_sft, block_diffusion, certainty_forcing, mdlm_sft

TRAIN_DEFAULTS = {"mdlm_sft": mdlm_sft.TRAIN, "ar_sft": ar_sft.TRAIN, "block_diffusion": block_diffusion.TRAIN,
                  "certainty_forcing": certainty_forcing.TRAIN}

for _name, _train in TRAIN_DEFAULTS.items():
    ConfigStore.instance().store(group="training", name=_name, node=_train)
