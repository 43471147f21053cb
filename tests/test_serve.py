"""`dllm serve` started for real (uvicorn on a free port, in a subprocess) and called with the
official `openai` client: completions, chat, streaming, concurrency ≡ alone, errors, metrics."""

import http.client
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dllm.testing import SERVE_PROMPTS as PROMPTS, free_port

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dllm.cli", "serve", f"port={port}", "max_batch=8", "max_queue=64",
                             "sampler=llada", "max_tokens_limit=64"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:  # the server goes even when it never answered
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0)


def complete(client, prompt, **kw):
    return client.completions.create(model="dllm-tiny", prompt=prompt, max_tokens=kw.pop("max_tokens", 32),
                                     extra_body=kw.pop("extra_body", None), **kw)


def test_completion_matches_the_python_api(client):
    import dllm
    from dllm.samplers import LLaDASampler

    model = dllm.load("dllm-tiny")
    out = complete(client, PROMPTS[0])
    ref = dllm.generate(model, [PROMPTS[0]], LLaDASampler(), gen_length=32, block_length=32)
    assert out.choices[0].text == ref.text[0]
    assert out.usage.completion_tokens == ref.stats[0].gen_tokens
    assert out.model_extra["dllm"]["nfe"] == ref.stats[0].nfe
    assert client.models.list().data[0].id == "dllm-tiny"


def test_chat_and_sampler_per_request(client):
    chat = client.chat.completions.create(model="dllm-tiny", messages=[{"role": "user", "content": PROMPTS[1]}],
                                          max_tokens=32)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    fast = complete(client, PROMPTS[1], extra_body={"sampler": "threshold", "sampler_args": {"threshold": 0.9}})
    slow = complete(client, PROMPTS[1])
    assert fast.model_extra["dllm"]["nfe"] < slow.model_extra["dllm"]["nfe"]


def test_stream_concatenates_to_the_full_text(client):
    for prompt in PROMPTS:
        full = complete(client, prompt).choices[0].text
        chunks = list(complete(client, prompt, stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == full
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_string_ends_the_text(client):
    full = complete(client, PROMPTS[1]).choices[0].text
    assert '"' in full[1:]
    cut = complete(client, PROMPTS[1], stop=['"', "never"]).choices[0].text
    assert cut == full[:full.index('"')]


def test_concurrent_requests_equal_each_served_alone(client):
    """40 concurrent requests (the server decodes 8 rows at a time, so requests join mid-flight):
    mixed prompts, samplers, caches, windows, seeded sampling and max_tokens; each gets the text it
    gets alone."""
    variants = [{}, {"sampler": "threshold", "sampler_args": {"threshold": 0.7}}, {"cache": "dual"},
                {"sampler": "factor"}, {"sampler": "llada", "temperature": 0.8, "seed": 11},
                {"cache": "prefix", "block_length": 16, "sampler": "threshold"},
                {"sampler": "threshold", "temperature": 1.0, "seed": 5, "cache": "dual"}, {"block_length": 8},
                {"sampler": "threshold", "multi_block": 0.5, "block_length": 16, "cache": "dual"}]
    jobs = [(PROMPTS[i % 4], variants[(i // 4) % len(variants)], 32 if i % 3 else 64) for i in range(40)]
    alone = {(p, str(v), m): complete(client, p, max_tokens=m, extra_body=v).choices[0].text for p, v, m in jobs}
    with ThreadPoolExecutor(40) as pool:
        got = list(pool.map(lambda j: complete(client, j[0], max_tokens=j[2], extra_body=j[1]).choices[0].text, jobs))
    for (p, v, m), text in zip(jobs, got):
        assert text == alone[(p, str(v), m)], (p, v, m)


def test_cancelled_stream_frees_its_row(server, client):
    with httpx.stream("POST", server + "/v1/completions", json={"prompt": PROMPTS[3], "max_tokens": 64,
                                                                "stream": True}) as r:
        next(r.iter_lines())
    time.sleep(0.5)
    health = httpx.get(server + "/health").json()
    assert health["queue"] == 0
    assert complete(client, PROMPTS[0]).choices[0].text  # the server goes on


def test_idle_connection_outlives_the_clients_expiry(server):
    """httpx (so openai) drops an idle pooled connection after 5 s; a server that dropped it at the same moment
    would race it and answer a request sent on it with nothing (uvicorn's default is 5 s too)."""
    conn = http.client.HTTPConnection(server.removeprefix("http://"), timeout=10)
    for _ in range(2):
        conn.request("GET", "/health")  # the second on the same socket: http.client never reconnects silently
        r = conn.getresponse()
        assert r.status == 200 and r.read()
        sock = conn.sock
        time.sleep(6)
    assert conn.sock is sock
    conn.close()


@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "x", "sampler": "nope"}, 400, "sampler"),
    ({"prompt": "x", "sampler": "threshold", "sampler_args": {"threshold": 2.0}}, 400, "sampler_args"),
    ({"prompt": "x", "max_tokens": 10_000}, 400, "max_tokens"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "x", "cache": "block"}, 400, "cache"),
    ({"prompt": "x", "multi_block": 0}, 400, "multi_block"),
    ({"prompt": "x", "steps": 3}, 400, "steps"),
    ({"prompt": "x", "stop_at_eos": "yes"}, 400, "stop_at_eos"),
    ({"prompt": "x", "seed": 1.5}, 400, "seed"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ({"prompt": "x", "bogus": 1}, 400, "bogus"),
])
def test_bad_requests_get_openai_error_bodies(server, body, status, param):
    r = httpx.post(server + "/v1/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and "\n" not in err["message"]


def test_malformed_json_and_openai_client_errors(server, client):
    r = httpx.post(server + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        complete(client, "x", max_tokens=1000)


def test_metrics_parse(server, client):
    complete(client, PROMPTS[0])
    names = {f.name for f in text_string_to_metric_families(httpx.get(server + "/metrics").text)}
    for n in ("dllm_requests", "dllm_queue_depth", "dllm_live_batch", "dllm_forwards", "dllm_tokens_per_forward",
              "dllm_time_to_first_token_seconds", "dllm_request_latency_seconds", "dllm_generated_tokens"):
        assert n in names, n
