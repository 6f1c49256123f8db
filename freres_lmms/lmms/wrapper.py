"""lmms-eval wrapper around the Qwen-VL families: load, decode video, compress, generate.

One class per family (``FreresQwen2VL``, ...); the compression method comes from model_args
(``method=uniform,budget=0.5,...``: every key the wrapper does not own is a knob of the method).
The wrapper owns ``generate_until`` so that frame sampling is the same in every family and every
sample is handled on its own: a sample that cannot be used (missing or corrupt video, no video,
a budget the method refuses) gets an empty answer and an ``error`` in its record, the others go
on, and a batch that fails is retried one sample at a time so nothing computed is lost.

Each sample's record (``token_counts`` in lmms-eval's samples file) carries the visual tokens
before and after compression, the seconds spent in the method and any error; their means over
the run are in ``results["throughput"]`` (``avg_visual_tokens_after``, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger
from PIL import Image
from tqdm import tqdm
from transformers import AutoConfig, AutoProcessor

from ..core import Method, build_method
from ..data.checkpoints import ensure_checkpoint, resolve_pretrained
from ..data.video import VideoLoadError, load_video
from ..models import ADAPTERS

REPO_ROOT = Path(__file__).resolve().parents[2]
# paired: Qwen's native video mode, two frames per latent slice; per_frame: each sampled frame its
# own slice (the Fre-Res paper's token accounting, twice the encoder cost)
FRAME_ENCODINGS = ("paired", "per_frame")


def prompt_text(processor, context: str, videos: int, images: int = 0) -> str:
    """The chat prompt a sample is sent with: its videos, then images, then the task's text."""
    content = [{"type": "video"} for _ in range(videos)] + [{"type": "image"} for _ in range(images)]
    content.append({"type": "text", "text": context.replace("<image>", "").strip()})
    return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)


class SampleError(ValueError):
    """A sample cannot be answered; the message names the problem."""


@dataclass
class CompressionRecord(TokenCounts):
    """Per-sample record saved by lmms-eval with the sample (``token_counts``)."""

    visual_tokens_before: int | None = None
    visual_tokens_after: int | None = None
    compression_seconds: float | None = None
    generation_seconds: float | None = None
    kv_visual_tokens: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        record = super().to_dict()
        record.update({f.name: getattr(self, f.name) for f in fields(self)[len(fields(TokenCounts)):] if getattr(self, f.name) is not None})
        return record


@dataclass
class PreparedSample:
    index: int  # position in the request list
    text: str
    videos: list
    metadata: list[dict]
    images: list
    gen_kwargs: dict


class FreresQwenVL(lmms):
    """Base of the per-family wrappers. Subclasses set ``family`` (and ids set ``default_method``)."""

    is_simple = True
    family = ""
    default_method = "full"
    default_method_fixed = False  # True for {method}_{family} ids: model_args cannot switch the method

    def __init__(
        self,
        pretrained: str | None = None,
        method: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        batch_size: int | str = 1,
        max_num_frames: int = 16,
        fps: float | None = None,
        frame_encoding: str = "paired",
        max_new_tokens: int = 128,
        allow_text_only: bool = False,
        keep_dropped_timestamps: bool = False,
        max_batch_size: int | None = None,  # passed by lmms-eval's CLI; batches are batch_size
        **method_knobs,
    ) -> None:
        super().__init__()
        if method is not None and type(self).default_method_fixed and method != self.default_method:
            raise ValueError(
                f"model id {self.default_method}_{self.family} fixes method={self.default_method}; "
                f"use --model {method}_{self.family} instead of method={method}"
            )
        if not isinstance(keep_dropped_timestamps, bool):
            raise ValueError(f"keep_dropped_timestamps must be true or false, got {keep_dropped_timestamps!r}")
        self.method: Method = build_method(method or self.default_method, **method_knobs)
        if frame_encoding not in FRAME_ENCODINGS:
            raise ValueError(f"frame_encoding must be one of {', '.join(FRAME_ENCODINGS)}, got {frame_encoding!r}")
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # testbed-<family> names a trained testbed shipped in the package; default: the random tiny one
        self.pretrained = resolve_pretrained(str(pretrained)) if pretrained else str(ensure_checkpoint(self.family, REPO_ROOT / "checkpoints"))
        adapter_cls = ADAPTERS[self.family]
        # before loading weights: a checkpoint of another family would fail there with a size mismatch
        config = AutoConfig.from_pretrained(self.pretrained)
        adapter_cls.require(config.model_type, f"pretrained={self.pretrained}")
        torch_dtype = {"auto": torch.bfloat16 if self._device.type == "cuda" else torch.float32,
                       "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
        model = adapter_cls.model_class.from_pretrained(
            self.pretrained, config=config, dtype=torch_dtype, attn_implementation=attn_implementation
        ).to(self._device).eval()
        processor = AutoProcessor.from_pretrained(self.pretrained)
        processor.tokenizer.padding_side = "left"
        self.adapter = adapter_cls(model, processor, keep_dropped_timestamps=keep_dropped_timestamps)
        self.processor = processor
        self.batch_size_per_gpu = int(batch_size)
        self.max_num_frames = int(max_num_frames)
        self.fps = fps
        self.frame_encoding = frame_encoding
        self.max_new_tokens = int(max_new_tokens)
        self.allow_text_only = bool(allow_text_only)

    @property
    def model(self):
        return self.adapter.model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self):
        return self.batch_size_per_gpu

    # -- lmms API -------------------------------------------------------------------------------
    def loglikelihood(self, requests):
        raise NotImplementedError("loglikelihood is not supported by the freres-lmms wrappers")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("multi-round generation is not supported by the freres-lmms wrappers")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        ready: list[PreparedSample] = []
        for index, request in enumerate(requests):
            try:
                ready.append(self._prepare(index, request))
            except (SampleError, VideoLoadError) as err:
                results[index] = self._fail(request, err)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="freres-lmms")
        progress.update(len(requests) - len(ready))
        for batch in self._batches(ready):
            for sample, result in zip(batch, self._run_isolated(batch, requests)):
                results[sample.index] = result
            progress.update(len(batch))
        progress.close()
        for result in results:
            record = result.token_counts
            seconds = record.generation_seconds or 0.0
            tokens = record.output_tokens or 0
            log_metrics(seconds, tokens, tokens / seconds if seconds else 0.0, additional_metrics={
                "visual_tokens_before": record.visual_tokens_before or 0,
                "visual_tokens_after": record.visual_tokens_after or 0,
                "compression_seconds": record.compression_seconds or 0.0,
                "sample_errors": int(record.error is not None),
            })
        return results

    # -- steps ------------------------------------------------------------------------------------
    def _where(self, request: Instance) -> str:
        _, _, _, doc_id, task, split = request.args
        return f"[{task}/{split} doc {doc_id}]"

    def _fail(self, request: Instance, err: Exception) -> GenerationResult:
        message = f"{type(err).__name__}: {err}"
        logger.error(f"{self._where(request)} {message}")
        return GenerationResult(text="", token_counts=CompressionRecord(error=message))

    def _prepare(self, index: int, request: Instance) -> PreparedSample:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        visuals = [v for v in (visuals or []) if v is not None]
        videos, metadata, images = [], [], []
        for visual in visuals:
            if isinstance(visual, Image.Image):
                images.append(visual.convert("RGB"))
            elif isinstance(visual, (str, Path)):
                video = load_video(str(visual), self.max_num_frames, self.fps)
                if self.frame_encoding == "per_frame":
                    video = video.per_frame()
                videos.append(video.frames)
                metadata.append(video.metadata())
            else:
                raise SampleError(f"unsupported visual of type {type(visual).__name__}")
        if not videos and not images and not self.allow_text_only:
            raise SampleError("sample has no video or image (pass allow_text_only=true to answer it from text alone)")
        text = prompt_text(self.processor, context, len(videos), len(images))
        return PreparedSample(index, text, videos, metadata, images, dict(gen_kwargs or {}))

    def _batches(self, samples: list[PreparedSample]):
        """Consecutive runs of at most batch_size samples that share generation settings."""
        batch: list[PreparedSample] = []
        for sample in samples:
            if batch and (len(batch) == self.batch_size or sample.gen_kwargs != batch[0].gen_kwargs):
                yield batch
                batch = []
            batch.append(sample)
        if batch:
            yield batch

    def _run_isolated(self, batch: list[PreparedSample], requests: list[Instance]) -> list[GenerationResult]:
        """Run a batch; if it fails, run its samples one by one so only the bad one is lost."""
        try:
            return self._run(batch)
        except Exception as err:
            if len(batch) == 1:
                return [self._fail(requests[batch[0].index], err)]
            logger.warning(f"batch of {len(batch)} failed ({err}); retrying its samples one by one")
            return [result for sample in batch for result in self._run_isolated([sample], requests)]

    @torch.no_grad()
    def _run(self, batch: list[PreparedSample]) -> list[GenerationResult]:
        started = time.perf_counter()
        videos = [v for s in batch for v in s.videos]
        images = [i for s in batch for i in s.images]
        inputs = self.processor(
            text=[s.text for s in batch],
            videos=videos or None,
            video_metadata=[m for s in batch for m in s.metadata] or None,
            images=images or None,
            padding=True,
            return_tensors="pt",
        ).to(self._device)
        kwargs, stats = self.adapter.compress_inputs(dict(inputs), self.method)
        gen = dict(batch[0].gen_kwargs)
        until = gen.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        temperature = float(gen.pop("temperature", 0.0) or 0.0)
        settings = {
            "max_new_tokens": int(gen.pop("max_new_tokens", self.max_new_tokens)),
            "do_sample": bool(gen.pop("do_sample", False)) or temperature > 0,
            "num_beams": int(gen.pop("num_beams", 1) or 1),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if settings["do_sample"]:
            settings.update(temperature=temperature, top_p=gen.pop("top_p", None) or 1.0)
        output = self.adapter.generate(kwargs, settings, self.method, stats)
        new_tokens = output[:, kwargs["input_ids"].shape[1]:]
        share = (time.perf_counter() - started) / len(batch)  # batch wall time, split evenly
        results = []
        for row, stat in zip(range(len(batch)), stats):
            tokens = new_tokens[row]
            length = int((tokens != settings["pad_token_id"]).sum())
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            record = CompressionRecord(
                input_tokens=int(kwargs["attention_mask"][row].sum()),
                output_tokens=length,
                visual_tokens_before=stat.visual_tokens_before,
                visual_tokens_after=stat.visual_tokens_after,
                compression_seconds=stat.compression_seconds,
                generation_seconds=share,
                kv_visual_tokens=stat.kv_visual_tokens,
            )
            results.append(GenerationResult(text=text.strip(), token_counts=record))
        return results
