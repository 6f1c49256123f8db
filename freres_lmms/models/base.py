"""Sequence bookkeeping shared by the Qwen-VL adapters.

The recipe (transformers 5.23, see docs): run the vision encoder over each video one chunk of
temporal slices at a time, feed every chunk to the compression method's stream (``Method.stream``:
online methods keep only what they will emit), rebuild ``input_ids``, ``attention_mask``, ``mm_token_type_ids``
and 4-row position ids around the emitted tokens, pass the emitted features as
``mm_encoder_outputs`` and call the stock ``generate``. No model code is copied or patched.

Position ids: rows 1-3 are each token's M-RoPE position (text and kept tokens keep theirs from
the uncompressed prompt; synthesized tokens carry the method's), row 0 is renumbered
contiguously over the shortened sequence, because the causal mask reads jumps in row 0 as
packed sequences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core import CompressedVideo, Method

VIDEO_TYPE = 2  # mm_token_type_ids: 0 text, 1 image, 2 video


@dataclass
class VideoSpan:
    """Where one video's tokens sit: sample ``row`` and sequence indices ``seq`` (T*H*W of them)."""

    row: int
    seq: torch.Tensor
    grid: tuple[int, int, int]


@dataclass
class CompressionStats:
    visual_tokens_before: int = 0
    visual_tokens_after: int = 0
    compression_seconds: float = 0.0
    vision_seconds: float = 0.0  # the vision tower, all chunks (GPU-synchronized)
    finish_seconds: float = 0.0  # of compression_seconds, the method's work after the last chunk
    # methods acting inside the LLM (AdaReTaKe): visual KV entries stored, mean over layers
    kv_visual_tokens: float | None = None


class QwenVLAdapter:
    """Applies a compression method to a Qwen-VL model's inputs. One subclass per family."""

    family = "base"
    model_type = ""  # config.model_type of the family's checkpoints

    @classmethod
    def require(cls, model_type: str | None, source: str) -> None:
        """Refuse a checkpoint of another family."""
        if model_type != cls.model_type:
            raise ValueError(f"{source} is a {model_type!r} checkpoint but the {cls.family} adapter needs {cls.model_type!r}")

    def __init__(self, model, processor, keep_dropped_timestamps: bool = False, vision_chunk_tokens: int = 16384):
        self.require(getattr(model.config, "model_type", None), "the model")
        if isinstance(vision_chunk_tokens, bool) or not isinstance(vision_chunk_tokens, int) or vision_chunk_tokens < 1:
            raise ValueError(f"vision_chunk_tokens must be a positive int, got {vision_chunk_tokens!r}")
        # merged tokens per vision-tower call (whole slices, at least one): bounds the tower's
        # activations and lets a method's stream drop each chunk once it has taken what it needs
        self.vision_chunk_tokens = vision_chunk_tokens
        self.model = model
        self.processor = processor
        self.video_token_id = model.config.video_token_id
        self.merge = model.config.vision_config.spatial_merge_size
        self.end_of_turn_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")  # Qwen chat templates
        # Qwen3-VL: keep the timestamp text of slices a method emptied (the behaviour before it was removed)
        self.keep_dropped_timestamps = bool(keep_dropped_timestamps)

    # -- family hooks -------------------------------------------------------------------------
    def split_deepstack(self, encoded, video: int) -> list[torch.Tensor]:
        """DeepStack features of one video (flat [N, D] per layer); none outside Qwen3-VL."""
        return []

    def pack_encoder_output(self, output_class, features: list[torch.Tensor], deepstack: list[list[torch.Tensor]]):
        """The ``mm_encoder_outputs["video"]`` object (of ``get_video_features``' class) the stock forward consumes."""
        return output_class(pooler_output=tuple(features))

    def empty_slice_text(self, input_ids: torch.Tensor, positions: torch.Tensor, span: VideoSpan,
                         out: CompressedVideo) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Text that belongs to slices ``out`` left empty, for families that write text per slice
        (Qwen3-VL's timestamps): a removal mask over the row ``[L]`` and each token's position shift
        ``[L]`` (added to a delta that is summed along the row). None: nothing to remove."""
        return None

    # -- the recipe ---------------------------------------------------------------------------
    def pixel_chunks(self, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per video, ``(pixel rows, grid [1, 3])`` of consecutive chunks of whole slices, each at most
        ``vision_chunk_tokens`` merged tokens (one slice at least); the rows are views, not copies."""
        per_video, start = [], 0
        for t, gh, gw in grids.tolist():
            rows_per_slice = gh * gw
            slices = max(1, self.vision_chunk_tokens // (rows_per_slice // self.merge ** 2))
            pieces = []
            for lo in range(0, t, slices):
                n = min(slices, t - lo)
                grid = torch.tensor([[n, gh, gw]], dtype=grids.dtype, device=grids.device)
                pieces.append((pixel_values[start + lo * rows_per_slice: start + (lo + n) * rows_per_slice], grid))
            per_video.append(pieces)
            start += t * rows_per_slice
        if start != pixel_values.shape[0]:
            raise ValueError(f"video_grid_thw describes {start} pixel rows, pixel_values_videos has {pixel_values.shape[0]}")
        return per_video

    @staticmethod
    def _prompt_order(out: CompressedVideo) -> CompressedVideo:
        """``out`` with its tokens in prompt order (by slot, stable); as given, without a copy, when
        they already are (selection methods, and every method that emits whole slices in order)."""
        if out.num_tokens < 2 or bool((out.slots[1:] >= out.slots[:-1]).all()):
            return CompressedVideo(out.features, out.positions, out.slots, list(out.deepstack), None)
        order = torch.sort(out.slots, stable=True).indices
        return CompressedVideo(out.features[order], out.positions[:, order], out.slots[order],
                               [d[order] for d in out.deepstack], None)

    def video_spans(self, input_ids: torch.Tensor, grids: torch.Tensor) -> list[VideoSpan]:
        """Sequence indices of every video's tokens, videos in batch order."""
        rows, cols = (input_ids == self.video_token_id).nonzero(as_tuple=True)
        spans, start = [], 0
        for grid in grids.tolist():
            t, h, w = grid[0], grid[1] // self.merge, grid[2] // self.merge
            stop = start + t * h * w
            if stop > rows.numel() or rows[start] != rows[stop - 1]:
                raise ValueError("video placeholder tokens do not match video_grid_thw")
            spans.append(VideoSpan(int(rows[start]), cols[start:stop], (t, h, w)))
            start = stop
        if start != rows.numel():
            raise ValueError(f"{rows.numel() - start} video placeholder tokens have no video")
        return spans

    def query_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         span: VideoSpan) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the text after the video in its sample, and which of them are the question:
        the tokens before the end of the user's turn (``<|im_end|>``), vision markers excluded."""
        row_ids = input_ids[span.row]
        after = torch.arange(row_ids.numel(), device=row_ids.device) > span.seq[-1]
        text = row_ids[after & attention_mask[span.row].bool() & (row_ids != self.video_token_id)]
        config = self.model.config
        markers = torch.tensor([config.vision_start_token_id, config.vision_end_token_id], device=text.device)
        turn_end = (text == self.end_of_turn_id).long().cumsum(0) > 0
        question = ~turn_end & ~torch.isin(text, markers)
        return self.model.get_input_embeddings()(text), question

    def compress_inputs(self, inputs: dict, method: Method, grad: bool = False) -> tuple[dict, list[CompressionStats]]:
        """Processor outputs -> ``generate`` kwargs with each video compressed by ``method``.

        Returns the kwargs and per-sample stats (visual tokens before/after, seconds spent in the
        method, GPU-synchronized). ``grad``: the method's finishing step runs with autograd on, so
        its trainable parts (Fre-Res's fusion) get gradients through the emitted features; the
        encoder and everything else stay without a graph (training adapters, ``adapter_training``).
        """
        with torch.no_grad():
            return self._compress_inputs(inputs, method, grad)

    def _compress_inputs(self, inputs: dict, method: Method, grad: bool) -> tuple[dict, list[CompressionStats]]:
        input_ids = inputs["input_ids"]
        batch = input_ids.shape[0]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        stats = [CompressionStats() for _ in range(batch)]
        if inputs.get("pixel_values_videos") is None and inputs.get("video_chunks") is None:
            return dict(inputs), stats

        base = self.model.model
        grids = inputs["video_grid_thw"]
        rope_kwargs = {k: inputs[k] for k in ("image_grid_thw", "second_per_grid_ts") if inputs.get(k) is not None}
        mrope, _ = base.get_rope_index(
            input_ids, inputs["mm_token_type_ids"], video_grid_thw=grids, attention_mask=attention_mask, **rope_kwargs
        )
        spans = self.video_spans(input_ids, grids)
        chunks = inputs.get("video_chunks")
        if chunks is None:
            chunks = self.pixel_chunks(inputs["pixel_values_videos"], grids)
        if len(chunks) != len(spans):
            raise ValueError(f"{len(chunks)} video chunk streams for {len(spans)} videos")

        outputs: list[CompressedVideo] = []
        output_class, dtype = None, None
        for index, span in enumerate(spans):
            t, h, w = span.grid
            stats[span.row].visual_tokens_before += t * h * w
            stream, method_seconds = method.stream(span.grid), 0.0
            for pixels, grid in chunks[index]:
                started = _clock(pixels.device)
                encoded = base.get_video_features(pixels, grid, return_dict=True)
                features = encoded.pooler_output[0]
                slices = int(grid[0, 0])
                deepstack = [layer.reshape(slices, h, w, -1) for layer in self.split_deepstack(encoded, 0)]
                vision_done = _clock(features.device)
                stream.feed(features.reshape(slices, h, w, -1), deepstack)
                output_class, dtype = type(encoded), features.dtype  # nothing else of the chunk is kept here
                del encoded, features, deepstack
                finished = _clock(pixels.device)
                stats[span.row].vision_seconds += vision_done - started
                method_seconds += finished - vision_done
            query, question = self.query_embeddings(input_ids, attention_mask, span)
            started = _clock(input_ids.device)
            with torch.set_grad_enabled(grad):
                out = self._prompt_order(stream.finish(mrope[:, span.row, span.seq].reshape(3, t, h, w), query.to(dtype), question))
            outputs.append(out)
            finished = _clock(input_ids.device) - started
            stats[span.row].compression_seconds += method_seconds + finished
            stats[span.row].finish_seconds += finished
            stats[span.row].visual_tokens_after += out.num_tokens

        kwargs = self._rebuild(inputs, attention_mask, mrope, spans, outputs)
        video_output = self.pack_encoder_output(
            output_class, [o.features for o in outputs], [[o.deepstack[i] for o in outputs] for i in range(len(outputs[0].deepstack))]
        )
        kwargs["mm_encoder_outputs"] = {"video": video_output}
        if inputs.get("pixel_values") is not None:
            kwargs["mm_encoder_outputs"]["image"] = base.get_image_features(
                inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True
            )
        return kwargs, stats

    def generate(self, kwargs: dict, settings: dict, method: Method, stats: list[CompressionStats] | None = None):
        """Generate from ``compress_inputs``' kwargs; returns ``generate``'s sequences ``[B, L + new]``.

        A method that also acts inside the LLM (decode-time KV pruning, chunked prefill with KV
        compression) has an LLM stage in ``models.stages`` under its name; the stage runs the
        stock model with scoped hooks and may fill ``stats``. Other methods call stock ``generate``.
        """
        from .stages import stage_for

        stage = stage_for(method.name)
        if stage is None:
            return self.model.generate(**kwargs, **settings)
        return stage(self, method, kwargs, settings, stats if stats is not None else [CompressionStats() for _ in kwargs["input_ids"]])

    def _rebuild(self, inputs, attention_mask, mrope, spans, outputs) -> dict:
        """Shortened, left-padded ``input_ids``/mask/types and ``[4, B, L]`` position ids."""
        input_ids, types = inputs["input_ids"], inputs["mm_token_type_ids"]
        device = input_ids.device
        rows = []
        for b in range(input_ids.shape[0]):
            valid = attention_mask[b].bool() & (input_ids[b] != self.video_token_id)
            # text of emptied slices goes, and every later position moves back by what it spanned, so
            # the prompt reads as one sampled at the kept slices (Qwen3-VL's timestamps)
            shift = torch.zeros_like(input_ids[b], dtype=mrope.dtype)
            row_spans = [(span, out) for span, out in zip(spans, outputs) if span.row == b]
            if not self.keep_dropped_timestamps:
                for span, out in row_spans:
                    found = self.empty_slice_text(input_ids[b], mrope[0, b], span, out)
                    if found is not None:
                        valid &= ~found[0]
                        shift += found[1]
            shift = shift.cumsum(0)
            text_seq = valid.nonzero(as_tuple=True)[0]
            keys = [text_seq]
            ids = [input_ids[b, text_seq]]
            kinds = [types[b, text_seq]]
            pos = [mrope[:, b, text_seq] - shift[text_seq]]
            for span, out in row_spans:
                seq = span.seq[out.slots]
                keys.append(seq)
                ids.append(torch.full((out.num_tokens,), self.video_token_id, dtype=input_ids.dtype, device=device))
                kinds.append(torch.full((out.num_tokens,), VIDEO_TYPE, dtype=types.dtype, device=device))
                pos.append(out.positions.to(mrope.dtype) - shift[seq])
            order = torch.sort(torch.cat(keys), stable=True).indices
            rows.append((torch.cat(ids)[order], torch.cat(kinds)[order], torch.cat(pos, dim=1)[:, order]))

        length = max(r[0].numel() for r in rows)
        batch = len(rows)
        pad_id = self.processor.tokenizer.pad_token_id
        new_ids = torch.full((batch, length), pad_id, dtype=input_ids.dtype, device=device)
        new_mask = torch.zeros((batch, length), dtype=attention_mask.dtype, device=device)
        new_types = torch.zeros((batch, length), dtype=types.dtype, device=device)
        new_pos = torch.ones((4, batch, length), dtype=mrope.dtype, device=device)
        for b, (ids, kinds, pos) in enumerate(rows):
            n = ids.numel()
            new_ids[b, length - n:] = ids
            new_mask[b, length - n:] = 1
            new_types[b, length - n:] = kinds
            new_pos[1:, b, length - n:] = pos
            new_pos[0, b, length - n:] = torch.arange(n, device=device)
        return {"input_ids": new_ids, "attention_mask": new_mask, "mm_token_type_ids": new_types, "position_ids": new_pos}


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
