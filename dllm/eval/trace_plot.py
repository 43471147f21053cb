"""Decode-trace pictures: which forward committed each answer token, and how sure the model was.

One row per block; each cell is one generated position, coloured by the forward that committed
it (early = dark, late = light; grey = filled after the end of text) and faded by its confidence;
the token text is written in the cell. ``render_png`` uses matplotlib; ``render_html`` writes a
self-contained page (no scripts, inline styles) of the same picture.
"""

from __future__ import annotations

import html
from pathlib import Path

from dllm.eval.plots import pyplot
from dllm.generate import Trace


def token_texts(trace: Trace, tokenizer) -> list[str]:
    """Each position's token as text; special tokens (end of text) as ∎."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    return ["∎" if int(t) in special else tokenizer.decode([int(t)]) for t in trace.tokens]


def _grid(trace: Trace):
    """Rows are decode windows; a generation that starts mid-window (block diffusion: the prompt
    ends inside a block) leaves the first ``offset`` cells of the first row empty."""
    g = trace.step.numel()
    width = trace.block_length
    rows = -(-(g + trace.offset) // width)
    return g, width, rows


def render_png(trace: Trace, texts: list[str], path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    from matplotlib import colormaps

    g, width, rows = _grid(trace)
    last = max(int(trace.step.max()), 1)
    cmap = colormaps["viridis"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * width), 0.55 * rows + 1.1), dpi=110)
    for i in range(g):
        r, c = divmod(i + trace.offset, width)
        step, conf = int(trace.step[i]), float(trace.confidence[i])
        color = (0.85, 0.85, 0.85, 1.0) if step == 0 else cmap((step - 1) / max(last - 1, 1))
        alpha = 1.0 if step == 0 else 0.35 + 0.65 * max(0.0, min(1.0, conf))
        ax.add_patch(plt.Rectangle((c, rows - 1 - r), 0.95, 0.9, color=color, alpha=alpha, lw=0))
        text = texts[i].strip() or "␣"
        ax.text(c + 0.47, rows - 1 - r + 0.45, text[:6], ha="center", va="center", fontsize=6,
                color="black" if step == 0 or (step - 1) / max(last - 1, 1) > 0.5 else "white")
    ax.set_xlim(0, width)
    ax.set_ylim(0, rows)
    ax.set_yticks([rows - 1 - r + 0.45 for r in range(rows)], [f"block {r}" for r in range(rows)], fontsize=7)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, last))
    fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.01).set_label("forward that committed it", fontsize=7)
    ax.set_title(title or f"decode trace: {last} forwards, {g} positions (opacity = confidence; grey = after end)",
                 fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def render_html(trace: Trace, texts: list[str], path: str | Path, title: str = "") -> Path:
    from matplotlib import colormaps

    g, width, rows = _grid(trace)
    last = max(int(trace.step.max()), 1)
    cmap = colormaps["viridis"]
    cells = ["<td></td>"] * trace.offset  # the prompt's part of the first window
    for i in range(g):
        step, conf = int(trace.step[i]), float(trace.confidence[i])
        if step == 0:
            rgb, alpha = (217, 217, 217), 1.0
        else:
            r, gr, b, _ = cmap((step - 1) / max(last - 1, 1))
            rgb, alpha = (int(255 * r), int(255 * gr), int(255 * b)), 0.35 + 0.65 * max(0.0, min(1.0, conf))
        tip = f"position {i}: forward {step or 'after end'}, confidence {conf:.3f}"
        cells.append(f'<td title="{html.escape(tip)}" style="background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.2f})">'
                     f"{html.escape(texts[i].strip() or '␣')}</td>")
    body = "".join("<tr><th>block %d</th>%s</tr>" % (r, "".join(cells[r * width:(r + 1) * width])) for r in range(rows))
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title or 'decode trace')}</title>"
            "<style>body{font:13px sans-serif}td{padding:4px 6px;text-align:center;color:#111;min-width:24px}"
            "th{font-weight:normal;color:#555;padding-right:8px}</style>"
            f"<p>{html.escape(title or 'decode trace')}: colour = forward that committed the token (dark = early, "
            f"{last} forwards), opacity = confidence, grey = filled after the end of text. Hover for details.</p>"
            f"<table>{body}</table>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def render(trace: Trace, tokenizer, path: str | Path, title: str = "") -> Path:
    """PNG or HTML by the file's suffix."""
    texts = token_texts(trace, tokenizer)
    if str(path).endswith(".html"):
        return render_html(trace, texts, path, title)
    return render_png(trace, texts, path, title)
