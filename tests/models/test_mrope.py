"""M-RoPE / TMRoPE positions equal transformers' Qwen2.5-Omni `get_rope_index` on random layouts."""

from __future__ import annotations

import random
import types

import pytest
import torch

from omniserve.models.mrope import MRopeConfig, MRopeItem, mrope_positions

IMAGE, VIDEO, AUDIO, V_BOS, V_EOS, A_BOS, A_EOS, TEXT = 10, 11, 12, 13, 14, 15, 16, 1


def hf_rope_index(tokens, image_grids, video_grids, audio_lens, seconds, use_audio_in_video):
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    cls = m.Qwen2_5OmniPreTrainedModelForConditionalGeneration
    fake = types.SimpleNamespace(
        spatial_merge_size=2,
        config=types.SimpleNamespace(
            image_token_id=IMAGE,
            video_token_id=VIDEO,
            audio_token_id=AUDIO,
            vision_start_token_id=V_BOS,
            audio_start_token_id=A_BOS,
            position_id_per_seconds=25,
            seconds_per_chunk=2,
        ),
    )
    fake.get_llm_pos_ids_for_vision = lambda *a: cls.get_llm_pos_ids_for_vision(fake, *a)
    fake.get_chunked_index = lambda *a: cls.get_chunked_index(fake, *a)
    positions, delta = cls.get_rope_index(
        fake,
        torch.tensor([tokens]),
        image_grid_thw=torch.tensor(image_grids) if image_grids else None,
        video_grid_thw=torch.tensor(video_grids) if video_grids else None,
        attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
        use_audio_in_video=use_audio_in_video,
        audio_seqlens=torch.tensor(audio_lens) if audio_lens else None,
        second_per_grids=torch.tensor(seconds) if seconds else None,
    )
    return positions[:, 0].numpy(), int(delta[0, 0])


def audio_tokens(mel_frames: int) -> int:
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def interleaved(grid, seconds_per_grid, n_audio, per_chunk: int = 50) -> list[int]:
    """The processor's audio-in-video token run: per 2 s chunk, that chunk's video tokens then its audio."""
    per_frame = grid[1] * grid[2] // 4
    frame_times = [int(f * seconds_per_grid * 25) for f in range(grid[0])]
    run, chunk = [], 0
    video_left, audio_next = list(frame_times), 0
    while video_left or audio_next < n_audio:
        limit = (chunk + 1) * per_chunk
        while video_left and video_left[0] < limit:
            video_left.pop(0)
            run += [VIDEO] * per_frame
        take = min(n_audio, limit) - audio_next
        run += [AUDIO] * max(take, 0)
        audio_next += max(take, 0)
        chunk += 1
    return run


def build(rng: random.Random, use_audio_in_video: bool):
    tokens, items = [], []
    image_grids, video_grids, audio_lens, seconds = [], [], [], []
    for _ in range(rng.randint(1, 4)):
        tokens += [TEXT] * rng.randint(0, 5)
        kind = rng.choice(["image", "video", "audio"])
        if kind == "image":
            grid = (1, 2 * rng.randint(1, 3), 2 * rng.randint(1, 4))
            n = grid[0] * grid[1] * grid[2] // 4
            tokens += [V_BOS]
            items.append(MRopeItem("image", len(tokens), n, grid_thw=grid))
            tokens += [IMAGE] * n + [V_EOS]
            image_grids.append(grid)
        elif kind == "audio":
            frames = rng.randint(10, 400)
            n = audio_tokens(frames)
            tokens += [A_BOS]
            items.append(MRopeItem("audio", len(tokens), n, audio_tokens=n))
            tokens += [AUDIO] * n + [A_EOS]
            audio_lens.append(frames)
        else:
            grid = (rng.randint(1, 5), 2 * rng.randint(1, 2), 2 * rng.randint(1, 2))
            spg = rng.choice([0.5, 1.0, 2.0, 1.3])
            n_video = grid[0] * grid[1] * grid[2] // 4
            video_grids.append(grid)
            seconds.append(spg)
            if use_audio_in_video:
                frames = rng.randint(10, 600)
                n_audio = audio_tokens(frames)
                audio_lens.append(frames)
                tokens += [V_BOS, A_BOS]
                item = MRopeItem(
                    "video_with_audio",
                    len(tokens),
                    n_video + n_audio,
                    grid_thw=grid,
                    seconds_per_grid=spg,
                    audio_tokens=n_audio,
                )
                items.append(item)
                tokens += interleaved(grid, spg, n_audio) + [A_EOS, V_EOS]
            else:
                tokens += [V_BOS]
                items.append(MRopeItem("video", len(tokens), n_video, grid_thw=grid, seconds_per_grid=spg))
                tokens += [VIDEO] * n_video + [V_EOS]
    tokens += [TEXT] * rng.randint(0, 5)
    return tokens, items, image_grids, video_grids, audio_lens, seconds


@pytest.mark.parametrize("use_audio_in_video", [False, True])
@pytest.mark.parametrize("seed", range(25))
def test_positions_match_transformers(seed: int, use_audio_in_video: bool) -> None:
    rng = random.Random(seed)
    tokens, items, image_grids, video_grids, audio_lens, seconds = build(rng, use_audio_in_video)
    if use_audio_in_video and not video_grids:
        pytest.skip("layout without a video")
    if not image_grids and not video_grids:  # HF takes its text-only branch: plain positions
        expected, expected_delta = torch.arange(len(tokens)).expand(3, -1).numpy(), 0
    else:
        expected, expected_delta = hf_rope_index(
            tokens, image_grids, video_grids, audio_lens, seconds, use_audio_in_video
        )
    ours, delta = mrope_positions(len(tokens), items, MRopeConfig())
    assert (ours == expected).all()
    assert delta == expected_delta


def test_placeholder_count_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="placeholder tokens"):
        mrope_positions(10, [MRopeItem("image", 1, 5, grid_thw=(1, 4, 4))], MRopeConfig())
