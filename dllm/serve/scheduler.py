"""The server's scheduler: one thread owns the model and drives the one decode engine
(:class:`dllm.engine.Engine`) step by step — step-level continuous batching.

Every step: waiting requests join (up to ``max_batch`` live rows), one forward serves every live
row (rows at different windows, with different samplers, caches and prompt lengths), each row's
left-contiguous committed prefix goes to its client, and rows leave at once when their text is
complete, a stop string appears, or their client went away. A row's tokens never depend on the
rows beside it (per-row windows, cache state and generators), so a request's answer under any
load is its answer alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from dllm.engine import Engine, Settings, row as new_row
from dllm.generate import answer_text


@dataclass(eq=False)
class Job:
    """One request as the scheduler sees it. ``emit(kind, payload)`` is called from the scheduler
    thread: ("delta", text) while decoding, then ("done", result dict) or ("error", message)."""

    prompt_ids: list[int]
    settings: Settings
    seed: int | None
    stop: list[str]
    emit: object = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.perf_counter)
    sent: str = ""  # text already streamed
    prefix: int = 0  # committed prefix length already decoded
    hit_stop: bool = False


class QueueFull(Exception):
    pass


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one occurred."""
    hits = [text.index(s) for s in stop if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)


class Scheduler:
    def __init__(self, model, max_batch: int, max_queue: int, metrics=None, batching: str = "continuous"):
        """``batching``: "continuous" (requests join at the next step) or "static" (a baseline: take up
        to max_batch waiting requests, run them to completion, then take the next batch)."""
        self.model, self.max_batch, self.max_queue, self.metrics = model, max_batch, max_queue, metrics
        self.static = batching == "static"
        self.engine = Engine(model, isolate_errors=True)
        self.waiting: deque[Job] = deque()
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self.run, daemon=True, name="dllm-scheduler")
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting requests): retry later")
            self.waiting.append(job)
            self.cond.notify()

    def admit(self) -> None:
        """Waiting requests join the live rows (they decode from the next step on)."""
        with self.cond:
            while not self.waiting and not self.engine.live:
                self.cond.wait()
            joining = []
            room = 0 if (self.static and self.engine.live) else self.max_batch - self.engine.live
            while self.waiting and len(joining) < room:
                joining.append(self.waiting.popleft())
        for job in joining:
            if job.cancelled.is_set():
                continue
            try:
                self.engine.admit(new_row(self.model, job.prompt_ids, job.settings, seed=job.seed, tag=job))
            except Exception as e:  # noqa: BLE001 — a bad request answers itself; the others go on
                job.emit("error", f"{type(e).__name__}: {e}")

    @torch.no_grad()
    def run(self) -> None:
        while True:
            self.admit()
            if self.metrics:
                self.metrics.batch.set(self.engine.live)
            try:
                left = self.engine.step()
            except Exception as e:  # noqa: BLE001 — a failing forward fails its rows, not the server
                left = list(self.engine.rows)
                for r in left:
                    self.engine.retire(r)
                    r.error = f"{type(e).__name__}: {e}"
            if self.metrics:
                self.metrics.steps.inc()
            self.stream()
            for r in left:
                self.finish(r)

    def text_of(self, ids: list[int]) -> str:
        """Text of committed ids up to the first end token; a trailing partial character waits."""
        text, _ = answer_text(self.model.tokenizer, ids, self.model.eos_token_ids)
        return text[:-1] if text.endswith("\ufffd") else text

    def stream(self) -> None:
        """Each live row's grown committed prefix goes out; stop strings and cancels retire rows."""
        rows = list(self.engine.rows)
        if not rows:
            return
        board = self.engine.board
        slots = torch.tensor([r.slot for r in rows], device=board.device)
        masked = (board.x[slots] == board.mask_id) & board.gen[slots]
        first = torch.where(masked.any(-1), masked.int().argmax(-1), board.x.shape[1]).tolist()
        for r, k in zip(rows, first):
            job = r.tag
            if job.cancelled.is_set():
                self.engine.retire(r)
                self.finish(r)
                continue
            k = min(k, r.end) - r.gen_start  # left-contiguous committed prefix of the answer
            if k == job.prefix:  # nothing new to say: no decode on this step
                continue
            job.prefix = k
            text, hit = cut_at_stop(self.text_of(board.x[r.slot, r.gen_start:r.gen_start + k].tolist()), job.stop)
            self.send(job, text)
            if hit:
                job.hit_stop = True
                self.engine.retire(r)
                self.finish(r)

    def send(self, job: Job, text: str) -> None:
        if len(text) > len(job.sent):
            if self.metrics and not job.sent:
                self.metrics.ttft.observe(time.perf_counter() - job.created)
            job.emit("delta", text[len(job.sent):])
            job.sent = text

    def finish(self, r) -> None:
        job = r.tag
        if getattr(r, "error", None):
            job.emit("error", r.error)
            return
        if job.cancelled.is_set():
            return
        ids, _ = r.result
        text, cut = answer_text(self.model.tokenizer, ids.tolist(), self.model.eos_token_ids)
        text, hit = cut_at_stop(text, job.stop)
        st = r.stats
        st.gen_tokens, st.wall_time = cut, time.perf_counter() - job.created
        self.send(job, text)
        if self.metrics:
            self.metrics.record(st, time.perf_counter() - job.created)
        eos = cut < r.settings.gen_length
        job.emit("done", {"text": text, "finish_reason": "stop" if (hit or job.hit_stop or eos) else "length",
                          "stats": st.as_dict(), "prompt_tokens": len(job.prompt_ids), "completion_tokens": cut})
