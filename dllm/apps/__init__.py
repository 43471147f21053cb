"""Hydra applications behind the ``dllm`` console script, and what they share."""
