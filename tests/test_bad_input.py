"""Bad input fails fast with a message naming the problem, before any work, and the engine stays usable."""

from __future__ import annotations

import json
import shutil

import pytest

from omniserve import Omni, SamplingParams


@pytest.fixture(scope="module")
def omni(checkpoint_factory):
    path = checkpoint_factory("bad-input", seed=4, max_position_embeddings=64)
    return Omni(str(path), dtype="float32", num_kv_blocks=32, block_size=4)


@pytest.mark.parametrize(
    "prompt, params, message",
    [
        ("", None, "prompt is empty"),
        ({"prompt_token_ids": []}, None, "prompt is empty"),
        ({"prompt_token_ids": list(range(64))}, None, "context is 64"),
        ({"prompt_token_ids": list(range(40))}, SamplingParams(max_tokens=30), "max_tokens=30"),
        ({"prompt_token_ids": [1, 10**6]}, None, "outside the vocabulary"),
        ({"prompt_token_ids": "abc"}, None, "list of integers"),
        ({"messages": []}, None, "non-empty list"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            None,
            "text only",
        ),
        ({"prompt": "hi", "multi_modal_data": {"image": object()}}, None, "text only"),
        ({"nothing": 1}, None, "needs one of"),
        (42, None, "string or a dict"),
        ("hello", SamplingParams(stop_token_ids=[10**6]), "stop_token_ids"),
    ],
)
def test_bad_prompt_is_rejected_before_any_work(omni, prompt, params, message) -> None:
    good = {"prompt_token_ids": [1, 2, 3]}
    with pytest.raises(ValueError, match=message):
        omni.generate([good, prompt], params)
    assert not omni.engine.has_unfinished_requests()  # the good prompt was not started either
    output = omni.generate(good, SamplingParams(max_tokens=3, ignore_eos=True))[0]  # still serving
    assert len(output.token_ids) == 3


def test_request_larger_than_the_pool_is_rejected(checkpoint_factory) -> None:
    path = checkpoint_factory("bad-input", seed=4, max_position_embeddings=64)
    small = Omni(str(path), dtype="float32", num_kv_blocks=4, block_size=4)  # 16 tokens of KV
    with pytest.raises(ValueError, match="whole pool holds 16"):
        small.generate({"prompt_token_ids": [1] * 10}, SamplingParams(max_tokens=10))


def test_unknown_model_path() -> None:
    with pytest.raises(ValueError, match="not a folder with a checkpoint"):
        Omni("/definitely/not/here")


def test_unsupported_architecture(tmp_path, checkpoint_factory) -> None:
    source = checkpoint_factory("bad-input", seed=4, max_position_embeddings=64)
    target = tmp_path / "weird"
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["architectures"] = ["MysteryForCausalLM"]
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match="unsupported model architecture.*MysteryForCausalLM.*Qwen2ForCausalLM"
    ):
        Omni(str(target))


def test_unknown_engine_option_and_invalid_config() -> None:
    with pytest.raises(TypeError, match="unknown engine option 'blok_size'"):
        Omni(blok_size=4)
    with pytest.raises(ValueError, match="block_size"):
        Omni(block_size=0)
    with pytest.raises(ValueError, match="attention_backend"):
        Omni(attention_backend="flash")
