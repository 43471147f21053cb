"""`dllm serve_ray`: two local CPU replicas on Ray Serve, called with the official `openai` client;
answers equal the single server's (the Python API's), streamed or not, under concurrency."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from dllm.testing import SERVE_PROMPTS as PROMPTS, free_port

pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def ray_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dllm.cli", "serve_ray", "replicas=2", f"port={port}",
                             "sampler=llada", "max_tokens_limit=64"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:  # the server and its Ray processes go even when they never became healthy
        deadline, healthy = time.time() + 240, 0
        while time.time() < deadline and healthy < 6:  # both replicas loaded: several 200s in a row
            try:
                healthy = healthy + 1 if httpx.get(url + "/health", timeout=5).status_code == 200 else 0
            except httpx.HTTPError:
                healthy = 0
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(0.5)
        assert healthy >= 6, "the Ray Serve replicas did not become healthy in 240 s"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)


def test_two_replicas_answer_as_the_python_api(ray_server):
    import dllm
    from dllm.samplers import LLaDASampler

    client = openai.OpenAI(base_url=ray_server + "/v1", api_key="none", max_retries=0)
    jobs = [PROMPTS[i % 4] for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda p: client.completions.create(model="dllm-tiny", prompt=p, max_tokens=32), jobs))
    model = dllm.load("dllm-tiny")
    with torch.no_grad():
        want = dllm.generate(model, PROMPTS, LLaDASampler(), gen_length=32).text
    for p, out in zip(jobs, got):
        assert out.choices[0].text == want[PROMPTS.index(p)]
    stream = client.completions.create(model="dllm-tiny", prompt=PROMPTS[1], max_tokens=32, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == want[1]
    assert client.models.list().data[0].id == "dllm-tiny"
