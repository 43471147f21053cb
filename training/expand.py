"""Block expansion: give a trained model new capacity without touching what it can already do
(LLaMA Pro, Wu et al. 2024, arXiv 2401.02415).

``expand_layers=k`` inserts k new transformer blocks among the model's L blocks, each one after
every ~L/k old blocks. A new block's two output projections (attention ``o_proj``, MLP
``down_proj``) start at zero, so it adds nothing to the residual stream: the expanded model's
logits equal the old model's exactly at step 0. Training then updates only what is new:

- the new blocks;
- the rows of tokens the tokenizer gained (``grow_tokenizer``), in the embedding and the output head.

Every old block, the final norm and every old token's rows stay frozen (their gradients are zeroed
and, because AdamW's decoupled weight decay moves a parameter even with a zero gradient, the old rows
are put back after each optimiser step). The old weights are kept exactly; the old behaviour is not
guaranteed, since the new blocks write into the residual stream the frozen ones read (measured in
bench/tiny_printable/expand.md: dllm-tiny-lists's own tasks still fell).
Used by ``recipe=tiny_printable_expand`` (issue 17): every full fine-tune
of dllm-tiny-lists that learned ParallelBench's format lost its own tasks (own-task accuracy 93 % -> 73 %
at lr 3e-4, -> 19 % at lr 1e-3 with copy strings), a 2.6 M-parameter model having no room for both.
"""

from __future__ import annotations

import copy

import torch

from dllm.errors import check


def new_layer_positions(n_old: int, k: int) -> list[int]:
    """Indices, in the expanded stack of n_old + k blocks, of the k new ones: new block j follows old
    block round((j + 1) * n_old / k) - 1 (k = 3 of 6: after old blocks 1, 3 and 5)."""
    check(isinstance(k, int) and 0 <= k <= n_old, f"expand_layers must be an integer in [0, {n_old}], got {k!r}")
    # new block j follows old block a_j, so a_j + 1 old blocks and j new ones stand before it
    return [round((j + 1) * n_old / k) + j for j in range(k)]


def expand(model, k: int, seed: int):
    """``model`` with k zero-output blocks inserted at :func:`new_layer_positions` (in place; returns it).
    A new block takes the norms of the old block before it (they read the residual stream at the scale
    that block was trained for), input projections drawn afresh at that block's scale (distinct from
    it), and zeroed ``o_proj`` and ``down_proj``."""
    if not k:
        return model
    core = model.core
    old = list(core.layers)
    positions = new_layer_positions(len(old), k)
    gen = torch.Generator().manual_seed(seed)
    layers, it = [], iter(old)
    for i in range(len(old) + k):
        if i in positions:
            block = copy.deepcopy(layers[-1])
            with torch.no_grad():
                for lin in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj,
                            block.mlp.gate_proj, block.mlp.up_proj):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * lin.weight.std())
                block.self_attn.o_proj.weight.zero_()
                block.mlp.down_proj.weight.zero_()
        else:
            block = next(it)
        block.self_attn.layer = i  # the KV caches index layers by position
        layers.append(block)
    core.layers = torch.nn.ModuleList(layers)
    core.cfg.num_layers = len(layers)
    print(f"expanded {len(old)} -> {len(layers)} blocks (new at {positions}, zero output: logits unchanged)")
    return model


def marked_twins(tokenizer, free_ids, used) -> dict[int, int]:
    """Unused old token -> the used token that reads the same at a word's start ('Tina' -> '▁"Tina'),
    for those that have one. A prompt quoting a list shows its first name after '["' without the start
    mark, a token the old model never used; its twin is the one the old model reads and copies."""
    vocab, out = tokenizer.get_vocab(), {}
    for i in free_ids:
        text = tokenizer.convert_ids_to_tokens(i)
        twin = next((vocab[p + text] for p in ("\u2581", '\u2581"') if vocab.get(p + text) in used), None)
        if twin is not None:
            out[i] = twin
    return out


@torch.no_grad()
def copy_twin_rows(core, twins: dict[int, int]) -> None:
    """Start each unused old token's input row as its twin's (:func:`marked_twins`): it reads as the
    twin. Its output row stays (an untied head): a copy of the twin's would split every probability
    the old model gives the twin in two (the first try: loss 0.5 -> 2.5-3.0 nats, KL to the old model
    x100). With tied embeddings there is one row: it stays too."""
    if twins and not core.cfg.tie_embeddings:
        rows = core.embed_tokens.weight  # [V, H]
        rows[torch.tensor(list(twins))] = rows[torch.tensor(list(twins.values()))]


class FreezeOld:
    """Train only the new blocks and the new tokens' rows of an expanded model. ``n_old_layers`` and
    ``n_old_vocab`` are the pre-expansion model's (read again from ``init`` on a resume). ``free_rows``:
    old token ids whose rows (input and output) train too — the tokens the old model never read or
    wrote. A BPE vocabulary holds many such tokens (merge steps, pieces only seen inside longer tokens):
    their rows are untrained noise, and a new format that writes one (ParallelBench's answer opens
    '["', 'Tina' where dllm-tiny-lists only ever wrote ' ["Tina') cannot be read or written through them."""

    def __init__(self, model, n_old_layers: int, k: int, n_old_vocab: int, free_rows=()):
        core = model.core
        check(core.cfg.num_layers == n_old_layers + k,
              f"the model has {core.cfg.num_layers} blocks, expected {n_old_layers} + expand_layers {k}")
        new = set(new_layer_positions(n_old_layers, k))
        for i, block in enumerate(core.layers):
            block.requires_grad_(i in new)
        core.norm.requires_grad_(False)
        frozen = torch.ones(n_old_vocab, dtype=torch.bool)  # [V_old]: True = the old model's row, kept
        frozen[torch.as_tensor(sorted(free_rows), dtype=torch.long)] = False
        self.rows = []  # (parameter, its frozen rows' ids [F], their values [F, H])
        for name in ("embed_tokens",) if core.cfg.tie_embeddings else ("embed_tokens", "lm_head"):
            weight = getattr(core, name).weight
            weight.requires_grad_(weight.shape[0] > n_old_vocab or not frozen.all())  # anything of it to train?
            if weight.requires_grad:
                keep = torch.cat([frozen, torch.zeros(weight.shape[0] - n_old_vocab, dtype=torch.bool)])  # [V]
                weight.register_hook(lambda g, m=keep: g.masked_fill(m.to(g.device)[:, None], 0.0))
                ids = keep.nonzero()[:, 0]
                self.rows.append((weight, ids, weight.detach()[ids].clone()))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"training {trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters "
              f"(new blocks {sorted(new)}, new token rows {n_old_vocab}.., "
              f"{int((~frozen).sum())} old rows the old model never used)")

    @torch.no_grad()
    def restore(self) -> None:
        """Put the old rows back (AdamW's weight decay moved them); call after each optimiser step."""
        for weight, ids, rows in self.rows:
            weight[ids] = rows
