"""Decode-trace pictures render from a real generation's trace."""

import dllm
from dllm.eval.trace_plot import render
from dllm.samplers import ThresholdSampler
from dllm.testing import tiny_model


def test_trace_png_and_html(tmp_path):
    from matplotlib.image import imread

    model = tiny_model("llada", seed=2)
    out = dllm.generate(model, ["the cat sat on the"], ThresholdSampler(0.5), gen_length=16, block_length=8,
                        stop_at_eos=False, trace=True)
    png = render(out.trace[0], model.tokenizer, tmp_path / "t.png", title="the cat")
    img = imread(png)
    assert img.shape[0] > 100 and img.shape[1] > 400  # two block rows of eight cells
    assert img[..., :3].std() > 0.05  # not blank
    page = render(out.trace[0], model.tokenizer, tmp_path / "t.html").read_text()
    assert page.count("<tr>") == 2 and page.count("<td") == 16 and "forward" in page


def test_generate_command_draws_the_trace(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "trace.png"
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "generate", 'prompt=copy: ["Ann Lee"]',
                        "decode.gen_length=32", f"trace={path}", "sampler=threshold"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert path.exists() and path.stat().st_size > 5000
