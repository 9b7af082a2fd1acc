"""Parity with transformers on tiny Qwen2 checkpoints (CPU, fp32): greedy tokens, logprobs, and seeded
sampling, through chunked prefill, preemption and prefix caching; greedy parity also with async scheduling."""

from __future__ import annotations

import pytest
import torch

from omniserve import Omni, SamplingParams

NEW_TOKENS = 10
VARIANTS = {
    # name: build_qwen2_checkpoint kwargs
    "gqa-untied": dict(seed=1, num_attention_heads=4, num_key_value_heads=2),
    "mha-tied": dict(seed=2, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    "gqa4-headdim32": dict(seed=3, hidden_size=128, num_attention_heads=4, num_key_value_heads=1),
}


def make_prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    shared = torch.randint(0, 560, (21,), generator=generator).tolist()
    prompts = [torch.randint(0, 560, (n,), generator=generator).tolist() for n in (1, 3, 9, 17, 26, 40)]
    # Two prompts share a 21-token prefix with each other (prefix-cache hits when enabled).
    prompts += [shared + [5, 6, 7], shared + [8]]
    return prompts


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(request, checkpoint_factory):
    """(checkpoint path, prompts, transformers greedy tokens, transformers logprobs of those tokens)."""
    from transformers import AutoModelForCausalLM

    path = checkpoint_factory(request.param, **VARIANTS[request.param])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = make_prompts()
    tokens, logprobs = [], []
    for prompt in prompts:
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
        ids = out.sequences[0, len(prompt) :].tolist()
        steps = torch.log_softmax(torch.cat(out.logits).float(), dim=-1)
        tokens.append(ids)
        logprobs.append([steps[i, t].item() for i, t in enumerate(ids)])
    return path, prompts, tokens, logprobs


ENGINE_SETUPS = {
    # Small budget and pool: chunked prefill (40 > 16) and preemption (pool < batch demand).
    "chunked+preempt+prefix": dict(block_size=4, num_kv_blocks=24, max_num_batched_tokens=16, max_num_seqs=8),
    "chunked+preempt-noprefix": dict(
        block_size=4, num_kv_blocks=24, max_num_batched_tokens=16, max_num_seqs=8, enable_prefix_caching=False
    ),
    "block1": dict(block_size=1, num_kv_blocks=600, max_num_batched_tokens=64),
    "roomy": dict(block_size=16, num_kv_blocks=64, max_num_batched_tokens=512),
}


@pytest.mark.parametrize("async_scheduling", ["off", "on"])
@pytest.mark.parametrize("setup", sorted(ENGINE_SETUPS))
def test_greedy_tokens_match_transformers(reference, setup: str, async_scheduling: str) -> None:
    path, prompts, expected, expected_logprobs = reference
    omni = Omni(
        str(path), device="cpu", dtype="float32", async_scheduling=async_scheduling, **ENGINE_SETUPS[setup]
    )
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=2)
    outputs = omni.generate([{"prompt_token_ids": p} for p in prompts], params)
    assert [o.token_ids for o in outputs] == expected
    for output, ref in zip(outputs, expected_logprobs, strict=True):
        ours = [lp.logprob for lp in output.logprobs]
        assert ours == pytest.approx(ref, abs=1e-4)
        assert all(lp.top[0][0] == lp.token_id for lp in output.logprobs)  # greedy = top-1
    stats = omni.stats()
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total  # everything freed
    if setup.startswith("chunked"):
        assert stats.num_preemptions > 0
    if setup == "chunked+preempt+prefix":
        assert stats.prefix_cache_hits > 0
    if setup == "chunked+preempt-noprefix":
        assert stats.prefix_cache_hits == 0


def test_seeded_sampling_is_reproducible_across_batches_and_preemption(checkpoint_factory) -> None:
    path = checkpoint_factory("gqa-untied", **VARIANTS["gqa-untied"])
    prompts = [{"prompt_token_ids": p} for p in make_prompts()]
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=12, ignore_eos=True)
    roomy = Omni(str(path), dtype="float32", block_size=16, num_kv_blocks=64)
    first = [o.token_ids for o in roomy.generate(prompts, params)]
    again = [o.token_ids for o in roomy.generate(prompts, params)]
    alone = roomy.generate(prompts[3], params)[0].token_ids  # different batch composition
    tight = Omni(str(path), dtype="float32", block_size=4, num_kv_blocks=24, max_num_batched_tokens=16)
    pressured = [o.token_ids for o in tight.generate(prompts, params)]
    assert tight.stats().num_preemptions > 0
    assert first == again == pressured
    assert alone == first[3]
    other_seed = roomy.generate(
        prompts, SamplingParams(temperature=1.0, seed=99, max_tokens=12, ignore_eos=True)
    )
    assert [o.token_ids for o in other_seed] != first


def test_stream_deltas_join_to_the_final_text(checkpoint_factory) -> None:
    path = checkpoint_factory("gqa-untied", **VARIANTS["gqa-untied"])
    omni = Omni(str(path), dtype="float32", num_kv_blocks=64)
    prompts = [
        "Hello there, how are you today?",
        {"messages": [{"role": "user", "content": "Tell me a story"}]},
    ]
    params = SamplingParams(temperature=0.7, seed=5, max_tokens=16, ignore_eos=True)
    texts, finals = ["", ""], [None, None]
    for delta in omni.stream(prompts, params):
        texts[delta.index] += delta.text
        if delta.output is not None:
            finals[delta.index] = delta.output
    for text, final in zip(texts, finals, strict=True):
        assert final is not None and final.finish_reason == "length"
        assert text == final.text == omni.tokenizer.decode(final.token_ids, skip_special_tokens=True)
    rendered = omni.tokenizer.apply_chat_template(
        prompts[1]["messages"], tokenize=False, add_generation_prompt=True
    )
    assert finals[1].prompt == rendered and finals[1].prompt.endswith("<|im_start|>assistant\n")
