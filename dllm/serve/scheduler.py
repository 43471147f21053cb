"""The server's scheduler: one thread owns the model and runs the one decode loop
(:func:`dllm.generate.generate`) over batches of waiting requests.

Batching (this version): requests whose decode settings are equal (sampler and knobs, cache,
window, answer area) and that are not seeded share one ``generate`` call, up to ``max_batch``
rows; seeded requests run alone, so a seeded request's text never depends on its neighbours.
Every step, a monitor hands each row's left-contiguous committed prefix to its request (streaming)
and retires rows whose client left or whose text hit a stop string.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from dllm.generate import answer_text, generate
from dllm.samplers.base import Sampler


@dataclass
class Job:
    """One request as the scheduler sees it. ``emit(kind, payload)`` is called from the scheduler
    thread: ("delta", text) while decoding, then ("done", result dict) or ("error", message)."""

    prompt_ids: list[int]
    sampler: Sampler
    key: tuple  # equal keys may share a batch
    gen_length: int
    block_length: int | None
    cache: str
    seed: int | None
    stop: list[str]
    emit: object
    cancelled: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.perf_counter)
    sent: str = ""  # text already streamed
    prefix: int = 0  # committed prefix length already decoded
    stopped: bool = False


class QueueFull(Exception):
    pass


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one occurred."""
    hits = [text.index(s) for s in stop if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)


class Scheduler:
    def __init__(self, model, max_batch: int, max_queue: int, metrics=None):
        self.model, self.max_batch, self.max_queue, self.metrics = model, max_batch, max_queue, metrics
        self.waiting: list[Job] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self.run, daemon=True, name="dllm-scheduler")
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting requests): retry later")
            self.waiting.append(job)
            self.cond.notify()

    def take_batch(self) -> list[Job]:
        with self.cond:
            while not self.waiting:
                self.cond.wait()
            first = self.waiting.pop(0)
            batch = [first]
            if first.seed is None:
                for job in list(self.waiting):
                    if len(batch) >= self.max_batch:
                        break
                    if job.seed is None and job.key == first.key:
                        batch.append(job)
                        self.waiting.remove(job)
            return batch

    def run(self) -> None:
        while True:
            batch = [j for j in self.take_batch() if not j.cancelled.is_set()]
            if batch:
                self.decode(batch)

    def text_of(self, ids: list[int]) -> str:
        """Text of committed ids up to the first end token; a trailing partial character waits."""
        text, _ = answer_text(self.model.tokenizer, ids, self.model.eos_token_ids)
        return text[:-1] if text.endswith("\ufffd") else text

    def monitor(self, batch: list[Job]):
        mask_id = self.model.mask_token_id

        def watch(canvas) -> list[int]:
            retire = []
            for r, job in enumerate(batch):
                if job.stopped:
                    continue
                if job.cancelled.is_set():
                    job.stopped = True
                    retire.append(r)
                    continue
                row = canvas.x[r][canvas.gen[r]]
                pending = (row == mask_id).nonzero()
                k = int(pending[0]) if len(pending) else row.numel()  # left-contiguous committed prefix
                if k == job.prefix:  # nothing new to say: no decode on this step
                    continue
                job.prefix = k
                text, hit = cut_at_stop(self.text_of(row[:k].tolist()), job.stop)
                if len(text) > len(job.sent):
                    if self.metrics and not job.sent:
                        self.metrics.ttft.observe(time.perf_counter() - job.created)
                    job.emit("delta", text[len(job.sent):])
                    job.sent = text
                if hit:
                    job.stopped = True
                    retire.append(r)
            return retire

        return watch

    def decode(self, batch: list[Job]) -> None:
        first = batch[0]
        if self.metrics:
            self.metrics.batch.set(len(batch))
        try:
            res = generate(self.model, [j.prompt_ids for j in batch], first.sampler, gen_length=first.gen_length,
                           block_length=first.block_length, cache=first.cache, seed=first.seed,
                           monitor=self.monitor(batch))
        except Exception as e:  # a failing batch answers its own requests and the server goes on
            for job in batch:
                job.emit("error", f"{type(e).__name__}: {e}")
            return
        for job, ids, st in zip(batch, res.ids, res.stats):
            if job.cancelled.is_set():
                continue
            text, hit = cut_at_stop(self.text_of(ids.tolist()), job.stop)
            if len(text) > len(job.sent):
                job.emit("delta", text[len(job.sent):])
                job.sent = text
            if self.metrics:
                self.metrics.record(st, time.perf_counter() - job.created)
            job.emit("done", {"text": text, "finish_reason": "stop" if (hit or st.gen_tokens < job.gen_length)
                              else "length", "stats": st.as_dict(), "prompt_tokens": len(job.prompt_ids),
                              "completion_tokens": st.gen_tokens})
