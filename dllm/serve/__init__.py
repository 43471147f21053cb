"""dllm's OpenAI-compatible server (``dllm serve``): the FastAPI app and its scheduler."""
