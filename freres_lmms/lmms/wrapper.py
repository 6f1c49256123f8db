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

import importlib.metadata as md
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
# records a sample's throughput metrics for the run's summary without log_metrics' INFO line per
# sample (350 lines a run); a private name of the pinned lmms-eval 0.7.3
from lmms_eval.models.model_utils.gen_metrics import _record_metrics as record_metrics
from loguru import logger
from PIL import Image
from tqdm import tqdm
from transformers import AutoConfig, AutoProcessor

from ..core import Method, build_method
from ..data.checkpoints import ensure_checkpoint, resolve_pretrained
from ..data.video import VideoLoadError, load_video
from ..models import ADAPTERS
from ..models.streaming import FrameSource, streamed_inputs
from .settings import (
    ATTENTION,
    DTYPES,
    FRAME_ENCODINGS,
    SettingsError,
    check_device,
    check_fps,
    check_frame_size,
    check_max_memory,
    check_pretrained,
    choice,
    flag,
    positive_int,
    stream_frames_arg,
)
from .store import SampleStore, store_path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    failed_samples = 0  # samples answered with an error in this process, over every wrapper instance

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
        resume: bool | str = False,
        device_map: str | None = None,
        max_memory: str | None = None,
        frame_size: int | str | None = None,
        stream_frames: int = 64,
        max_batch_size: int | None = None,  # passed by lmms-eval's CLI; batches are batch_size
        **method_knobs,
    ) -> None:
        super().__init__()
        checked = self.check_args(pretrained=pretrained, method=method, device=device, dtype=dtype,
                                  attn_implementation=attn_implementation, batch_size=batch_size,
                                  max_num_frames=max_num_frames, fps=fps, frame_encoding=frame_encoding,
                                  max_new_tokens=max_new_tokens, allow_text_only=allow_text_only,
                                  keep_dropped_timestamps=keep_dropped_timestamps, resume=resume,
                                  device_map=device_map, max_memory=max_memory, frame_size=frame_size,
                                  stream_frames=stream_frames, **method_knobs)
        self.method: Method = checked["method"]
        self._device = checked["device"]
        self.pretrained = checked["pretrained"]
        self.batch_size_per_gpu = checked["batch_size"]
        self.max_num_frames = checked["max_num_frames"]
        self.fps = checked["fps"]
        self.frame_encoding = checked["frame_encoding"]
        self.max_new_tokens = checked["max_new_tokens"]
        self.allow_text_only = checked["allow_text_only"]
        self.frame_size, self.stream_frames = checked["frame_size"], checked["stream_frames"]
        adapter_cls = ADAPTERS[self.family]
        placement = {"device_map": checked["device_map"], "max_memory": checked["max_memory"]} if checked["device_map"] else {}
        model = adapter_cls.model_class.from_pretrained(
            self.pretrained, config=checked["config"], dtype=checked["dtype"], attn_implementation=checked["attn_implementation"],
            **placement)
        model = (model if placement else model.to(self._device)).eval()
        if placement:  # inputs go where the first layers are
            self._device = model.device
        state = PartialState(cpu=self._device.type == "cpu")  # several CPU processes: gloo
        if state.num_processes > 1:  # accelerate launch / torchrun: lmms-eval shards the documents by rank
            self.accelerator = Accelerator(cpu=self._device.type == "cpu")
            self._rank, self._world_size = state.process_index, state.num_processes
        processor = AutoProcessor.from_pretrained(self.pretrained)
        processor.tokenizer.padding_side = "left"
        self.adapter = adapter_cls(model, processor, keep_dropped_timestamps=checked["keep_dropped_timestamps"])
        self.processor = processor
        # everything that decides an answer keys the resume store (a changed knob is a new key)
        self.store = None if checked["resume"] is None else SampleStore(checked["resume"], {
            "model": f"{type(self).__name__}/{self.method!r}", "pretrained": self.pretrained,
            "version": md.version("freres-lmms"), **{k: checked[k] for k in (
                "dtype", "attn_implementation", "max_num_frames", "fps", "frame_encoding", "max_new_tokens",
                "keep_dropped_timestamps", "frame_size")}})

    @classmethod
    def check_args(cls, pretrained=None, method=None, device=None, dtype="auto", attn_implementation="sdpa",
                   batch_size=1, max_num_frames=16, fps=None, frame_encoding="paired", max_new_tokens=128,
                   allow_text_only=False, keep_dropped_timestamps=False, resume=False, device_map=None, max_memory=None,
                   frame_size=None, stream_frames=64, max_batch_size=None, **method_knobs) -> dict:
        """Every owned argument and the method's knobs, checked and normalised before anything is
        loaded (the checkpoint's config is read, its weights are not): a bad one raises here."""
        if method is not None and cls.default_method_fixed and method != cls.default_method:
            raise SettingsError(
                f"model id {cls.default_method}_{cls.family} fixes method={cls.default_method}; "
                f"use --model {method}_{cls.family} instead of method={method}"
            )
        out = {
            "method": build_method(method or cls.default_method, **method_knobs),
            "device": check_device(device),
            "attn_implementation": choice("attn_implementation", attn_implementation, ATTENTION),
            "batch_size": positive_int("batch_size", batch_size),
            "max_num_frames": positive_int("max_num_frames", max_num_frames),
            "fps": check_fps(fps),
            "frame_encoding": choice("frame_encoding", frame_encoding, FRAME_ENCODINGS),
            "max_new_tokens": positive_int("max_new_tokens", max_new_tokens),
            "allow_text_only": flag("allow_text_only", allow_text_only),
            "keep_dropped_timestamps": flag("keep_dropped_timestamps", keep_dropped_timestamps),
            "resume": store_path(resume),
            "device_map": None if device_map is None else choice("device_map", device_map, ("auto", "balanced", "sequential")),
            "max_memory": check_max_memory(max_memory),
        }
        if out["max_memory"] is not None and out["device_map"] is None:
            raise SettingsError("max_memory needs device_map (e.g. device_map=auto,max_memory=70GiB)")
        out["dtype"] = DTYPES[choice("dtype", dtype, tuple(DTYPES))] or (
            torch.bfloat16 if out["device"].type == "cuda" else torch.float32)
        # testbed-<family> names a trained testbed shipped in the package; default: the random tiny one
        if pretrained:
            out["pretrained"] = check_pretrained(resolve_pretrained(str(pretrained)))
        else:
            out["pretrained"] = str(ensure_checkpoint(cls.family, REPO_ROOT / "checkpoints"))
        try:
            out["config"] = AutoConfig.from_pretrained(out["pretrained"])
        except OSError as err:
            raise SettingsError(f"pretrained={out['pretrained']}: cannot read its config (not downloaded, or "
                                f"offline?): {str(err).splitlines()[0]}") from None
        # a checkpoint of another family would fail while loading with a size mismatch
        ADAPTERS[cls.family].require(out["config"].model_type, f"pretrained={out['pretrained']}")
        vision = out["config"].vision_config
        out["frame_size"] = check_frame_size(frame_size, vision.patch_size * vision.spatial_merge_size)
        out["stream_frames"] = stream_frames_arg(stream_frames, vision.temporal_patch_size)
        return out

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """lmms-eval's constructor from ``--model_args``; its CLI also passes ``batch_size`` (default
        1) and ``device``: a key given in ``--model_args`` wins instead of clashing."""
        from lmms_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

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
        """Answer ``requests`` batch by batch: each batch's videos are decoded when it is prepared,
        one batch ahead of the one running (a bounded prefetch on a thread), so memory does not
        grow with the number of samples."""
        results: list[GenerationResult | None] = [None] * len(requests)
        if self.store is not None:  # answered by an earlier run of the same configuration
            for index, request in enumerate(requests):
                stored = self.store.get(request.args)
                if stored is not None:
                    results[index] = GenerationResult(text=stored[0], token_counts=CompressionRecord(**stored[1]))
            if any(r is not None for r in results):
                logger.info(f"resume: {sum(r is not None for r in results)} of {len(requests)} samples from {self.store.path}")
        todo = [i for i, r in enumerate(results) if r is None]
        progress = tqdm(total=len(requests), initial=len(requests) - len(todo), disable=self.rank != 0, desc="freres-lmms")
        groups = list(self._request_batches(requests, todo))
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            pending = prefetch.submit(self._prepare_batch, groups[0], requests) if groups else None
            for i in range(len(groups)):
                ready, failed = pending.result()
                pending = prefetch.submit(self._prepare_batch, groups[i + 1], requests) if i + 1 < len(groups) else None
                for index, result in failed:
                    results[index] = result
                if ready:
                    answered = list(zip(ready, self._run_isolated(ready, requests)))
                    for sample, result in answered:
                        results[sample.index] = result
                    if self.store is not None:  # committed now: a crash after this loses nothing of it
                        self.store.put([(requests[sample.index].args, result.text, result.token_counts.to_dict())
                                        for sample, result in answered if result.token_counts.error is None])
                progress.update(len(groups[i]))
        progress.close()
        for result in results:
            record = result.token_counts
            if record.error is not None:  # counted, but kept out of the means of answered samples
                record_metrics(0.0, 0, 0.0, additional_metrics={"sample_errors": 1})
                continue
            seconds = record.generation_seconds or 0.0
            tokens = record.output_tokens or 0
            record_metrics(seconds, tokens, tokens / seconds if seconds else 0.0, additional_metrics={
                "visual_tokens_before": record.visual_tokens_before or 0,
                "visual_tokens_after": record.visual_tokens_after or 0,
                "compression_seconds": record.compression_seconds or 0.0,
                "sample_errors": 0,
            })
        return results

    def _request_batches(self, requests: list[Instance], indices: list[int]):
        """Lists of consecutive ``indices``, at most batch_size, whose requests share generation settings."""
        batch: list[int] = []
        for index in indices:
            request = requests[index]
            if batch and (len(batch) == self.batch_size or request.args[1] != requests[batch[0]].args[1]):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def _prepare_batch(self, indices: list[int], requests: list[Instance]):
        """(prepared samples, [(index, failed result)]) of one batch: its videos decoded now."""
        ready, failed = [], []
        for index in indices:
            try:
                ready.append(self._prepare(index, requests[index]))
            except (SampleError, VideoLoadError) as err:
                failed.append((index, self._fail(requests[index], err)))
        return ready, failed

    # -- steps ------------------------------------------------------------------------------------
    def _where(self, request: Instance) -> str:
        _, _, _, doc_id, task, split = request.args
        return f"[{task}/{split} doc {doc_id}]"

    def _fail(self, request: Instance, err: Exception) -> GenerationResult:
        message = f"{type(err).__name__}: {err}"
        logger.error(f"{self._where(request)} {message}")
        FreresQwenVL.failed_samples += 1  # read by `python -m freres_lmms eval` for its exit status
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
                video = load_video(str(visual), self.max_num_frames, self.fps, self.frame_size)
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

    def _inputs(self, batch: list[PreparedSample]) -> dict:
        """``compress_inputs``' inputs of a batch. With ``frame_size`` (frames decoded at the model's
        input size) and one video per sample, the pixel values are made ``stream_frames`` frames at a
        time as the vision tower takes them (``models.streaming``); else the processor's one call."""
        if self.frame_size and self.stream_frames and all(len(s.videos) == 1 and not s.images for s in batch):
            sources = [FrameSource.from_frames(s.videos[0], s.metadata[0]["fps"], s.metadata[0]["frames_indices"],
                                               s.metadata[0]["total_num_frames"]) for s in batch]
            return streamed_inputs(self.processor, [s.text for s in batch], sources, self.stream_frames, self._device)
        videos = [v for s in batch for v in s.videos]
        images = [i for s in batch for i in s.images]
        resize = {"do_resize": False} if self.frame_size and videos else {}  # decoded at frame_size already
        return dict(self.processor(
            text=[s.text for s in batch],
            videos=videos or None,
            video_metadata=[m for s in batch for m in s.metadata] or None,
            images=images or None,
            padding=True,
            return_tensors="pt",
            **resize,
        ).to(self._device))

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
        kwargs, stats = self.adapter.compress_inputs(self._inputs(batch), self.method)
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
