"""Training Fre-Res's fusion module (paper appendix E) on video QA, with the backbone frozen.

The trainable parts are ``core.freres_fusion.FreResFusion`` (RawAdapter, token adapters, the
absorber's projections, type embeddings, gates). A step runs the stock pipeline of evaluation --
the frozen encoder, Fre-Res at the trained budget, the frozen LLM on the compressed inputs --
with autograd on only where the fusion acts (``compress_inputs(grad=True)``). The loss over each
sample's answer (its letter and end of turn) is the language-model loss, plus ``distill`` times
KL(teacher || student) of the option letters' logits at temperature ``temperature``, the teacher
being the same model on all the clip's tokens (``full``). Teacher logits are computed once per
dataset and cached beside the output. Prompts carry every option (paper appendix F.4): the task's
own prompt (``data.synthetic.prompt_text``).

Several processes (``torchrun``/``accelerate launch``; gloo on CPU) split each global batch and
sum their gradients, so N processes give one process's result for the same global batch.
Entry point: ``scripts/train_adapters.py`` (Hydra, ``conf/train_adapters.yaml``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .core import build_method
from .core.freres_fusion import FreResFusion
from .data.synthetic import LETTERS, prompt_text
from .data.video import load_video
from .lmms.wrapper import prompt_text as chat_prompt

TEACHER_FILE = "teacher_logits.pt"
RECIPE_FILE = "training.json"


@dataclass(frozen=True)
class QASample:
    id: str
    video: str  # absolute path
    question: str
    options: tuple[str, ...]
    answer: str  # the letter


def read_jsonl(path: str | Path) -> list[QASample]:
    """Samples of a JSONL file (``video`` relative to the file's folder or absolute, ``question``,
    ``options``, ``answer`` as a letter or an option's text); a bad line is named with its problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data: no file {path}")
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err.msg})") from None
        missing = [k for k in ("video", "question", "options", "answer") if k not in doc]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        options = tuple(str(o) for o in doc["options"])
        if not 2 <= len(options) <= len(LETTERS):
            raise ValueError(f"{where}: {len(options)} options (2 to {len(LETTERS)})")
        answer = str(doc["answer"])
        if answer not in LETTERS[:len(options)]:
            if answer not in options:
                raise ValueError(f"{where}: answer {answer!r} is neither an option letter nor an option")
            answer = LETTERS[options.index(answer)]
        video = Path(doc["video"])
        video = video if video.is_absolute() else path.parent / video
        samples.append(QASample(str(doc.get("id", number)), str(video), str(doc["question"]), options, answer))
    if not samples:
        raise ValueError(f"training data: {path} has no samples")
    return samples


@dataclass
class AdapterRecipe:
    """What an adapter was trained for and how (written beside it as ``training.json``)."""

    pretrained: str
    method: dict  # Fre-Res knobs, the budget among them
    max_num_frames: int
    distill: float
    temperature: float
    lr: float
    steps: int
    batch_size: int
    seed: int


class AdapterTrainer:
    """One training run: ``teacher()`` once, then ``step()``; ``save(dir)`` writes the adapter."""

    def __init__(self, adapter, recipe: AdapterRecipe, samples: list[QASample], init_adapter: str | None = None,
                 micro_batch: int = 4, rank: int = 0, world: int = 1) -> None:
        self.adapter, self.recipe, self.samples = adapter, recipe, samples
        self.model, self.processor = adapter.model, adapter.processor
        self.device = self.model.device
        self.model.requires_grad_(False).eval()
        self.method = build_method("freres", **recipe.method)
        dim = self.model.config.get_text_config().hidden_size
        fusion = FreResFusion.from_pretrained(init_adapter) if init_adapter else FreResFusion(dim)
        fusion.check(dim)
        self.fusion = fusion.float().to(self.device).train().requires_grad_(True)
        self.method.fusion = self.fusion
        self.full = build_method("full")
        self.micro_batch, self.rank, self.world = micro_batch, rank, world
        tokenizer = self.processor.tokenizer
        self.letter_ids = torch.tensor([tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS], device=self.device)
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.optimizer = torch.optim.AdamW(self.fusion.parameters(), lr=recipe.lr, weight_decay=0.0)
        self.order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(recipe.seed))
        self.teacher_logits: torch.Tensor | None = None
        self.steps_done = 0
        self.bad: dict[int, str] = {}  # samples that cannot be used (unreadable video): skipped, named once
        self.warn = print

    # -- inputs ---------------------------------------------------------------------------------
    def _inputs(self, indices: list[int]) -> tuple[dict | None, list[int]]:
        """Processor inputs of samples ``indices`` (the evaluation prompt, then the answer letter and end
        of turn) and the indices they hold: a sample whose video cannot be read is named once and skipped."""
        texts, videos, metadata, kept = [], [], [], []
        for i in indices:
            sample = self.samples[i]
            if i in self.bad:
                continue
            try:
                video = load_video(sample.video, self.recipe.max_num_frames)
            except Exception as err:
                self.bad[i] = f"training sample {sample.id} ({sample.video}): {err}"
                self.warn(f"skipped: {self.bad[i]}")
                continue
            prompt = chat_prompt(self.processor, prompt_text(sample.question, list(sample.options)), 1)
            texts.append(f"{prompt}{sample.answer}<|im_end|>")
            videos.append(video.frames)
            metadata.append(video.metadata())
            kept.append(i)
        if not kept:
            return None, kept
        return dict(self.processor(text=texts, videos=videos, video_metadata=metadata, padding=True,
                                   return_tensors="pt").to(self.device)), kept

    def _answer_logits(self, indices: list[int], method, grad: bool) -> tuple[torch.Tensor | None, list[int]]:
        """Logits [n, 2, V] where the answer letter and the end of turn are predicted (rows end with them:
        the rebuilt inputs are left-padded), for the usable samples of ``indices`` (returned too)."""
        inputs, kept = self._inputs(indices)
        if inputs is None:
            return None, kept
        kwargs, _ = self.adapter.compress_inputs(inputs, method, grad=grad)
        with torch.set_grad_enabled(grad):
            logits = self.model(**kwargs, logits_to_keep=3).logits  # positions -3, -2 predict the last two tokens
        return logits[:, :2].float(), kept

    # -- teacher ----------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher(self, cache_dir: str | Path | None = None) -> torch.Tensor:
        """Option-letter logits of the full-token model for every sample, [N, 4]; cached in ``cache_dir``."""
        ids = [s.id for s in self.samples]
        cache = Path(cache_dir) / TEACHER_FILE if cache_dir else None
        if cache is not None and cache.is_file():
            stored = torch.load(cache, map_location="cpu")
            if stored["ids"] == ids and stored["pretrained"] == self.recipe.pretrained \
                    and stored["max_num_frames"] == self.recipe.max_num_frames:
                self.teacher_logits = stored["logits"].to(self.device)
                return self.teacher_logits
        # each process its share of the micro-batches; zeros elsewhere, so one all-reduce sum is exact
        # (a sample that cannot be used is NaN on its process, and NaN after the sum)
        self.teacher_logits = torch.zeros((len(ids), len(LETTERS)), device=self.device)
        step = self.micro_batch * self.world
        for lo in range(self.rank * self.micro_batch, len(ids), step):
            chunk = list(range(lo, min(lo + self.micro_batch, len(ids))))
            logits, kept = self._answer_logits(chunk, self.full, grad=False)
            self.teacher_logits[chunk] = float("nan")
            if kept:
                self.teacher_logits[kept] = logits[:, 0, self.letter_ids]
        if self.world > 1:
            torch.distributed.all_reduce(self.teacher_logits)
        if cache is not None and self.rank == 0:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"ids": ids, "pretrained": self.recipe.pretrained, "max_num_frames": self.recipe.max_num_frames,
                        "logits": self.teacher_logits.cpu()}, cache)
        return self.teacher_logits

    # -- training -------------------------------------------------------------------------------
    def global_batch(self, step: int) -> list[int]:
        """Sample indices of step ``step``: consecutive slices of one seeded order, every process the same."""
        size, n = self.recipe.batch_size, len(self.samples)
        start = step * size
        return [int(self.order[(start + j) % n]) for j in range(size)]

    def loss(self, indices: list[int]) -> tuple[torch.Tensor | None, dict]:
        """Summed loss of the usable samples of ``indices`` (LM over the answer + distill * KL), and its parts (sums)."""
        logits, indices = self._answer_logits(indices, self.method, grad=True)
        if logits is None:
            return None, {"lm": 0.0, "kl": 0.0, "correct": 0, "used": 0}
        answer = torch.tensor([LETTERS.index(self.samples[i].answer) for i in indices], device=self.device)
        targets = torch.stack([self.letter_ids[answer], torch.full_like(answer, self.end_id)], 1)
        lm = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(-1, 2).mean(1)
        total, parts = lm.sum(), {"lm": float(lm.detach().sum()), "kl": 0.0,
                                  "correct": int((logits[:, 0, self.letter_ids].argmax(1) == answer).sum()),
                                  "used": len(indices)}
        if self.recipe.distill > 0:
            t = self.recipe.temperature
            student = F.log_softmax(logits[:, 0, self.letter_ids] / t, dim=-1)
            teacher = F.log_softmax(self.teacher_logits[indices] / t, dim=-1)
            kl = (teacher.exp() * (teacher - student)).sum(-1) * t * t
            total = total + self.recipe.distill * kl.sum()
            parts["kl"] = float(kl.detach().sum())
        return total, parts

    def step(self, lr: float | None = None) -> dict:
        """One optimizer step on the global batch (this process's share, gradients summed over processes)."""
        if self.recipe.distill > 0 and self.teacher_logits is None:
            raise RuntimeError("distillation needs teacher() first")
        batch = self.global_batch(self.steps_done)
        mine = batch[self.rank::self.world]
        sums = {"lm": 0.0, "kl": 0.0, "correct": 0, "used": 0}
        for p in self.fusion.parameters():  # zeros, not None: a branch this batch does not use still all-reduces
            p.grad = torch.zeros_like(p)
        for lo in range(0, len(mine), self.micro_batch):
            total, parts = self.loss(mine[lo:lo + self.micro_batch])
            if total is not None:  # skipped samples count in the mean as zero loss: every process divides alike
                (total / len(batch)).backward()
            sums = {k: sums[k] + parts[k] for k in sums}
        grads = [p.grad for p in self.fusion.parameters()]
        stats = torch.tensor([sums["lm"], sums["kl"], sums["correct"], sums["used"]], dtype=torch.float64, device=self.device)
        if self.world > 1:
            for g in grads:
                torch.distributed.all_reduce(g)
            torch.distributed.all_reduce(stats)
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.step()
        self.steps_done += 1
        used = max(1.0, float(stats[3]))
        return {"step": self.steps_done, "lm": float(stats[0]) / used, "kl": float(stats[1]) / used,
                "accuracy": 100.0 * float(stats[2]) / used, "samples": int(stats[3])}

    def save(self, out: str | Path, log: list[dict]) -> Path:
        out = Path(out)
        self.fusion.save_pretrained(out)
        (out / RECIPE_FILE).write_text(json.dumps({**vars(self.recipe), "steps_done": self.steps_done,
                                                   "skipped": sorted(self.bad.values())}, indent=1) + "\n")
        (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        return out


def cosine_lr(base: float, step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def train(trainer: AdapterTrainer, out: str | Path, warmup: int = 0, log_every: int = 10, echo=print) -> list[dict]:
    """``recipe.steps`` steps (teacher logits first when distilling); rank 0 saves to ``out``."""
    if trainer.recipe.distill > 0:
        trainer.teacher(out)
    log, started = [], time.perf_counter()
    for step in range(trainer.recipe.steps):
        record = trainer.step(cosine_lr(trainer.recipe.lr, step, trainer.recipe.steps, warmup))
        record["seconds"] = round(time.perf_counter() - started, 2)
        log.append(record)
        if trainer.rank == 0 and (step + 1) % log_every == 0:
            echo(json.dumps(record))
    if trainer.rank == 0:
        trainer.save(out, log)
    return log
