"""Model inputs for training on synthetic videos, built on the GPU exactly as the eval path builds them.

The lmms-eval path decodes an mp4, runs the checkpoint's processor and the chat template. Here
the same inputs come from tensors: ``SyntheticBatches`` renders a batch, turns its frames into
``pixel_values_videos`` with the processor's own normalisation and patch layout (``patchify``,
tested against the processor), and assembles ``input_ids`` from the prompt template the
processor produced once (system turn, video placeholders, Qwen3-VL timestamps) around each
question's token ids. Extra questions about the same video can follow as further chat turns.
Only answers (letter and end of turn) are supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .synthetic import LETTERS, PhraseTable, Questions, Scene
from .tasks import TASKS

PLACEHOLDER = "QQQ"


def patchify(videos: torch.Tensor, video_processor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, T, H, W, 3] -> (pixel_values [N*t*h*w, 3*tp*p*p] float32, grid_thw [N, 3]).

    The layout of Qwen2-VL/Qwen3-VL video processors: temporal patches of ``tp`` frames, spatial
    patches of ``p`` pixels, grouped by ``merge_size`` x ``merge_size`` blocks. No resizing: the
    frames must already be a multiple of ``p * merge_size``.
    """
    n, frames, height, width, _ = videos.shape
    p, m, tp = video_processor.patch_size, video_processor.merge_size, video_processor.temporal_patch_size
    if height % (p * m) or width % (p * m) or frames % tp:
        raise ValueError(f"frames of {height}x{width}x{frames} do not tile into {p * m}-pixel merged patches of {tp} frames")
    mean = torch.tensor(video_processor.image_mean, device=videos.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(video_processor.image_std, device=videos.device).view(1, 1, 3, 1, 1)
    x = (videos.permute(0, 1, 4, 2, 3).float() / 255.0 - mean) / std  # [N,T,3,H,W]
    t, h, w = frames // tp, height // p, width // p
    x = x.view(n, t, tp, 3, h // m, m, p, w // m, m, p).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    grid = torch.tensor([t, h, w], device=videos.device).expand(n, 3)
    return x.reshape(n * t * h * w, 3 * tp * p * p), grid


def chroma_subsample(videos: torch.Tensor) -> torch.Tensor:
    """What 4:2:0 video coding does to colour: chroma averaged over 2x2 pixels (uint8 in and out)."""
    rgb = videos.float()
    y = rgb @ torch.tensor([0.299, 0.587, 0.114], device=rgb.device)
    cb, cr = (rgb[..., 2] - y) * 0.564, (rgb[..., 0] - y) * 0.713
    n, t, h, w = y.shape
    pooled = F.avg_pool2d(torch.stack([cb, cr], 2).view(n * t, 2, h, w), 2)
    cb, cr = F.interpolate(pooled, scale_factor=2, mode="nearest").view(n, t, 2, h, w).unbind(2)
    r, b = y + cr / 0.713, y + cb / 0.564
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], -1).round().clamp(0, 255).to(torch.uint8)


@dataclass
class PromptTemplate:
    """The chat around the questions: ``prefix`` (through the video) and the text pieces between turns."""

    prefix: torch.Tensor  # long [P]
    prefix_types: torch.Tensor  # mm_token_type_ids of the prefix
    suffix: str  # after a question, up to the answer
    end: str  # ends an answer (the end-of-turn token)
    next_turn: str  # after an answer's end, up to the next question

    @classmethod
    def build(cls, processor, frames: int, size: int, fps: float) -> "PromptTemplate":
        """Split a rendered two-turn chat at placeholders, so every piece is the chat template's own."""
        q1, a1, q2 = (f"{PLACEHOLDER}{i}" for i in range(3))
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q1}]},
                    {"role": "assistant", "content": a1}, {"role": "user", "content": q2}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        before, rest = text.split(q1)
        suffix, rest = rest.split(a1)
        between, last = rest.split(q2)
        end = processor.tokenizer.eos_token
        if last != suffix or not between.startswith(end):
            raise ValueError("unexpected chat template: turns are not separated by the end-of-turn token")
        video = torch.zeros(frames, 3, size, size, dtype=torch.uint8)
        metadata = {"fps": float(fps), "frames_indices": list(range(frames)), "total_num_frames": frames}
        encoded = processor(text=[before], videos=[video], video_metadata=[metadata], return_tensors="pt")
        return cls(encoded["input_ids"][0], encoded["mm_token_type_ids"][0], suffix, end, between[len(end):])


class SyntheticBatches:
    """Batches of (model inputs, questions) drawn from the synthetic generator on ``device``."""

    def __init__(self, processor, frames: int = 16, size: int = 224, fps: float = 8.0,
                 device: str | torch.device = "cpu", chroma: float = 0.0, task: str = "short") -> None:
        self.processor, self.frames, self.size, self.device = processor, frames, size, torch.device(device)
        self.task = TASKS[task]  # the generator: short (freres_synthetic) or long (freres_synthetic_long)
        tpl = PromptTemplate.build(processor, frames, size, fps)
        self.prefix, self.prefix_types = tpl.prefix.to(self.device), tpl.prefix_types.to(self.device)
        # The question phrases, then the chat pieces and the answer letters.
        self.phrases = PhraseTable(processor.tokenizer, self.device, self.task.phrases + [tpl.suffix, tpl.end, tpl.next_turn, *LETTERS])
        self.suffix_id, self.end_id, self.next_id, self.letter0 = (len(self.task.phrases) + i for i in range(4))
        letters = self.phrases.lengths[self.letter0:]
        if bool((letters != 1).any()):
            raise ValueError("each answer letter must be one token")
        self.letter_ids = self.phrases.ids[self.letter0:, 0]  # the token of A, B, C, D
        self.pad_id = processor.tokenizer.pad_token_id
        self.chroma = chroma  # probability of simulating 4:2:0 chroma per video
        self.prefix_positions: torch.Tensor | None = None  # [3, P] M-RoPE positions of the template prefix
        self.text_start: int | None = None  # the position of the first text token after the prefix

    def precompute_positions(self, model, text_start: int | None = None) -> None:
        """Take the prefix's M-RoPE positions from ``model`` once, so batches carry ``position_ids``.

        Every sample has the same prefix (the video block), and the text after it is sequential,
        so the model's per-sample position computation (a Python loop over the batch) is skipped.
        ``text_start`` places the text after the video where a longer clip's text starts (training
        on short clips for a long task: the question then sees the video at the long task's offsets).
        """
        vp = self.processor.video_processor
        grid = torch.tensor([[self.frames // vp.temporal_patch_size, self.size // vp.patch_size, self.size // vp.patch_size]],
                            device=self.device)
        mrope, _ = model.model.get_rope_index(self.prefix[None], self.prefix_types[None], video_grid_thw=grid,
                                              attention_mask=torch.ones_like(self.prefix[None]))
        self.prefix_positions = mrope[:, 0]
        natural = int(self.prefix_positions[:, -1].max()) + 1
        if text_start is not None and text_start < natural:
            raise ValueError(f"text_start {text_start} is inside the video block (its text starts at {natural})")
        self.text_start = natural if text_start is None else text_start

    def draw(self, n: int, seed: int, first: int = 0, on_cpu: bool = False, ease: float = 0.0) -> tuple[Scene, Questions]:
        """``on_cpu`` draws where the task's split files are drawn, so the same seed gives the same split;
        ``ease`` > 0 (long task only) draws the curriculum's larger, longer needles."""
        options = {"ease": ease} if ease else {}
        scene, questions = self.task.sample(n, self.frames, self.size, seed, "cpu" if on_cpu else self.device, first, **options)
        if on_cpu:
            scene, questions = (part.map(lambda v: v.to(self.device)) for part in (scene, questions))
        return scene, questions

    def extra(self, scene: Scene, questions: Questions, turns: int, seed: int) -> list[Questions]:
        """``turns`` more questions about the same videos (the task's ``extra``)."""
        return self.task.extra(scene, questions, turns, self.frames, self.size, seed)

    def inputs(self, scene: Scene, questions: Questions, generator: torch.Generator | None = None,
               with_answers: bool = True, extra: list[Questions] = ()) -> dict:
        """Model inputs (right-padded). With answers: ``labels`` on each answer letter and its end of turn.

        ``extra`` questions follow as further chat turns about the same video: the first turn is
        exactly the evaluation prompt, and one video forward pass supervises several answers.
        """
        if extra and not with_answers:
            raise ValueError("extra turns need the answers of the turns before them")
        videos = self.task.render(scene, self.frames, self.size)
        if self.chroma > 0:
            pick = torch.rand(len(videos), device=self.device, generator=generator) < self.chroma
            videos = torch.where(pick[:, None, None, None, None], chroma_subsample(videos), videos)
        pixels, grid = patchify(videos, self.processor.video_processor)
        n = len(questions.qtype)
        turns = [questions, *extra]
        segments, flags = [], []

        def piece(ids: torch.Tensor, supervised: bool) -> None:
            segments.append(ids.reshape(n, -1))
            flags.append(torch.full_like(segments[-1], supervised, dtype=torch.bool))

        for index, turn in enumerate(turns):  # a few turns, each batched
            piece(turn.segments(), False)
            piece(torch.full((n,), self.suffix_id, device=self.device), False)
            if with_answers:
                piece(self.letter0 + turn.answer, True)
                piece(torch.full((n,), self.end_id, device=self.device), True)
            if index < len(turns) - 1:
                piece(torch.full((n,), self.next_id, device=self.device), False)
        body, length, supervised = self.phrases.assemble(torch.cat(segments, 1), self.pad_id, torch.cat(flags, 1))
        ids = torch.cat([self.prefix.expand(n, -1), body], 1)
        mask = torch.arange(ids.shape[1], device=self.device)[None, :] < (len(self.prefix) + length)[:, None]
        types = torch.cat([self.prefix_types.expand(n, -1), torch.zeros_like(body)], 1)
        out = {"input_ids": ids, "attention_mask": mask.long(), "mm_token_type_ids": types,
               "pixel_values_videos": pixels, "video_grid_thw": grid}
        if self.prefix_positions is not None:
            # [4, N, L]: row 0 the text position, rows 1-3 M-RoPE; text continues after the prefix.
            after = self.text_start + torch.arange(body.shape[1], device=self.device)[None]
            mrope = torch.cat([self.prefix_positions, after.expand(3, -1)], 1)
            row0 = torch.arange(ids.shape[1], device=self.device)[None]
            out["position_ids"] = torch.cat([row0, mrope])[:, None, :].expand(4, n, -1)
            # With positions given, the grid only drives the vision encoder, which works per
            # temporal slice (attention, 2D rotary and position embeddings depend on h, w only):
            # one grid of N*t slices gives the same features without a Python loop over videos.
            out["video_grid_thw"] = torch.cat([grid[:1, :1] * n, grid[:1, 1:]], 1)
        if with_answers:
            prefix_labels = torch.full_like(self.prefix.expand(n, -1), -100)
            out["labels"] = torch.cat([prefix_labels, torch.where(supervised, body, -100)], 1)
        return out


@torch.no_grad()
def answer_accuracy(model, batches: SyntheticBatches, scene: Scene, questions: Questions, chunk: int = 64) -> torch.Tensor:
    """Per-sample correctness of the greedy first answer token (the letter generate would emit): bool [N]."""
    letters = batches.letter_ids
    correct = []
    for lo in range(0, len(questions.qtype), chunk):
        part_scene, part_q = (part.map(lambda v: v[lo:lo + chunk]) for part in (scene, questions))
        inputs = batches.inputs(part_scene, part_q, with_answers=False)
        last = inputs["attention_mask"].sum(1) - 1
        logits = model(**inputs, logits_to_keep=0).logits  # right-padded: read each row's last real position
        predicted = logits[torch.arange(len(last), device=last.device), last].argmax(-1)
        correct.append(predicted == letters[part_q.answer])
    return torch.cat(correct)


# -- faster vision attention for training --------------------------------------------------------
PACKED_ATTENTION = "flash_packed_sdpa"  # "flash" in the name selects the encoders' cu_seqlens path


def packed_sdpa_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                          cu_seq_lens_q=None, max_length_q=None, is_causal=False, **kwargs):
    """Attention within equal-length packed segments as one batched SDPA call.

    The Qwen vision encoders attend within each temporal slice. Under plain ``sdpa`` they call
    attention once per slice (512 calls per layer for a batch of 64 videos of 8 slices), which
    makes training CPU-bound; the flash path hands the whole pack with ``cu_seqlens`` to one call.
    Every slice of a training batch has the same size, so the pack reshapes into a batch.
    Registered under ``PACKED_ATTENTION`` (``use_packed_vision_attention``); training only.
    """
    total = query.shape[2]
    length = int(max_length_q) if max_length_q is not None else total
    lengths = cu_seq_lens_q.diff() if cu_seq_lens_q is not None else None
    if total % length or (lengths is not None and not bool((lengths == length).all())):
        raise ValueError("packed_sdpa_attention needs segments of equal length")
    q, k, v = (x[0].unflatten(1, (total // length, length)).transpose(0, 1) for x in (query, key, value))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=is_causal)
    return out.permute(0, 2, 1, 3).reshape(1, total, out.shape[1], out.shape[3]), None


def use_packed_vision_attention(model) -> None:
    """Switch ``model``'s vision encoder (only) to ``packed_sdpa_attention``, through transformers'
    attention registry: a new named implementation, no class patched."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    model.set_attn_implementation({"vision_config": PACKED_ATTENTION})
