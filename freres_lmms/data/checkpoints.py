"""Tiny local checkpoints of each Qwen-VL family, loaded through the real ``from_pretrained``.

``write_checkpoint(family, out_dir)`` writes a complete checkpoint directory: ``config.json``
with tiny dimensions, random weights drawn with a fixed seed (``model.safetensors``), the locally
trained tokenizer with the Qwen chat template, and image/video processor configs. A user with
real weights passes ``pretrained=Qwen/...`` instead and takes the same code path.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from .tokenizer import train_tokenizer

from ..families import FAMILIES

# Frames are at most 224x224 in the synthetic task: a multiple of both 28 (Qwen2/2.5 patch 14 x
# merge 2) and 32 (Qwen3 patch 16 x merge 2), so no family rescales them.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224
MAX_FRAMES = 768


@dataclass
class TinySize:
    """Dimensions of a tiny checkpoint (LLM and vision tower). Not frozen: Hydra overrides its fields."""

    # the LLM
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    # the vision tower
    vision_width: int = 32
    vision_depth: int = 2
    vision_heads: int = 2
    vision_mlp_ratio: int = 2
    deepstack: list[int] | None = None  # Qwen3-VL vision layers feeding DeepStack (None: all)
    # Wide init so random answers depend on the input: identity tests then compare real text.
    init_range: float = 0.3
    rope_theta: float = 1_000_000.0
    # Rotary pairs given to (t, h, w); None: an even split. Qwen2/2.5-VL lay sections out in
    # order, so the last one gets the lowest frequencies: a tiny head needs a small theta and
    # wide h/w sections to resolve positions on an 8x8 grid (Qwen3-VL interleaves them).
    mrope_section: list[int] | None = None


# The testbed's size (scripts/train_testbed.py): 6.4 M parameters as Qwen2-VL, 7.9 M as Qwen3-VL.
TESTBED_SIZE = TinySize(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=768, vision_width=192,
                        vision_depth=4, vision_heads=3, vision_mlp_ratio=4, deepstack=[1, 2], init_range=0.02)


def _text_config(size: TinySize, vocab: int, mrope_section: list[int], interleaved: bool = False) -> dict:
    rope = {"rope_type": "default", "rope_theta": float(size.rope_theta), "mrope_section": mrope_section}
    if interleaved:
        rope["mrope_interleaved"] = True
    return {
        "vocab_size": vocab,
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": rope,
        "initializer_range": size.init_range,
    }


def build_config(family: str, tokenizer, size: TinySize = TinySize()):
    """The tiny config of ``family``, with the tokenizer's special-token ids."""
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    vocab = len(tokenizer)
    half_head = size.hidden // size.heads // 2
    section = [half_head - 2 * (half_head // 3), half_head // 3, half_head // 3]
    if size.mrope_section is not None:
        section = list(size.mrope_section)
        if sum(section) != half_head:
            raise ValueError(f"mrope_section {section} must sum to head_dim/2 = {half_head}")
    eos = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    text = {**_text_config(size, vocab, section), **eos}
    if family == "qwen2vl":
        vision = {
            "depth": size.vision_depth, "embed_dim": size.vision_width, "hidden_size": size.hidden,
            "num_heads": size.vision_heads, "mlp_ratio": size.vision_mlp_ratio, "patch_size": 14,
            "spatial_merge_size": 2, "temporal_patch_size": 2,
        }
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    # Qwen2.5-VL and Qwen3-VL share the vision tower's knob names.
    vision = {
        "depth": size.vision_depth, "hidden_size": size.vision_width, "intermediate_size": size.vision_mlp_ratio * size.vision_width,
        "num_heads": size.vision_heads, "out_hidden_size": size.hidden, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if family == "qwen2_5vl":
        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[size.vision_depth - 1], tokens_per_second=2)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    if family == "qwen3vl":
        vision.update(patch_size=16, num_position_embeddings=196, deepstack_visual_indexes=list(range(size.vision_depth)) if size.deepstack is None else list(size.deepstack))
        text = {**_text_config(size, vocab, [section[0], section[2], section[1]], interleaved=True), **eos}
        text["head_dim"] = size.hidden // size.heads
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def build_processor(family: str, tokenizer):
    """Image/video processors sized for the synthetic frames, joined with the tokenizer."""
    patch = 16 if family == "qwen3vl" else 14
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    common = {"patch_size": patch, "merge_size": 2, "temporal_patch_size": 2, "size": size}
    image = Qwen2VLImageProcessor(**common)
    if family == "qwen3vl":
        # Qwen3-VL's video longest_edge bounds the whole clip's pixels, not one frame's.
        video_size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS * MAX_FRAMES}
        video = Qwen3VLVideoProcessor(**{**common, "size": video_size}, do_sample_frames=False, cap_pixels_per_frame=True)
        return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                chat_template=tokenizer.chat_template)
    video = Qwen2VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=True)
    cls = Qwen2_5_VLProcessor if family == "qwen2_5vl" else Qwen2VLProcessor
    return cls(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=tokenizer.chat_template)


MODEL_CLASSES = {
    "qwen2vl": Qwen2VLForConditionalGeneration,
    "qwen2_5vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3vl": Qwen3VLForConditionalGeneration,
}


def new_checkpoint(family: str, seed: int = 0, size: TinySize = TinySize()):
    """A freshly initialised (model, processor) of ``family``: the local tokenizer, weights from ``seed``."""
    tokenizer = train_tokenizer()
    config = build_config(family, tokenizer, size)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family](config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    return model, build_processor(family, tokenizer)


def save_checkpoint(model, processor, out_dir: str | Path, info: dict) -> Path:
    """``save_pretrained`` of model and processor, plus ``freres_tiny.json`` describing the weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "freres_tiny.json").write_text(json.dumps(info, indent=1) + "\n")
    return out


def write_checkpoint(family: str, out_dir: str | Path, seed: int = 0, size: TinySize = TinySize()) -> Path:
    """Write a complete tiny checkpoint of ``family`` (random weights, fixed seed) to ``out_dir``."""
    model, processor = new_checkpoint(family, seed, size)
    return save_checkpoint(model, processor, out_dir, {"family": family, "seed": seed, "weights": "random"})


# The trained testbed: small checkpoints trained on the synthetic videos (scripts/train_testbed.py),
# shipped inside the package. ``pretrained=testbed-qwen2vl`` names one.
TESTBED_ROOT = Path(__file__).resolve().parent / "testbed"
TESTBED_FAMILIES = ("qwen2vl", "qwen3vl")


def testbed_checkpoint(family: str) -> Path:
    """Directory of the trained testbed checkpoint of ``family``; a clear error when there is none."""
    path = TESTBED_ROOT / f"testbed-{family}"
    if family not in TESTBED_FAMILIES or not (path / "model.safetensors").exists():
        raise FileNotFoundError(
            f"no trained testbed checkpoint for {family} (trained: {', '.join(TESTBED_FAMILIES)}; expected {path})"
        )
    return path


def resolve_pretrained(name: str) -> str:
    """``testbed-<family>`` names a shipped testbed checkpoint (unless a directory of that name exists)."""
    if name.startswith("testbed-") and not Path(name).exists():
        return str(testbed_checkpoint(name.removeprefix("testbed-")))
    return name


def default_checkpoint_dir(family: str, root: str | Path = "checkpoints") -> Path:
    return Path(root) / f"tiny-{family}"


def ensure_checkpoint(family: str, root: str | Path = "checkpoints") -> Path:
    """Path of the tiny checkpoint of ``family`` under ``root``, written if missing."""
    path = default_checkpoint_dir(family, root)
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        write_checkpoint(family, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES + ("all",), default="all")
    parser.add_argument("--root", default="checkpoints", help="checkpoints go to ROOT/tiny-<family>")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for family in FAMILIES if args.family == "all" else (args.family,):
        print(write_checkpoint(family, default_checkpoint_dir(family, args.root), seed=args.seed))


if __name__ == "__main__":
    main()
