"""Fixtures of the multimodal frontend tests: tiny Qwen2.5-Omni / Qwen2.5-VL checkpoints, built once per
session, with transformers' processors and models on them as the references."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def omni_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    return build_qwen2_5_omni_checkpoint(tmp_path_factory.mktemp("omni") / "ckpt")


@pytest.fixture(scope="session")
def vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omniserve.demo_omni import build_qwen2_5_vl_checkpoint

    return build_qwen2_5_vl_checkpoint(tmp_path_factory.mktemp("vl") / "ckpt")


def _quiet_load(loader, path: Path):
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loader(path)
    finally:
        logging.set_verbosity(previous)


@pytest.fixture(scope="session")
def omni_hf_processor(omni_dir: Path):
    from transformers import AutoProcessor

    return _quiet_load(AutoProcessor.from_pretrained, omni_dir)


@pytest.fixture(scope="session")
def vl_hf_processor(vl_dir: Path):
    from transformers import AutoProcessor

    return _quiet_load(AutoProcessor.from_pretrained, vl_dir)


@pytest.fixture(scope="session")
def omni_hf_model(omni_dir: Path):
    from transformers import Qwen2_5OmniForConditionalGeneration

    return _quiet_load(Qwen2_5OmniForConditionalGeneration.from_pretrained, omni_dir).eval()


@pytest.fixture(scope="session")
def vl_hf_model(vl_dir: Path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return _quiet_load(Qwen2_5_VLForConditionalGeneration.from_pretrained, vl_dir).eval()


@pytest.fixture(scope="session")
def omni_mm(omni_dir: Path):
    from transformers import AutoTokenizer

    from omniserve.frontend.multimodal_processor import build_multimodal_processor

    processor = build_multimodal_processor(omni_dir, AutoTokenizer.from_pretrained(omni_dir))
    assert processor is not None
    return processor


@pytest.fixture(scope="session")
def vl_mm(vl_dir: Path):
    from transformers import AutoTokenizer

    from omniserve.frontend.multimodal_processor import build_multimodal_processor

    processor = build_multimodal_processor(vl_dir, AutoTokenizer.from_pretrained(vl_dir))
    assert processor is not None
    return processor
