"""Tiny Qwen2 checkpoints built offline: the built-in demo model and the test fixtures.

No model hub is reachable, so checkpoints are made in code from transformers' own classes:

    build_tokenizer()            -> byte-level BPE Qwen2Tokenizer (no training: fixed vocab + merges)
    build_qwen2_checkpoint(path) -> path holding config.json, model.safetensors, generation_config.json,
                                    tokenizer.json, tokenizer_config.json, chat_template.jinja
    demo_model_path()            -> envs.cache_dir()/demo/qwen2.5-omni-tiny-v{DEMO_VERSION}, built once:
                                    a tiny random Qwen2.5-Omni (thinker with vision + audio towers,
                                    talker, token2wav) from omniserve.demo_omni

Token ids (all fixed, so parity tests may hard-code them):

    [0, 256)                       the 256 byte symbols, in GPT-2 `bytes_to_unicode` order
    [256, 256 + num_merges)        one id per new merge result, in merge order
    next 14 ids                    SPECIAL_TOKENS, in the real Qwen2.5-Omni order

Same arguments give bit-identical files. `torch`/`transformers` are imported inside the functions so that
`import omniserve.demo` (and `demo_model_path()` on a warm cache) stays cheap.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from omniserve import envs

if TYPE_CHECKING:
    import torch
    import transformers

DEMO_VERSION = 2

# Appended after the merges at consecutive ids, in the order of the real Qwen2.5-Omni vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>",
    "<|IMAGE|>", "<|VIDEO|>",
)  # fmt: skip

# Named tokens the Omni processor reads as `tokenizer.image_token` etc.
NAMED_SPECIAL_TOKENS: dict[str, str] = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}

# Pre-tokens that become single tokens. Order matters: earlier entries get lower merge ranks, so common
# bigrams come first and later words are assembled from them. A leading space becomes "Ġ" (byte 0x20).
_MERGE_WORDS: tuple[str, ...] = (
    *"th he in er an re on at en nd ti es or te ed is it al ar st to nt ng se ha as ou le ve".split(),
    *"co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ly".split(),
    "ing", "ion", "tion", "ent", "and", "the", "system", "user", "assistant", "\n\n", "  ", "    ",
    *(" " + word for word in (
        "the of and to a in is you that it he was for on are as with his they I at be this have from or "
        "one had by word but not what all were we when your can said there use an each which she do how "
        "their if will up other about out many then them these so some her would make like him into time "
        "has look two more write go see number no way could people my than first water been call who its "
        "now find long down day did get come made may part helpful assistant hello world please help "
        "question answer image audio video describe tell me picture sound text speak say yes thank"
    ).split()),
    "The", "I", "What", "Hello", "You", "It", "This", "Please",
)  # fmt: skip

# ChatML as in Qwen2; OpenAI-style content parts become the Omni media placeholders. Jinja `-` trims all
# literal whitespace, so each newline is an explicit {{ '\\n' }}.
_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content -%}{%- for part in content -%}"
    "{%- if part.type == 'text' -%}{{ part.text }}"
    "{%- elif part.type in ['image_url', 'image'] -%}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{%- elif part.type in ['input_audio', 'audio'] -%}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{%- elif part.type in ['video_url', 'video'] -%}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if not messages or messages[0].role != 'system' -%}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "<|im_start|>{{ message.role }}{{ '\\n' }}{{ render(message.content) }}<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)  # fmt: skip


def bytes_to_unicode() -> dict[int, str]:
    """Byte value -> printable unicode symbol, GPT-2's table; the dict's order is the vocab-id order.

    Printable latin-1 bytes map to themselves and come first; the other 68 bytes (controls, space, ...)
    map to chr(256 + n) in byte order, so space 0x20 -> "Ġ" and newline 0x0a -> "Ċ".
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {byte: chr(byte) for byte in printable}
    for n, byte in enumerate(byte for byte in range(256) if byte not in table):
        table[byte] = chr(256 + n)
    return table


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-level BPE on one pre-token: merge the lowest-ranked adjacent pair (leftmost first) until none."""
    while len(symbols) > 1:
        pairs = zip(symbols, symbols[1:], strict=False)
        rank, index = min((ranks.get(pair, math.inf), i) for i, pair in enumerate(pairs))
        if rank == math.inf:
            break
        symbols = [*symbols[:index], symbols[index] + symbols[index + 1], *symbols[index + 2 :]]
    return symbols


@functools.cache
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocab (bytes, merge results, special tokens) and merges making each _MERGE_WORDS entry one token.

    For each word, tokenize it with the merges so far, then append a merge of its first two tokens until it
    is one token. A new merge has the highest rank, so it never changes how earlier words tokenize.
    """
    byte_symbols = bytes_to_unicode()
    ranks: dict[tuple[str, str], int] = {}
    for word in _MERGE_WORDS:
        symbols = _apply_merges([byte_symbols[byte] for byte in word.encode()], ranks)
        while len(symbols) > 1:
            ranks[(symbols[0], symbols[1])] = len(ranks)
            symbols = _apply_merges(symbols, ranks)
    vocab = {symbol: index for index, symbol in enumerate(byte_symbols.values())}
    for left, right in ranks:
        vocab.setdefault(left + right, len(vocab))
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return vocab, list(ranks)


def build_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """A fresh Qwen2Tokenizer over the fixed vocab: ChatML template, eos <|im_end|>, pad <|endoftext|>."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab, merges = _vocab_and_merges()
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_SPECIAL_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    # Already in the vocab, so ids do not move; this makes them unsplittable and skippable on decode.
    tokenizer.add_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS], special_tokens=True)
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def build_qwen2_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 4096,
    vocab_size: int | None = None,
    weight_scale: float = 1.0,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a randomly initialised Qwen2ForCausalLM + tokenizer into `path` (created if needed); return it.

    `vocab_size` defaults to the tokenizer size rounded up to a multiple of 8 (ids past the tokenizer
    decode to ''). `weight_scale` multiplies every parameter, widening logit margins for parity tests.
    `dtype` defaults to float32. The global torch RNG is left untouched.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    dtype = torch.float32 if dtype is None else dtype
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = max_position_embeddings
    endoftext_id, im_end_id = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen2Config(
        vocab_size=vocab_size or -(-len(tokenizer) // 8) * 8,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        # transformers 5 keeps rope settings in one dict; a bare `rope_theta=` kwarg is folded into it.
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=endoftext_id,  # Qwen2 has no BOS token; its config names <|endoftext|>
        eos_token_id=im_end_id,
        dtype=dtype,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    if weight_scale != 1.0:
        with torch.no_grad():
            for parameter in model.parameters():  # tied weights are yielded once
                parameter.mul_(weight_scale)
    model = model.to(dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext_id, eos_token_id=[im_end_id, endoftext_id], pad_token_id=endoftext_id
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# The built-in demo model: a tiny Qwen2.5-Omni, a few MB on disk, builds in a few seconds on CPU.
_DEMO_ARGS: dict[str, int] = dict(seed=0, hidden_size=64, num_hidden_layers=4)


def build_demo_checkpoint(path: os.PathLike[str]) -> Path:
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    return build_qwen2_5_omni_checkpoint(path, **_DEMO_ARGS)


def demo_model_path() -> Path:
    """Path of the built-in demo checkpoint under `envs.cache_dir()`, building it on first use.

    The build goes into a temp dir beside the target and is renamed into place, so the target either does
    not exist or is complete. If a concurrent builder renames first, its (identical) checkpoint is kept.
    """
    final = envs.cache_dir() / "demo" / f"qwen2.5-omni-tiny-v{DEMO_VERSION}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    try:
        os.chmod(staging, 0o755)
        build_demo_checkpoint(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
