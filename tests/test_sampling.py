"""SamplingParams validation and the sampler's transformations (CPU tensors, no model)."""

from __future__ import annotations

import pytest
import torch

from omniserve.sampling_params import SamplingParams
from omniserve.worker.sampler import Sampler, SamplingRow


def row(
    params: SamplingParams, tokens: list[int] | None = None, num_prompt: int = 0, eos: list[int] = ()
) -> SamplingRow:
    return SamplingRow(params, list(tokens or [0]), num_prompt if tokens else 1, list(eos))


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-2),
        dict(min_p=2),
        dict(max_tokens=0),
        dict(repetition_penalty=0),
        dict(presence_penalty=3),
        dict(frequency_penalty=-2.5),
        dict(logprobs=50),
        dict(stop=[""]),
        dict(stop_token_ids=[-1]),
        dict(min_tokens=5, max_tokens=2),
    ],
)
def test_invalid_sampling_params_are_rejected_with_the_field_name(bad) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


def test_stop_string_and_top_k_normalization() -> None:
    params = SamplingParams(stop="###", top_k=-1)
    assert params.stop == ["###"] and params.top_k == 0


def test_greedy_and_top_k_one_agree() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    greedy, _ = sampler(logits, [row(SamplingParams(temperature=0))] * 6)
    top1, _ = sampler(logits, [row(SamplingParams(temperature=1.0, top_k=1))] * 6)
    assert greedy == top1 == logits.argmax(-1).tolist()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_logits_sample_as_their_fp32_upcast(dtype: torch.dtype) -> None:
    """Greedy rows take the argmax of the model-dtype logits (no fp32 copy); it must equal the argmax of
    the upcast, ties included (bf16 rounding makes many). Logprobs and penalties still run in fp32."""
    sampler = Sampler(torch.device("cpu"))
    logits = (torch.randn(64, 300, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
    logits[:, 7] = logits.max(dim=-1).values  # a tie with the row's maximum, at a lower id in some rows
    greedy = SamplingParams(temperature=0)
    tokens, _ = sampler(logits, [row(greedy)] * 64)
    assert tokens == logits.float().argmax(-1).tolist()
    tokens, logprobs = sampler(logits, [row(SamplingParams(temperature=0, logprobs=2))] * 64)
    expected = torch.log_softmax(logits.float(), -1)
    assert tokens == logits.float().argmax(-1).tolist()
    assert logprobs[5].logprob == pytest.approx(expected[5, tokens[5]].item(), abs=1e-6)
    penalized = SamplingParams(temperature=0, repetition_penalty=1.5)
    seen = [tokens[0]]
    tokens, _ = sampler(logits[:1], [row(penalized, seen, num_prompt=1)])
    reference, _ = sampler(logits[:1].float(), [row(penalized, seen, num_prompt=1)])
    assert tokens == reference != seen


def test_top_p_keeps_only_the_nucleus() -> None:
    sampler = Sampler(torch.device("cpu"))
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(400, 1)
    tokens, _ = sampler(logits, [row(SamplingParams(temperature=1.0, top_p=0.7))] * 400)
    assert set(tokens) == {0, 1}  # 0.5 < 0.7 needs the second; the third is past the nucleus


def test_min_p_drops_unlikely_tokens() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(400, 1)
    tokens, _ = sampler(logits, [row(SamplingParams(temperature=1.0, min_p=0.5))] * 400)
    assert set(tokens) == {0, 1}  # 0.15 < 0.5 * 0.5


def test_sampling_follows_the_distribution() -> None:
    sampler = Sampler(torch.device("cpu"))
    probs = torch.tensor([0.7, 0.2, 0.1])
    tokens, _ = sampler(probs.log().repeat(4000, 1), [row(SamplingParams(temperature=1.0))] * 4000)
    freq = torch.bincount(torch.tensor(tokens), minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)


def test_repetition_presence_frequency_penalties() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.tensor([[2.0, 1.9, -1.0, 0.0]])
    # token 0 was in the prompt: repetition penalty 2 halves its positive logit -> token 1 wins
    tokens, _ = sampler(
        logits, [row(SamplingParams(temperature=0, repetition_penalty=2.0), [0], num_prompt=1)]
    )
    assert tokens == [1]
    # token 0 generated twice: frequency 0.1*2 + presence 0.05 lowers 2.0 to 1.75 -> token 1 wins
    params = SamplingParams(temperature=0, frequency_penalty=0.1, presence_penalty=0.05)
    tokens, _ = sampler(logits, [row(params, [3, 0, 0], num_prompt=1)])
    assert tokens == [1]
    # prompt tokens do not count for presence/frequency
    tokens, _ = sampler(logits, [row(params, [0, 0, 3], num_prompt=2)])
    assert tokens == [0]


def test_min_tokens_masks_eos_and_stop_ids() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0]])
    params = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[1])
    tokens, _ = sampler(logits, [row(params, [9], num_prompt=1, eos=[0])])
    assert tokens == [2]
    tokens, _ = sampler(logits, [row(params, [9, 2, 2], num_prompt=1, eos=[0])])  # 2 outputs: no mask
    assert tokens == [0]


def test_logprobs_are_raw_log_softmax() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    params = [
        SamplingParams(temperature=0, logprobs=3),
        SamplingParams(temperature=0),
        SamplingParams(temperature=0, logprobs=0),
    ]
    tokens, logprobs = sampler(logits, [row(p) for p in params])
    expected = torch.log_softmax(logits, -1)
    assert logprobs[1] is None
    assert logprobs[0].logprob == pytest.approx(expected[0, tokens[0]].item())
    top_ids = expected[0].topk(3).indices.tolist()
    assert [t for t, _ in logprobs[0].top] == top_ids
    assert logprobs[2].top == [] and logprobs[2].logprob == pytest.approx(expected[2, tokens[2]].item())


def test_seeded_rows_do_not_depend_on_batch_neighbours() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.zeros(1, 1000)
    params = SamplingParams(temperature=1.0, seed=42)
    alone, _ = sampler(logits, [row(params)])
    crowded, _ = sampler(
        torch.zeros(3, 1000), [row(SamplingParams()), row(params), row(SamplingParams(seed=7))]
    )
    assert crowded[1] == alone[0]
