"""The GPT-2 byte-level BPE tokenizer of a GGUF model, built with the ``tokenizers`` package from
the vocabulary and merges stored in the GGUF metadata (nothing is downloaded).

SmolLM2's pre-tokenizer (GGUF ``tokenizer.ggml.pre = 'smollm'``, the same as its Hugging Face
``tokenizer.json``): every digit is its own piece, then the GPT-2 split regex on byte-level text.
Control tokens (``<|im_start|>``, ``<|endoftext|>``, ...; token type 3) are matched whole.
"""

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as _HFTokenizer

__all__ = ["Tokenizer", "chat_prompt"]

_CONTROL = 3


class Tokenizer:
    def __init__(self, tokens, merges, token_types=None, bos_id=None, eos_id=None):
        vocab = {t: i for i, t in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        pairs = []
        for m in merges:
            a, sep, b = m.partition(" ")
            if not sep:
                raise ValueError(f"merge {m!r} is not two tokens separated by a space")
            pairs.append((a, b))
        tk = _HFTokenizer(models.BPE(vocab, pairs, ignore_merges=False))
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tk.decoder = decoders.ByteLevel()
        types = list(token_types) if token_types is not None else [1] * len(tokens)
        specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == _CONTROL]
        if specials:
            tk.add_special_tokens(specials)
        self._tk = tk
        self.tokens = list(tokens)
        self.vocab_size = len(tokens)
        self.bos_id, self.eos_id = bos_id, eos_id
        self.special_ids = {i for i, ty in enumerate(types) if ty == _CONTROL}

    @classmethod
    def from_gguf(cls, g):
        """g: a ``gguf_model.GGUFModel``."""
        return cls(g.tokens, g.merges, g.token_types, g.bos_id, g.eos_id)

    def encode(self, text):
        return list(self._tk.encode(text, add_special_tokens=False).ids)

    def decode(self, ids, skip_special=False):
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_text(self, i):
        return self.decode([i])


def chat_prompt(user, system="You are a helpful AI assistant named SmolLM, trained by Hugging Face"):
    """SmolLM2-Instruct's chat template (GGUF ``tokenizer.chat_template``) for one user turn, with
    the assistant's turn opened."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")
