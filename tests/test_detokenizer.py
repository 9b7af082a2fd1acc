"""Incremental detokenization and stop strings, with the demo tokenizer."""

from __future__ import annotations

import pytest

from omniserve.demo import build_tokenizer
from omniserve.frontend.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize(
    "text", ["Hello world, the answer is 42.", "naïve café 日本語 🌍🚀 done", "a\n\n  b\tc"]
)
def test_token_by_token_equals_full_decode(tokenizer, text: str) -> None:
    prompt = tokenizer.encode("Prompt: ")
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=True, stop=[])
    streamed = ""
    for token_id in ids:
        assert not detok.add_tokens([token_id])
        piece = detok.take_delta(finished=False)
        assert "\ufffd" not in piece  # never a broken character mid-stream
        streamed += piece
    streamed += detok.take_delta(finished=True)
    assert streamed == text == detok.text


def test_stop_string_cuts_text_and_is_never_streamed(tokenizer) -> None:
    ids = tokenizer.encode("one two STOP three")
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=True, stop=["STOP", "zzz"])
    streamed, stopped = "", False
    for token_id in ids:
        stopped = detok.add_tokens([token_id])
        streamed += detok.take_delta(finished=stopped)
        if stopped:
            break
    assert stopped and detok.stop_reason == "STOP"
    assert streamed == detok.text == "one two "


def test_special_tokens_are_skipped(tokenizer) -> None:
    ids = tokenizer.encode("hi") + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=True, stop=[])
    detok.add_tokens(ids)
    assert detok.text == "hi"
