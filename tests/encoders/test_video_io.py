"""Video loading: mp4 (mpeg4 + AAC) decoded with PyAV, frames sampled at fps as HF samples them, the audio
track at 16 kHz, frame arrays, and each MediaError case."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np
import pytest
from encoder_media_factories import encoded_audio, frame_pattern, mp4_bytes, tone_energy_share
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.video_io import (
    VideoOptions,
    load_video,
    probe_video,
    sample_frame_indices,
    video_from_frames,
)
from omniserve.encoders.vision_config import VisionPreprocessConfig
from omniserve.encoders.vision_preprocess import num_video_tokens, preprocess_video


@pytest.fixture(scope="module")
def clip_with_audio() -> bytes:
    """3 s at 10 fps (30 frames, 64x96) with a 3 s stereo AAC tone (440 Hz left, 550 Hz right)."""
    return mp4_bytes(30, 10, audio_seconds=3.0)


def frame_index_of(frame: np.ndarray) -> int:
    """Invert frame_pattern: the mean of the lower-right part is 10 + 20 * index."""
    return int(round((float(frame[frame.shape[0] // 2 :, frame.shape[1] // 2 :].mean()) - 10) / 20))


def test_fps_sampling_of_an_mp4(clip_with_audio: bytes) -> None:
    video = load_video(clip_with_audio)  # fps 2.0 by default
    assert (video.source_num_frames, video.source_fps) == (30, 10.0)
    assert video.frames.shape == (6, 64, 96, 3) and video.frames.dtype == np.uint8
    assert video.frame_indices.tolist() == [0, 5, 10, 15, 20, 25]
    assert [frame_index_of(frame) for frame in video.frames] == [index % 12 for index in video.frame_indices]
    np.testing.assert_allclose(video.timestamps_s, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert video.sampled_fps == pytest.approx(2.0) and video.requested_fps == 2.0
    assert video.second_per_grid() == 1.0  # Omni: temporal_patch_size / requested fps
    assert video.second_per_grid(convention="qwen2_5_vl") == pytest.approx(1.0)  # tp / sampled fps
    assert video.audio is None


def test_probe_counts_tokens_without_decoding(clip_with_audio: bytes) -> None:
    probe = probe_video(clip_with_audio, VideoOptions(fps=1.0))
    assert (probe.height, probe.width, probe.source_fps, probe.source_num_frames) == (64, 96, 10.0, 30)
    assert probe.num_sampled_frames == 4
    config = VisionPreprocessConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 16)
    decoded = load_video(clip_with_audio, VideoOptions(fps=1.0))
    predicted = num_video_tokens(probe.num_sampled_frames, probe.height, probe.width, config)
    assert predicted == preprocess_video(decoded.frames, config).num_tokens
    frames = np.zeros((6, 20, 30, 3), dtype=np.uint8)
    assert probe_video(frames).num_sampled_frames == 6


def test_other_rates_and_caps(clip_with_audio: bytes) -> None:
    one_fps = load_video(clip_with_audio, VideoOptions(fps=1.0))
    assert one_fps.frame_indices.tolist() == [0, 7, 15, 22]  # 3 frames wanted, min_frames 4
    assert one_fps.second_per_grid() == 2.0
    assert one_fps.second_per_grid(convention="qwen2_5_vl") == pytest.approx(2 / (4 / 30 * 10))
    capped = load_video(clip_with_audio, VideoOptions(fps=10.0, max_frames=8))
    assert capped.num_frames == 8
    every = load_video(clip_with_audio, VideoOptions(fps=None))
    assert every.num_frames == 30 and every.frame_indices.tolist() == list(range(30))
    with pytest.raises(MediaError, match="over the limit of 20"):
        load_video(clip_with_audio, VideoOptions(fps=None, max_frames=20))


def test_sampling_equals_hf_sample_frames() -> None:
    from transformers.models.qwen2_vl import Qwen2VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    processor = Qwen2VLVideoProcessor()
    for total in [2, 3, 5, 8, 30, 31, 97, 240, 1001, 5000]:
        for source_fps in [1.0, 7.5, 24.0, 29.97, 30.0, 60.0]:
            for fps in [0.5, 1.0, 2.0, 3.3]:
                metadata = VideoMetadata(total_num_frames=total, fps=source_fps)
                expected = processor.sample_frames(metadata, fps=fps).numpy()
                assert sample_frame_indices(total, source_fps, fps).tolist() == expected.tolist()


def test_short_videos_keep_what_they_have() -> None:
    three = load_video(mp4_bytes(3, 10))
    assert three.frame_indices.tolist() == [0, 1]  # rounded down to the temporal patch
    single = load_video(mp4_bytes(1, 10))  # HF would divide by zero here; we keep the frame
    assert single.frame_indices.tolist() == [0]
    config = VisionPreprocessConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 16)
    inputs = preprocess_video(single.frames, config)
    assert inputs.grid_thw[0] == 1  # padded to 2 frames by repeating the last
    assert inputs.num_tokens == num_video_tokens(1, 64, 96, config)


def test_audio_track_is_mono_16k(clip_with_audio: bytes) -> None:
    video = load_video(clip_with_audio, VideoOptions(load_audio=True))
    assert video.audio is not None and video.audio.dtype == np.float32 and video.audio.ndim == 1
    assert video.audio_sample_rate == 16000
    assert abs(video.audio.shape[0] - 48000) <= 2 * 1024 * 16000 // 44100 + 1  # AAC priming / padding
    assert tone_energy_share(video.audio[4000:20000], 16000, [440, 550]) > 0.9  # both channels kept
    silent = load_video(mp4_bytes(4, 10), VideoOptions(load_audio=True))
    assert silent.audio is None


def test_sources_path_data_url_and_frames(tmp_path: Path, clip_with_audio: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip_with_audio)
    data_url = "data:video/mp4;base64," + base64.b64encode(clip_with_audio).decode()
    for source in (path, str(path), data_url):
        assert load_video(source).frame_indices.tolist() == [0, 5, 10, 15, 20, 25]
    frames = np.stack([frame_pattern(index, 32, 48) for index in range(10)])
    taken = video_from_frames(frames)  # already sampled: all kept, timestamps at the requested fps
    assert taken.num_frames == 10 and taken.timestamps_s[1] == 0.5
    sampled = video_from_frames(frames, source_fps=10.0)
    assert sampled.frame_indices.tolist() == [0, 2, 5, 7]  # 2 wanted, min_frames 4
    assert np.array_equal(load_video(frames).frames, frames)


def _mp4_without_samples() -> bytes:
    """An mp4 whose video track has no samples (FFmpeg's demuxer then reports no video stream)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return buffer.getvalue()


def _mp4_with_undecodable_frames() -> bytes:
    """A valid container whose frame payloads (the mdat box) are zeroed: no frame decodes."""
    data = bytearray(mp4_bytes(4, 10))
    start = data.index(b"mdat")
    size = int.from_bytes(data[start - 4 : start], "big")
    data[start + 4 : start - 4 + size] = bytes(size - 8)
    return bytes(data)


def test_errors(clip_with_audio: bytes) -> None:
    with pytest.raises(MediaError, match="video 1: no video stream"):
        load_video(encoded_audio("m4a_aac"), item="video 1")
    with pytest.raises(MediaError, match="no video stream"):
        load_video(_mp4_without_samples())
    with pytest.raises(MediaError, match="corrupt video data"):
        load_video(_mp4_with_undecodable_frames())
    with pytest.raises(MediaError, match="no frames"):
        sample_frame_indices(0, 30.0, 2.0)
    with pytest.raises(MediaError, match="corrupt or unreadable video"):
        load_video(clip_with_audio[: len(clip_with_audio) // 2])  # moov atom is at the end: cut off
    with pytest.raises(MediaError, match="unsupported or unrecognized video format"):
        load_video(b"\x00" * 1000)
    with pytest.raises(MediaError, match="unsupported or unrecognized video format"):
        load_video(encoded_audio("flac"))
    playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    with pytest.raises(MediaError, match="unsupported"):  # never handed to FFmpeg's hls demuxer
        load_video(playlist)
    with pytest.raises(MediaError, match="over the limit of 1000 pixels"):
        load_video(clip_with_audio, VideoOptions(max_frame_pixels=1000))
    with pytest.raises(MediaError, match="over the limit of 2 s"):
        load_video(clip_with_audio, VideoOptions(max_seconds=2.0))
    with pytest.raises(MediaError, match="expected uint8 frames"):
        video_from_frames(np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(MediaError, match="no frames"):
        video_from_frames(np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(MediaError, match="over the limit of 3"):
        video_from_frames(np.zeros((4, 8, 8, 3), dtype=np.uint8), options=VideoOptions(max_frames=3))
