"""Figure 1 of the Fre-Res paper for one video: the temporal DCT spectrum of its latent residuals.

    python scripts/residual_spectrum.py VIDEO [--model testbed-qwen2vl] [--frames 16] [--out results/residual_spectrum.png]

Encodes the video with the checkpoint's own processor and vision tower (the wrapper's path, with
``frame_encoding=per_frame`` by default: one latent frame per sampled frame), takes each latent
frame minus the first, applies the orthonormal DCT along time (``core.spectrum``), prints the share
of residual energy in the first 5 coefficients, and saves the spectrum as a PNG plot and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freres_lmms.core import CompressedVideo, Method, VideoTokens, gather_tokens  # noqa: E402
from freres_lmms.core.spectrum import low_frequency_share, residual_spectrum  # noqa: E402


@dataclass
class CaptureFeatures(Method):
    """Keeps every token and records the encoder's grid, so the stock path does the encoding."""

    name = "capture"
    grids: list = field(default_factory=list)

    def compress(self, video: VideoTokens) -> CompressedVideo:
        self.grids.append(video.features.detach().float().cpu())
        return gather_tokens(video, torch.arange(video.num_tokens, device=video.features.device))


def encode(video_path: str, model: str, frames: int, frame_encoding: str, device: str | None) -> torch.Tensor:
    """Latent frames [T, H, W, D] of ``video_path`` as the checkpoint's vision tower produces them."""
    from freres_lmms.data.checkpoints import resolve_pretrained
    from freres_lmms.data.video import load_video
    from freres_lmms.lmms.families import FAMILY_CLASSES
    from freres_lmms.models import family_of

    path = resolve_pretrained(model)
    wrapper = FAMILY_CLASSES[family_of(path)](pretrained=path, device=device, frame_encoding=frame_encoding, max_num_frames=frames)
    video = load_video(video_path, frames)
    if frame_encoding == "per_frame":
        video = video.per_frame()
    text = wrapper.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the video."}]}],
        tokenize=False, add_generation_prompt=True)
    inputs = wrapper.processor(text=[text], videos=[video.frames], video_metadata=[video.metadata()],
                               return_tensors="pt").to(wrapper.device)
    capture = CaptureFeatures()
    with torch.no_grad():
        wrapper.adapter.compress_inputs(dict(inputs), capture)
    return capture.grids[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--model", default="testbed-qwen2vl", help="checkpoint dir, hub id or testbed-<family>")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--frame-encoding", choices=["per_frame", "paired"], default="per_frame")
    parser.add_argument("--device", default=None)
    parser.add_argument("--first", type=int, default=5, help="report the energy share of this many coefficients")
    parser.add_argument("--out", default=str(ROOT / "results" / "residual_spectrum.png"))
    args = parser.parse_args(argv)
    features = encode(args.video, args.model, args.frames, args.frame_encoding, args.device)
    spectrum = residual_spectrum(features)
    share = low_frequency_share(spectrum, args.first)
    fraction = (spectrum / spectrum.sum().clamp_min(1e-30)).tolist()
    print(f"{args.video}: {features.shape[0]} latent frames of {features.shape[1]}x{features.shape[2]}; "
          f"first {args.first} DCT coefficients hold {100 * share:.1f}% of the residual energy")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(fraction)), fraction)
    ax.set_xlabel("temporal DCT coefficient")
    ax.set_ylabel("share of residual energy")
    ax.set_title(f"{Path(args.video).name}: first {args.first} hold {100 * share:.1f}%")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    out.with_suffix(".json").write_text(json.dumps({"video": args.video, "model": args.model,
                                                    "latent_frames": features.shape[0], "energy_share": fraction,
                                                    f"first_{args.first}_share": share}, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
