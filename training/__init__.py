"""Training recipes, one file each (``dllm train recipe=<name>``)."""
