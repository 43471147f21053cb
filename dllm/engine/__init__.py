"""The decode engine: one step function over live rows, driven by ``dllm.generate`` and the server."""

from dllm.engine.engine import Engine
from dllm.engine.prepare import check_prompts, decode_window, row, settings
from dllm.engine.protocol import CachedDecodeModel, DecodeModel
from dllm.engine.recorder import GenerationResult, Recorder, SequenceStats, Trace
from dllm.engine.row import Row, Settings

__all__ = ["Engine", "Row", "Settings", "settings", "row", "check_prompts", "decode_window", "DecodeModel",
           "CachedDecodeModel", "Recorder", "SequenceStats", "Trace", "GenerationResult"]
