"""Audio tower parity with transformers 5.x on a tiny Qwen2.5-Omni checkpoint (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
from omniserve.encoders.audio_tower import OMNI_AUDIO_PREFIX, AudioTower, num_audio_tokens
from tiny_towers import AUDIO, TinyCheckpoint, build_tiny_omni, max_abs_error, omni_tower

# chunks are 2 * n_window = 200 frames: shorter than a chunk, exactly one, several with an odd tail, a
# 3-frame item (one token), a 1-frame item (no token), exactly three chunks, one frame past a chunk
LENGTHS = [50, 200, 457, 3, 1, 600, 201]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def omni(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "ckpt")


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return torch.randn(128, sum(LENGTHS), generator=torch.Generator().manual_seed(7))  # [mel, frames]


@pytest.fixture(scope="module")
def expected(omni: TinyCheckpoint, features: torch.Tensor) -> torch.Tensor:
    """transformers' thinker on the processor's layout: [items, mel, max frames] plus a frame mask."""
    padded = torch.zeros(len(LENGTHS), 128, max(LENGTHS))
    mask = torch.zeros(len(LENGTHS), max(LENGTHS), dtype=torch.long)
    for row, chunk in enumerate(features.split(LENGTHS, dim=1)):
        padded[row, :, : chunk.shape[1]] = chunk
        mask[row, : chunk.shape[1]] = 1
    with torch.no_grad():
        return omni.model.thinker.get_audio_features(padded, feature_attention_mask=mask).last_hidden_state


def load_tower(checkpoint: TinyCheckpoint, config=None) -> AudioTower:
    tower = AudioTower.from_hf_config(config or checkpoint.model.config)
    tower.load_weights(checkpoint.weights.items(), OMNI_AUDIO_PREFIX)
    return tower.eval()


def test_token_count_formula_matches_transformers(omni: TinyCheckpoint) -> None:
    frames = torch.arange(1, 1000)
    _, expected = omni_tower(omni.model, "audio_tower")._get_feat_extract_output_lengths(frames)
    assert [num_audio_tokens(n) for n in frames.tolist()] == expected.tolist()


@torch.no_grad()
def test_tower_matches_transformers(
    omni: TinyCheckpoint, features: torch.Tensor, expected: torch.Tensor
) -> None:
    out = load_tower(omni)(features, LENGTHS)
    assert out.shape == (sum(num_audio_tokens(n) for n in LENGTHS), AUDIO["output_dim"])
    error = max_abs_error(out, expected)
    print(f"audio tower: max abs error {error:.2e} (outputs up to {expected.abs().max().item():.2f})")
    assert error <= TOLERANCE


@torch.no_grad()
def test_items_are_independent_and_split_in_order(
    omni: TinyCheckpoint, features: torch.Tensor, expected: torch.Tensor
) -> None:
    tower = load_tower(omni)
    items = list(features.split(LENGTHS, dim=1))
    per_item = [num_audio_tokens(n) for n in LENGTHS]
    for got, want in zip(tower.encode(items), expected.split(per_item), strict=True):
        assert max_abs_error(got, want) <= TOLERANCE
    alone = tower.encode([items[2]])[0]  # several chunks, encoded without the others
    assert max_abs_error(alone, expected.split(per_item)[2]) <= TOLERANCE


@torch.no_grad()
def test_comparison_detects_wrong_chunking(
    omni: TinyCheckpoint, features: torch.Tensor, expected: torch.Tensor
) -> None:
    """The parity test can fail: attention over 2 s chunks matters (here: 4 s chunks instead)."""
    config = omni.model.config.thinker_config.audio_config
    wide = load_tower(omni, type(config)(**{**config.to_dict(), "n_window": 2 * config.n_window}))
    assert max_abs_error(wide(features, LENGTHS), expected) > 100 * TOLERANCE


def test_bad_checkpoints_are_named(omni: TinyCheckpoint) -> None:
    weights = dict(omni.weights)
    weights["thinker.audio_tower.layers.0.self_attn.k_proj.bias"] = torch.zeros(32)  # k_proj has no bias
    del weights["thinker.audio_tower.ln_post.weight"]
    weights["thinker.audio_tower.conv1.weight"] = torch.zeros(32, 80, 3)
    with pytest.raises(ValueError) as error:
        AudioTower.from_hf_config(omni.model.config).load_weights(weights.items(), OMNI_AUDIO_PREFIX)
    message = str(error.value)
    for part in (
        "unknown tensors ['thinker.audio_tower.layers.0.self_attn.k_proj.bias']",
        "missing tensors ['thinker.audio_tower.ln_post.weight']",
        "thinker.audio_tower.conv1.weight (32, 80, 3) (expected (32, 128, 3))",
    ):
        assert part in message


def test_bad_inputs_are_refused(omni: TinyCheckpoint, features: torch.Tensor) -> None:
    tower = load_tower(omni)
    with pytest.raises(ValueError, match="features have 1512 frames, the items 1000"):
        tower(features, [1000])
    with pytest.raises(ValueError, match=r"features must be \[128, frames\]"):
        tower(features[:80], LENGTHS)
    with pytest.raises(ValueError, match="at least one mel frame"):
        tower(features, [0, sum(LENGTHS)])
