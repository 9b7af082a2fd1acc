"""Checkpoint loading: sharded safetensors, fp16/bf16 checkpoints, dummy weights; and packaging."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import torch

from omniserve import Omni, SamplingParams

ROOT = Path(__file__).resolve().parents[1]


def test_sharded_checkpoint_loads_like_the_single_file(tmp_path, checkpoint_factory) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    single = checkpoint_factory("gqa-untied", seed=1, num_attention_heads=4, num_key_value_heads=2)
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(single).save_pretrained(sharded, max_shard_size="40KB")
    AutoTokenizer.from_pretrained(single).save_pretrained(sharded)
    assert len(list(sharded.glob("*.safetensors"))) > 1
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompt = {"prompt_token_ids": [5, 6, 7, 8]}
    a = Omni(str(single), num_kv_blocks=16).generate(prompt, params)[0].token_ids
    b = Omni(str(sharded), num_kv_blocks=16).generate(prompt, params)[0].token_ids
    assert a == b


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint(checkpoint_factory, dtype) -> None:
    path = checkpoint_factory(f"half-{dtype}", seed=5, dtype=dtype)
    omni = Omni(str(path), num_kv_blocks=16)  # auto on CPU: computes in fp32
    assert omni.engine.runner.dtype == torch.float32
    ours = omni.generate(
        {"prompt_token_ids": [1, 2, 3]}, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    )[0]
    assert len(ours.token_ids) == 4
    native = Omni(str(path), num_kv_blocks=16, dtype=str(dtype).removeprefix("torch."))
    assert native.engine.runner.pool.dtype == dtype
    out = native.generate(
        {"prompt_token_ids": [1, 2, 3]}, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    )[0]
    assert len(out.token_ids) == 4


def test_dummy_weights_are_seeded_and_ignore_the_files(checkpoint_factory) -> None:
    path = checkpoint_factory("gqa-untied", seed=1, num_attention_heads=4, num_key_value_heads=2)
    a = Omni(str(path), load_format="dummy", seed=3, num_kv_blocks=8)
    b = Omni(str(path), load_format="dummy", seed=3, num_kv_blocks=8)
    real = Omni(str(path), num_kv_blocks=8)
    wa = a.engine.runner.model.model.embed_tokens.weight
    assert torch.equal(wa, b.engine.runner.model.model.embed_tokens.weight)
    assert not torch.equal(wa, real.engine.runner.model.model.embed_tokens.weight)


def test_missing_tensor_is_reported(tmp_path, checkpoint_factory) -> None:
    from safetensors.torch import load_file, save_file

    source = checkpoint_factory("gqa-untied", seed=1, num_attention_heads=4, num_key_value_heads=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in source.iterdir():
        if file.suffix != ".safetensors":
            (broken / file.name).write_bytes(file.read_bytes())
    tensors = load_file(source / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(ValueError, match="missing 1 tensors.*layers.1.self_attn.qkv_proj.weight#k"):
        Omni(str(broken))


def test_every_python_package_is_declared_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    package_dir = config["package-dir"]
    found = set()
    for package, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found <= declared, f"packages missing from pyproject.toml: {sorted(found - declared)}"
    assert {"omniserve.encoders", "omniserve.kernels", "omniserve.api"} <= declared
