"""Tests for omniserve.demo: the offline tokenizer, tiny Qwen2 checkpoints and the cached demo model (CPU)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from omniserve import demo

# Fixed ids: 256 bytes + 308 merge results, then the specials. Changing _MERGE_WORDS moves them (and must
# bump DEMO_VERSION).
FIRST_SPECIAL_ID = 564


@pytest.fixture(scope="module")
def tokenizer():
    return demo.build_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.build_qwen2_checkpoint(tmp_path_factory.mktemp("qwen2") / "ckpt", seed=3)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OMNISERVE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _file_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! What is the answer?",
        "日本語のテキスト 🌍🚀 naïve café Ω≈ç√ עברית\t tabs\n\n  two  spaces\r\n",
        "code:\n    def f(x):\n        return x ** 2  # 100%",
        "".join(chr(c) for c in range(1, 256)),
    ],
)
def test_tokenizer_round_trips_text(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert max(ids) < FIRST_SPECIAL_ID


def test_tokenizer_normalizes_to_nfc(tokenizer) -> None:
    # Qwen2Tokenizer has an NFC normalizer: decomposed input decodes to its composed form.
    decomposed = unicodedata.normalize("NFD", "café")
    assert tokenizer.decode(tokenizer.encode(decomposed)) == "café"


def test_tokenizer_compresses_english(tokenizer) -> None:
    text = "You are a helpful assistant. Please describe the image and tell me what you see in this picture."
    num_tokens = len(tokenizer.encode(text))
    assert num_tokens < len(text.encode()) / 2
    for word in ("system", "user", "assistant", " the", " helpful"):
        assert len(tokenizer.encode(word)) == 1, word


def test_special_tokens_have_fixed_consecutive_ids(tokenizer) -> None:
    expected = list(range(FIRST_SPECIAL_ID, FIRST_SPECIAL_ID + len(demo.SPECIAL_TOKENS)))
    assert tokenizer.convert_tokens_to_ids(list(demo.SPECIAL_TOKENS)) == expected
    assert len(tokenizer) == expected[-1] + 1
    for token, token_id in zip(demo.SPECIAL_TOKENS, expected, strict=True):
        assert tokenizer.encode(f"a{token}b") == [*tokenizer.encode("a"), token_id, *tokenizer.encode("b")]
    assert (
        tokenizer.decode(tokenizer.encode("<|im_start|>user<|im_end|>"), skip_special_tokens=True) == "user"
    )
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>",
        "<|endoftext|>",
        None,
    )
    for name, token in demo.NAMED_SPECIAL_TOKENS.items():
        assert getattr(tokenizer, name) == token
        assert getattr(tokenizer, f"{name}_id") == tokenizer.convert_tokens_to_ids(token)


def test_chat_template_string_content(tokenizer) -> None:
    messages = [{"role": "user", "content": "Hi there"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        *messages,
        {"role": "assistant", "content": "Hello"},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
    )


def test_chat_template_multimodal_parts(tokenizer) -> None:
    content = [
        {"type": "text", "text": "What is in "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": " and "},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "video_url", "video_url": {"url": "file:///v.mp4"}},
        {"type": "image"},
    ]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is in <|vision_bos|><|IMAGE|><|vision_eos|> and "
        "<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|VIDEO|><|vision_eos|>"
        "<|vision_bos|><|IMAGE|><|vision_eos|><|im_end|>\n"
    )
    ids = tokenizer.encode(rendered)
    assert ids.count(tokenizer.image_token_id) == 2
    assert ids.count(tokenizer.audio_token_id) == 1
    assert ids.count(tokenizer.video_token_id) == 1


def test_checkpoint_loads_and_generates(checkpoint: Path, tokenizer) -> None:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint)
    loaded_tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    assert isinstance(model, transformers.Qwen2ForCausalLM)
    assert model.config.vocab_size == 584 and model.config.vocab_size % 8 == 0
    assert model.config.rope_parameters["rope_theta"] == 1e6
    assert model.dtype == torch.float32
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_tokenizer.image_token == "<|IMAGE|>"
    im_end_id, endoftext_id = loaded_tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert model.generation_config.eos_token_id == [im_end_id, endoftext_id]
    assert model.config.eos_token_id == im_end_id and model.config.bos_token_id == endoftext_id

    prompt = loaded_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert output.shape == (1, prompt["input_ids"].shape[1] + 4)
    assert torch.equal(output[:, : prompt["input_ids"].shape[1]], prompt["input_ids"])


def test_rebuild_is_bit_identical(checkpoint: Path, tmp_path: Path) -> None:
    again = demo.build_qwen2_checkpoint(tmp_path / "again", seed=3)
    assert _file_bytes(again) == _file_bytes(checkpoint)
    other_seed = demo.build_qwen2_checkpoint(tmp_path / "other", seed=4)
    assert _file_bytes(other_seed)["model.safetensors"] != _file_bytes(checkpoint)["model.safetensors"]


def test_tied_embeddings_and_weight_scale(tmp_path: Path) -> None:
    import torch
    import transformers

    tied = demo.build_qwen2_checkpoint(tmp_path / "tied", tie_word_embeddings=True, weight_scale=10.0)
    model = transformers.AutoModelForCausalLM.from_pretrained(tied)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    untied = transformers.AutoModelForCausalLM.from_pretrained(
        demo.build_qwen2_checkpoint(tmp_path / "untied")
    )
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    # Same seed, so the scaled model is exactly 10x the unscaled one (norm weights included).
    assert torch.equal(model.model.norm.weight, torch.full_like(model.model.norm.weight, 10.0))
    unscaled_embeddings = untied.model.embed_tokens.weight
    assert torch.allclose(model.model.embed_tokens.weight, unscaled_embeddings * 10, rtol=1e-6, atol=0)


def test_demo_model_path_builds_once(cache_dir: Path) -> None:
    path = demo.demo_model_path()
    assert path == cache_dir / "demo" / f"qwen2.5-omni-tiny-v{demo.DEMO_VERSION}"
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no staging dir left behind
    mtimes = {entry.name: entry.stat().st_mtime_ns for entry in path.iterdir()}
    assert demo.demo_model_path() == path
    assert {entry.name: entry.stat().st_mtime_ns for entry in path.iterdir()} == mtimes


def test_demo_model_path_tolerates_concurrent_builder(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = cache_dir / "demo" / f"qwen2.5-omni-tiny-v{demo.DEMO_VERSION}"

    def build_while_another_process_wins(path: os.PathLike[str]) -> Path:
        final.mkdir()
        (final / "config.json").write_text("winner")
        (Path(path) / "config.json").write_text("loser")
        return Path(path)

    monkeypatch.setattr(demo, "build_demo_checkpoint", build_while_another_process_wins)
    assert demo.demo_model_path() == final
    assert (final / "config.json").read_text() == "winner"
    assert [entry.name for entry in final.parent.iterdir()] == [final.name]
