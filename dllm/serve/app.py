"""``dllm serve``: an OpenAI-compatible HTTP server over the one decode loop.

Endpoints: POST /v1/completions, POST /v1/chat/completions (the tokenizer's chat template),
GET /v1/models, GET /health, GET /metrics (Prometheus text). The dLLM fields ride in the same body
(OpenAI clients pass them with ``extra_body``): ``sampler`` (a registry name), ``sampler_args``
(its knobs), and the decode settings of :data:`REQUEST_DECODE` (``block_length``, ``cache``,
``multi_block``, ...), whose defaults are the server's ``decode:`` node. Errors are OpenAI-style
JSON bodies naming the field.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from omegaconf import OmegaConf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dllm.engine import decode_window, settings
from dllm.errors import DllmError, check, check_types
from dllm.generate import DECODE_KEYS, encode_prompts, generate
from dllm.samplers import SAMPLERS
from dllm.serve.scheduler import Job, QueueFull, Scheduler

# The decode settings a request may set: generate()'s keywords, less gen_length (the request's
# max_tokens, rounded up to whole windows) and chat_template (the endpoint decides: chat turns always
# go through the template, completions follow the server's decode.chat_template).
REQUEST_DECODE = tuple(k for k in DECODE_KEYS if k not in ("gen_length", "chat_template"))
KNOWN = {"model", "prompt", "messages", "max_tokens", "temperature", "top_p", "stop", "stream", "user", "n",
         "stream_options", "sampler", "sampler_args", *REQUEST_DECODE}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("dllm_requests", "requests received", ["endpoint", "status"], registry=r)
        self.queue = Gauge("dllm_queue_depth", "requests waiting", registry=r)
        self.batch = Gauge("dllm_live_batch", "rows in the running forward", registry=r)
        self.steps = Counter("dllm_engine_steps", "engine steps (each one forward over every live row)", registry=r)
        self.forwards = Counter("dllm_forwards", "model forwards counted per row (NFE)", registry=r)
        self.tokens = Counter("dllm_generated_tokens", "generated tokens (prompt and padding excluded)", registry=r)
        self.tpf = Histogram("dllm_tokens_per_forward", "tokens per forward of finished requests", registry=r,
                             buckets=(1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32))
        self.tps = Gauge("dllm_tokens_per_second", "generated tokens/s of the last finished request", registry=r)
        self.ttft = Histogram("dllm_time_to_first_token_seconds", "time to the first streamed text", registry=r)
        self.latency = Histogram("dllm_request_latency_seconds", "request latency", registry=r)

    def record(self, stats, latency: float) -> None:
        self.forwards.inc(stats.nfe)
        self.tokens.inc(stats.gen_tokens)
        self.tpf.observe(stats.tokens_per_forward)
        self.tps.set(stats.tokens_per_second)
        self.latency.observe(latency)


def prompt_ids(body: dict, state, chat: bool) -> list[int]:
    """The request's prompt as ids: chat turns through the tokenizer's template, or the prompt text."""
    tok = state.model.tokenizer
    if chat:
        msgs = body.get("messages")
        ok = isinstance(msgs, list) and msgs and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                     and m.get("role") in ("system", "user", "assistant") for m in msgs)
        if not ok or not any(m["content"].strip() for m in msgs):
            raise ApiError(400, "messages must be a non-empty list of {role: system|user|assistant, content: text}",
                           "messages")
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        return encode_prompts(tok, ["\n".join(m["content"] for m in msgs)], chat_template=False)[0]  # no template
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "prompt must be a non-empty string", "prompt")
    return encode_prompts(tok, [prompt], chat_template=state.decode.get("chat_template"))[0]


def request_sampler(body: dict, state):
    """The sampler a request names (default: the server's), its knobs checked by its constructor.
    Samplers are pure: equal knobs share one instance, so their rows share one sampler call."""
    name = body.get("sampler") or state.sampler_name
    if name not in SAMPLERS:
        raise ApiError(400, f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}", "sampler")
    knobs = dict(state.sampler_knobs) if name == state.sampler_name else {}
    extra = body.get("sampler_args") or {}
    if not isinstance(extra, dict):
        raise ApiError(400, "sampler_args must be an object of the sampler's knobs", "sampler_args")
    knobs.update(extra)
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            knobs[field] = body[field]
    key = (name, json.dumps(knobs, sort_keys=True, default=str))
    if key not in state.samplers:
        try:
            state.samplers.setdefault(key, SAMPLERS[name](**knobs))
        except (DllmError, TypeError, ValueError) as e:
            raise ApiError(400, f"sampler {name}: {str(e).splitlines()[0]}", "sampler_args") from e
    return state.samplers[key]


def request_decode(body: dict, state) -> dict:
    """The request's decode settings: the server's ``decode:`` node, with each field the body sets
    (a null field keeps the default), typed as generate() types them."""
    decode = {k: v for k, v in state.decode.items() if k in REQUEST_DECODE}
    decode.update({k: body[k] for k in REQUEST_DECODE if body.get(k) is not None})
    for key, value in decode.items():
        try:
            check_types(generate, {key: value})
        except DllmError as e:
            raise ApiError(400, str(e), key) from e
    return decode


def decode_settings(body: dict, state, sampler, n_prompt: int, decode: dict):
    """Answer area, window, cache, multi-block, ... checked as ``dllm generate`` checks them."""
    cfg = state.cfg
    max_tokens = body.get("max_tokens") or cfg.default_max_tokens
    if not isinstance(max_tokens, int) or not 0 < max_tokens <= cfg.max_tokens_limit:
        raise ApiError(400, f"max_tokens must be an integer in [1, {cfg.max_tokens_limit}], got {max_tokens!r}",
                       "max_tokens")
    block_length = decode.get("block_length")
    if not (block_length is None or block_length > 0):
        raise ApiError(400, f"block_length must be a positive integer, got {block_length!r}", "block_length")
    window = decode_window(state.model, block_length)
    gen_length = -(-max_tokens // window) * window
    try:
        s = settings(state.model, sampler, gen_length=gen_length, **{k: v for k, v in decode.items() if k != "seed"})
        check(n_prompt + gen_length <= state.model.max_length,
              f"prompt ({n_prompt} tokens) + max_tokens rounded to whole blocks ({gen_length}) exceeds the model's "
              f"max_length {state.model.max_length}")
    except DllmError as e:
        msg = str(e)
        raise ApiError(400, msg, next((f for f in ("multi_block", "cache", "steps", "cfg_scale") if f in msg),
                                      "block_length")) from e
    return s


def parse_request(body: dict, state, chat: bool) -> Job:
    """Validate an OpenAI body (plus the dLLM fields) into a scheduler job; ApiError names the field."""
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; allowed: {sorted(KNOWN)}", unknown[0])
    if body.get("model") not in (None, state.name):
        raise ApiError(404, f"model {body.get('model')!r} is not served here; available: [{state.name!r}]", "model",
                       "model_not_found")
    if int(body.get("n") or 1) != 1:
        raise ApiError(400, "n must be 1", "n")
    ids = prompt_ids(body, state, chat)
    decode = request_decode(body, state)
    s = decode_settings(body, state, request_sampler(body, state), len(ids), decode)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not (isinstance(stop, list) and all(isinstance(x, str) for x in stop)):
        raise ApiError(400, "stop must be a string or a list of strings", "stop")
    return Job(prompt_ids=ids, settings=s, seed=decode.get("seed"), stop=stop)


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.status}},
                        status_code=e.status)


class Reply:
    """One request's answer in OpenAI's shapes (completion or chat; whole or as stream chunks)."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model, self.created = chat, model, int(time.time())
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.object = "chat.completion" if chat else "text_completion"

    def choice(self, text: str, finish: str | None, stream: bool) -> dict:
        if self.chat:
            return {"index": 0, "delta" if stream else "message": {"role": "assistant", "content": text},
                    "finish_reason": finish}
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

    @staticmethod
    def usage(done: dict) -> dict:
        return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
                "total_tokens": done["prompt_tokens"] + done["completion_tokens"]}

    def body(self, done: dict) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": [self.choice(done["text"], done["finish_reason"], False)], "usage": self.usage(done),
                "dllm": done["stats"]}

    def chunk(self, kind: str, payload) -> dict:
        out = {"id": self.id, "object": self.object + (".chunk" if self.chat else ""), "created": self.created,
               "model": self.model}
        if kind == "delta":
            out["choices"] = [self.choice(payload, None, True)]
        else:
            out.update(choices=[self.choice("", payload["finish_reason"], True)], usage=self.usage(payload),
                       dllm=payload["stats"])
        return out


async def sse(events: asyncio.Queue, reply: Reply, job: Job, on_done):
    """Server-Sent Events: one chunk per grown committed prefix, then the finish chunk and [DONE]."""
    try:
        while True:
            kind, payload = await events.get()
            if kind == "error":
                yield f"data: {json.dumps({'error': {'message': payload, 'type': 'server_error'}})}\n\n"
                break
            yield f"data: {json.dumps(reply.chunk(kind, payload))}\n\n"
            if kind == "done":
                on_done()
                break
        yield "data: [DONE]\n\n"
    finally:  # a client that left frees its row at the next step
        job.cancelled.set()


async def wait_done(events: asyncio.Queue, job: Job) -> dict:
    """The finished answer of a non-streamed request (its row is freed if the client leaves first)."""
    kind = None
    try:
        while kind != "done":
            kind, payload = await events.get()
            if kind == "error":
                raise ApiError(500, payload, None, "server_error")
        return payload
    finally:
        if kind != "done":
            job.cancelled.set()


def create_app(cfg, load_model) -> FastAPI:
    """``load_model()`` -> (model, sampler, served name); it runs in a thread while /health says loading."""
    app = FastAPI(title="dllm")
    state = type("State", (), {})()
    state.cfg, state.model, state.metrics, state.samplers = cfg, None, Metrics(), {}
    state.decode = OmegaConf.to_container(cfg.decode, resolve=True)  # every request's defaults
    state.error = None

    def load():
        try:
            model, sampler, name = load_model()
            state.sampler_name = next(k for k, v in SAMPLERS.items() if isinstance(sampler, v))
            state.sampler_knobs = {k: v for k, v in vars(sampler).items() if not k.startswith("_")}
            state.name, state.model = name, model
            state.scheduler = Scheduler(model, cfg.max_batch, cfg.max_queue, state.metrics,
                                        cfg.get("batching", "continuous"))
        except Exception as e:  # noqa: BLE001 — reported by /health
            state.error = f"{type(e).__name__}: {e}"

    threading.Thread(target=load, daemon=True).start()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        state.metrics.requests.labels(request.url.path, str(e.status)).inc()
        return error_response(e)

    def ready():
        if state.error:
            raise ApiError(503, f"the model failed to load: {state.error}", kind="server_error")
        if state.model is None:
            raise ApiError(503, "the model is still loading: retry shortly", kind="server_error")

    @app.get("/health")
    async def health():
        ready()
        return {"status": "ok", "model": state.name, "queue": len(state.scheduler.waiting)}

    @app.get("/v1/models")
    async def models():
        ready()
        return {"object": "list", "data": [{"id": state.name, "object": "model", "owned_by": "dllm", "created": 0}]}

    @app.get("/metrics")
    async def metrics():
        if state.model is not None:
            state.metrics.queue.set(len(state.scheduler.waiting))
        return PlainTextResponse(generate_latest(state.metrics.registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    async def complete(request: Request, chat: bool):
        ready()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({e})", None) from e
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", None)
        job = await asyncio.to_thread(parse_request, body, state, chat)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job.emit = lambda kind, payload: loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
        try:
            state.scheduler.submit(job)
        except QueueFull as e:
            raise ApiError(429, str(e), None, "rate_limit_error") from e
        reply = Reply(chat, state.name)
        if body.get("stream"):
            def done():
                state.metrics.requests.labels(request.url.path, "200").inc()

            return StreamingResponse(sse(events, reply, job, done), media_type="text/event-stream")
        payload = await wait_done(events, job)
        state.metrics.requests.labels(request.url.path, "200").inc()
        return reply.body(payload)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    return app
