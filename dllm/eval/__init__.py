"""Evaluation utilities for dllm: task suites, prompts and scorers."""
