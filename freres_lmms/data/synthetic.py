"""Procedural videos of moving coloured shapes with four-way multiple-choice questions.

One generator serves the lmms-eval task (mp4 files + jsonl) and training (tensors on the GPU):
``sample(n, ...)`` draws ``n`` scenes and their questions as tensors, ``render`` draws the
videos, and ``Questions`` turns question codes into text (for the jsonl) or token ids (for
training, through ``PhraseTable``). Sampling, rendering and tokenizing are batched tensor code:
no Python loop over samples, objects, frames or pixels.

Question types (``QUESTION_TYPES``), by what they need:

- spatial: ``count`` (how many objects), ``colour`` (of the moving object), ``position`` (the
  quadrant of the one object in a still scene);
- temporal: ``direction`` (of motion), ``order`` (the colour of the object that appears first),
  ``changed`` (the colour an object turns into mid-clip, or none);
- mixed: ``destination`` (the quadrant a moving object ends up in: the last frames and where).

Question types are interleaved (sample ``i`` has type ``i % 7``) and the correct letter is
uniform over A-D within every type, so any prefix of a split is balanced. Splits draw from
separate seeds (``SPLIT_SEEDS``).

Every type has one fixed list of options (``1-4``; the four ``OPTION_COLOURS``; the quadrants;
the directions; three colours and "none"), so the letter is a function of what the video shows,
and no question names an object the model must find from its words. The testbed, trained from
scratch in minutes, stayed near chance on every question that needed either (options re-ordered
per sample, "where is the red circle?", "which shape changed?": results/testbed_training.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
OPTION_COLOURS = 4  # the first four colours: the options of colour and order questions
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")  # index = 2 * row + column
QUESTION_TYPES = {
    "count": "spatial",
    "colour": "spatial",
    "position": "spatial",
    "direction": "temporal",
    "order": "temporal",
    "changed": "temporal",
    "destination": "mixed",
}
QTYPES = tuple(QUESTION_TYPES)
LETTERS = "ABCD"
MAX_OBJECTS = 4
BACKGROUND = (30, 30, 36)
SPLIT_SEEDS = {"train": 1_000_003, "validation": 2_000_003, "test": 3_000_017}


# -- phrases: every question and option string, indexed; text and token ids come from here ------
def _object(colour: str, shape: str) -> str:
    return f"the {colour} {shape}"


OBJECTS = [_object(c, s) for c in COLOURS for s in SHAPES]  # index = 3 * colour + shape
QUESTION_PHRASES = (
    ["How many objects are in the video?", "What colour is the moving object?",
     "What colour is the object that appears first?", "Which colour does an object change to?",
     "Where is the object?"]
    + [f"In which direction does {o} move?" for o in OBJECTS]
    + [f"Where does {o} end up?" for o in OBJECTS]
)
OPTION_PHRASES = (
    ["1", "2", "3", "4"] + list(COLOURS)[:OPTION_COLOURS] + list(QUADRANTS) + list(DIRECTIONS)
    + ["none"]
)
# Segments of the prompt between the variable parts; each starts at a pre-tokenizer boundary,
# so tokenizing the pieces and concatenating equals tokenizing the whole text (tested).
FIXED = ["Question:", "\nOptions:\n(A)", "\n(B)", "\n(C)", "\n(D)", "\nAnswer with the option's letter."]
PHRASES = FIXED + [" " + q for q in QUESTION_PHRASES] + [" " + o for o in OPTION_PHRASES]
_Q0 = len(FIXED)  # first question phrase
_O0 = _Q0 + len(QUESTION_PHRASES)  # first option phrase
Q_COUNT, Q_COLOUR, Q_ORDER, Q_CHANGED, Q_WHERE = range(_Q0, _Q0 + 5)
Q_DIRECTION, Q_DESTINATION = (_Q0 + 5 + i * len(OBJECTS) for i in range(2))
O_NUMBER, O_COLOUR = _O0, _O0 + 4
O_QUADRANT = O_COLOUR + OPTION_COLOURS
O_DIRECTION = O_QUADRANT + 4
O_NONE = O_DIRECTION + 4


def text_of(index: int) -> str:
    """The question or option string of a phrase index (without its leading space)."""
    return PHRASES[index].removeprefix(" ")


class _TensorFields:
    """Dataclasses of per-sample tensors: ``map`` applies one function to every field."""

    def map(self, fn):
        return type(self)(**{name: fn(value) for name, value in vars(self).items()})


@dataclass
class Scene(_TensorFields):
    """Per-object parameters of a batch of videos (tensors lead with [N, K])."""

    active: torch.Tensor  # bool [N, K]
    shape: torch.Tensor  # long [N, K] index into SHAPES
    colour_start: torch.Tensor  # long [N, K] index into COLOURS
    colour_end: torch.Tensor  # long [N, K]
    change_frame: torch.Tensor  # long [N, K]; colour_end from this frame on
    appear_frame: torch.Tensor  # long [N, K]; invisible before
    start: torch.Tensor  # float [N, K, 2] centre (x, y) in pixels at frame 0
    velocity: torch.Tensor  # float [N, K, 2] pixels per frame
    radius: torch.Tensor  # float [N, K]

    def static(self) -> torch.Tensor:
        """bool [N, K]: active objects that never move."""
        return self.active & (self.velocity == 0).all(-1)


@dataclass
class Questions(_TensorFields):
    """Question codes of a batch: phrase indices into ``PHRASES`` and the answer's letter index."""

    qtype: torch.Tensor  # long [N] index into QTYPES
    question: torch.Tensor  # long [N]
    options: torch.Tensor  # long [N, 4]
    answer: torch.Tensor  # long [N] in 0..3

    def segments(self) -> torch.Tensor:
        """Phrase indices of each prompt, in order: [N, 11]."""
        fixed = torch.arange(len(FIXED), device=self.qtype.device).expand(len(self.qtype), -1)
        parts = [fixed[:, :1], self.question[:, None]]
        for k in range(4):
            parts += [fixed[:, 1 + k:2 + k], self.options[:, k:k + 1]]
        return torch.cat(parts + [fixed[:, 5:]], dim=1)

    def docs(self, split: str, start: int = 0, qtypes: dict | None = None, phrases: list[str] | None = None) -> list[dict]:
        """The jsonl records (text) of the batch; sample ``i`` is ``{split}-{start + i:05d}``.
        ``qtypes`` (type -> group) and ``phrases``: another task's (default: this module's)."""
        qtypes, phrases = qtypes or QUESTION_TYPES, phrases or PHRASES
        names = tuple(qtypes)
        rows = zip(self.qtype.tolist(), self.question.tolist(), self.options.tolist(), self.answer.tolist())
        out = []
        for i, (qtype, question, options, answer) in enumerate(rows):
            name = f"{split}-{start + i:05d}"
            out.append({
                "id": name, "video": f"videos/{name}.mp4", "question": phrases[question].removeprefix(" "),
                "options": [phrases[o].removeprefix(" ") for o in options], "answer": LETTERS[answer],
                "qtype": names[qtype], "category": qtypes[names[qtype]],
            })
        return out


def prompt_text(question: str, options: list[str]) -> str:
    """The task's prompt (``doc_to_text`` of task_configs/freres_synthetic)."""
    lines = "\n".join(f"({letter}) {option}" for letter, option in zip(LETTERS, options))
    return f"Question: {question}\nOptions:\n{lines}\nAnswer with the option's letter."


class PhraseTable:
    """Token ids of every phrase, padded: assembles prompts on any device without a Python loop."""

    def __init__(self, tokenizer, device: str | torch.device = "cpu", phrases: list[str] = PHRASES) -> None:
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in phrases]
        self.lengths = torch.tensor([len(e) for e in encoded], device=device)
        self.ids = torch.zeros(len(encoded), int(self.lengths.max()), dtype=torch.long, device=device)
        for row, e in enumerate(encoded):  # once per table, not per sample
            self.ids[row, :len(e)] = torch.tensor(e)

    def assemble(self, segments: torch.Tensor, pad_id: int, flags: torch.Tensor | None = None):
        """Concatenate the phrases of each row of ``segments`` [N, S]: right-padded ids [N, L], lengths [N].

        With ``flags`` (bool [N, S], one per segment), also returns each token's flag [N, L].
        """
        ids, lengths = self.ids[segments], self.lengths[segments]  # [N,S,P], [N,S]
        valid = torch.arange(ids.shape[-1], device=ids.device) < lengths[..., None]
        total = lengths.sum(1)
        out = torch.full((len(segments), int(total.max())), pad_id, dtype=torch.long, device=ids.device)
        column = valid.flatten(1).cumsum(1) - 1  # target column of each valid token
        row = torch.arange(len(segments), device=ids.device)[:, None].expand_as(column)
        mask = valid.flatten(1)
        out[row[mask], column[mask]] = ids.flatten(1)[mask]
        if flags is None:
            return out, total
        token_flags = torch.zeros_like(out, dtype=torch.bool)
        token_flags[row[mask], column[mask]] = flags[:, :, None].expand_as(valid).flatten(1)[mask]
        return out, total, token_flags


# -- sampling -----------------------------------------------------------------------------------
class _Draw:
    def __init__(self, seed: int, device) -> None:
        self.g = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def uniform(self, low, high, shape) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.g, device=self.device)

    def integers(self, low, high, shape) -> torch.Tensor:
        """Integers in [low, high); ``high`` may be a tensor (per-sample bounds)."""
        return (low + torch.rand(shape, generator=self.g, device=self.device) * (high - low)).long()

    def choice(self, allowed: torch.Tensor) -> torch.Tensor:
        """A uniformly drawn allowed column per row of bool ``allowed`` [N, M] (each row allows one or more)."""
        keys = torch.rand(allowed.shape, generator=self.g, device=self.device)
        return keys.masked_fill(~allowed, -1.0).argmax(1)

    def ranked(self, allowed: torch.Tensor) -> torch.Tensor:
        """Columns of each row of ``allowed`` [N, M] in a uniformly random order, the allowed ones first: [N, M]."""
        keys = torch.rand(allowed.shape, generator=self.g, device=self.device)
        return keys.masked_fill(~allowed, -1.0).argsort(1, descending=True)

    def permutation(self, n: int, k: int) -> torch.Tensor:
        """``n`` random permutations of range(k): [n, k]."""
        return torch.rand((n, k), generator=self.g, device=self.device).argsort(1)


def sample(n: int, frames: int = 16, size: int = 224, seed: int = 0, device: str | torch.device = "cpu",
           first: int = 0) -> tuple[Scene, Questions]:
    """Draw ``n`` scenes and questions; sample ``i`` asks question type ``(first + i) % 7``."""
    draw = _Draw(seed, device)
    k, half = MAX_OBJECTS, size / 2
    qtype = (torch.arange(n, device=device) + first) % len(QTYPES)
    is_type = {name: qtype == i for i, name in enumerate(QTYPES)}

    shape = draw.integers(0, len(SHAPES), (n, k))
    three = draw.permutation(n, len(SHAPES))  # order/changed: three objects of distinct shapes
    ordered = is_type["order"] | is_type["changed"]
    shape[:, :3] = torch.where(ordered[:, None], three, shape[:, :3])
    # order: three objects appear in distinct quarters of the clip.
    slots = draw.permutation(n, 4)[:, :3] * (frames // 4)
    first_seen = slots.argmin(1)
    # changed: object `changing` turns into colour `target` (3 = nothing changes) mid-clip.
    target = draw.integers(0, 4, (n,))
    changing = draw.integers(0, 3, (n,))
    # Distinct colours; column k-1 is the spare a changing object turns into. The colour a
    # question asks for (the mover's, the first to appear's, the spare) is uniform over its
    # options: swap it into its column.
    colour = draw.permutation(n, len(COLOURS))
    asked = torch.where(is_type["order"], first_seen, torch.where(is_type["changed"], k - 1, 0))
    wanted = torch.where(is_type["changed"], target.clamp(max=2), draw.integers(0, OPTION_COLOURS, (n,)))
    holder = (colour == wanted[:, None]).long().argmax(1)
    swapped = colour.clone()
    swapped.scatter_(1, holder[:, None], colour.gather(1, asked[:, None]))
    swapped.scatter_(1, asked[:, None], wanted[:, None])
    fixed_colour = ~(is_type["count"] | is_type["position"])
    colour = torch.where(fixed_colour[:, None], swapped, colour)[:, :k]
    radius = draw.uniform(size * 0.07, size * 0.1, (n, k))

    # Static objects sit in distinct quadrants so they never overlap.
    quad = draw.permutation(n, 4)
    # destination: the mover crosses from quad[0] into a neighbouring quadrant (flip the column
    # bit or the row bit); the two static objects take the quadrants it never enters.
    flip = 1 + draw.integers(0, 2, (n,))  # 1: horizontal, 2: vertical
    source = quad[:, 0]
    crossing = torch.stack([source, source ^ (3 - flip), source ^ 3, source ^ flip], 1)
    quad = torch.where(is_type["destination"][:, None], crossing, quad)
    corner = torch.stack([(quad % 2) * half, (quad // 2) * half], -1).float()
    start = corner + draw.uniform(size * 0.14, half - size * 0.14, (n, k, 2))

    count = torch.full((n,), 3, device=device)
    count = torch.where(is_type["count"], 1 + draw.integers(0, 4, (n,)), count)
    count = torch.where(is_type["position"], 1, count)
    count = torch.where(is_type["colour"] | is_type["direction"] | is_type["destination"],
                        1 + draw.integers(0, 3, (n,)), count)
    active = torch.arange(k, device=device)[None, :] < count[:, None]

    # colour/direction: object 0 moves 45% of the frame along a random axis, its whole path inside.
    velocity = torch.zeros(n, k, 2, device=device)
    heading = draw.integers(0, 4, (n,))
    unit = torch.tensor(list(DIRECTIONS.values()), device=device, dtype=torch.float32)[heading]
    moves = is_type["colour"] | is_type["direction"]
    step = unit * size * 0.45 / max(frames - 1, 1)
    travel = step * (frames - 1)
    margin = size * 0.18
    low = torch.clamp(margin - travel, min=margin)
    high = torch.clamp(size - margin - travel, max=size - margin)
    mover_start = low + (high - low) * draw.uniform(0.0, 1.0, (n, 2))
    # destination: from near the source quadrant's centre to near the neighbour's centre.
    column, row = (source % 2).float(), (source // 2).float()
    centre = torch.stack([column, row], -1) * half + half / 2
    sign = torch.where(torch.stack([column, row], -1) > 0, -1.0, 1.0)
    along = torch.stack([flip == 1, flip == 2], -1).float()
    crossing_start = centre + draw.uniform(-size * 0.04, size * 0.04, (n, 2))
    crossing_step = along * sign * half / max(frames - 1, 1)
    start[:, 0] = torch.where(moves[:, None], mover_start, torch.where(is_type["destination"][:, None], crossing_start, start[:, 0]))
    velocity[:, 0] = torch.where(moves[:, None], step, torch.where(is_type["destination"][:, None], crossing_step, velocity[:, 0]))

    appear = torch.zeros(n, k, dtype=torch.long, device=device)
    appear[:, :3] = torch.where(is_type["order"][:, None], slots, appear[:, :3])
    changes = is_type["changed"] & (target < 3)
    change_at = draw.integers(frames // 4, 3 * frames // 4 + 1, (n,))
    change_frame = torch.full((n, k), frames + 1, dtype=torch.long, device=device)
    hit = changes[:, None] & (torch.arange(k, device=device)[None, :] == changing[:, None])
    change_frame = torch.where(hit, change_at[:, None], change_frame)
    colour_end = torch.where(hit, colour[:, k - 1:k], colour)

    scene = Scene(active, shape, colour, colour_end, change_frame, appear, start, velocity, radius)

    return scene, ask(scene, qtype, frames, size)


def ask(scene: Scene, qtype: torch.Tensor, frames: int, size: int) -> Questions:
    """Questions of type ``qtype`` [N] about ``scene``; every answer read off the scene."""
    n, k = scene.active.shape
    device, half, rows = scene.active.device, size / 2, torch.arange(n, device=scene.active.device)
    count = scene.active.sum(1)
    objects = scene.colour_start * len(SHAPES) + scene.shape  # [N,K] index into OBJECTS
    quadrant = 2 * (scene.start[..., 1] >= half).long() + (scene.start[..., 0] >= half).long()  # [N,K] at frame 0
    end = scene.start[:, 0] + scene.velocity[:, 0] * (frames - 1)
    destination = 2 * (end[:, 1] >= half).long() + (end[:, 0] >= half).long()
    vx, vy = scene.velocity[:, 0].unbind(-1)
    heading = torch.where(vx.abs() > vy.abs(), (vx > 0).long(), 2 + (vy > 0).long())  # left, right, up, down
    changed = (scene.colour_end != scene.colour_start) & scene.active
    changed_answer = torch.where(changed.any(1), scene.colour_end[rows, changed.long().argmax(1)], 3)

    first_seen = scene.appear_frame[:, :3].argmin(1)
    fixed = torch.arange(4, device=device).expand(n, 4)
    cases = {  # type: (question phrase, options, answer)
        "count": (torch.full_like(count, Q_COUNT), O_NUMBER + fixed, count - 1),
        "colour": (torch.full_like(count, Q_COLOUR), O_COLOUR + fixed, scene.colour_start[:, 0]),
        "position": (torch.full_like(count, Q_WHERE), O_QUADRANT + fixed, quadrant[:, 0]),
        "direction": (Q_DIRECTION + objects[:, 0], O_DIRECTION + fixed, heading),
        "order": (torch.full_like(count, Q_ORDER), O_COLOUR + fixed, scene.colour_start[rows, first_seen]),
        "changed": (torch.full_like(count, Q_CHANGED),
                    torch.tensor([O_COLOUR, O_COLOUR + 1, O_COLOUR + 2, O_NONE], device=device).expand(n, 4), changed_answer),
        "destination": (Q_DESTINATION + objects[:, 0], O_QUADRANT + fixed, destination),
    }
    return pick_questions(qtype, cases, QTYPES)


def pick_questions(qtype: torch.Tensor, cases: dict, names: tuple) -> Questions:
    """Each sample's question, options and answer from the case of its type (``names[qtype]``);
    ``cases[name]`` holds [N] (or one int), [N, 4] and [N] tensors, computed for all samples."""
    question = torch.zeros_like(qtype)
    options = torch.zeros(len(qtype), 4, dtype=torch.long, device=qtype.device)
    answer = torch.zeros_like(qtype)
    for index, name in enumerate(names):  # a handful of types, each batched
        mask = qtype == index
        q, opts, ans = cases[name]
        question = torch.where(mask, q, question)
        options = torch.where(mask[:, None], opts, options)
        answer = torch.where(mask, ans, answer)
    return Questions(qtype, question, options, answer)


# Which other questions a scene drawn for one type answers unambiguously (rows: the scene's type;
# columns: the type asked), for extra training questions. Position needs a scene of one still object.
_ALSO_VALID = {
    "count": ("count", "position"),
    "colour": ("colour", "direction", "count"),
    "position": ("position", "count"),
    "direction": ("direction", "colour", "count"),
    "order": ("order", "count"),
    "changed": ("changed", "count"),
    "destination": ("destination", "direction", "colour", "count"),
}
VALID_QUESTIONS = torch.tensor([[asked in _ALSO_VALID[scene] for asked in QTYPES] for scene in QTYPES])


def extra_questions(scene: Scene, first: Questions, turns: int, frames: int, size: int, seed: int) -> list[Questions]:
    """``turns`` more questions per scene, each of a type valid for it, drawn uniformly (options re-drawn)."""
    draw = _Draw(seed, scene.active.device)
    valid = VALID_QUESTIONS.to(scene.active.device)[first.qtype]  # [N, 7]
    valid[:, QTYPES.index("position")] &= (scene.active.sum(1) == 1) & scene.static().any(1)
    # a handful of turns, each batched over the whole batch
    return [ask(scene, draw.choice(valid), frames, size) for _ in range(turns)]


# -- rendering ----------------------------------------------------------------------------------
def shape_masks(shape: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Pixels inside each object (``shape`` [N, K, 1, 1, 1] into ``SHAPES``) at offsets ``dx``, ``dy``
    from its centre, of size ``r``: bool, broadcast of the inputs."""
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
    triangle = (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55)
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def composite(mask: torch.Tensor, colour_idx: torch.Tensor, background: torch.Tensor,
              colours: dict = COLOURS) -> torch.Tensor:
    """Frames from object masks (bool [N, K, T, H, W], later objects on top), each object's colour per
    frame (``colour_idx`` [N, K, T] into ``colours``) and the background (uint8 [N, T, 1, 3])."""
    device = mask.device
    layer = torch.arange(1, mask.shape[1] + 1, device=device, dtype=torch.uint8)[None, :, None, None, None]
    top = (mask * layer).amax(dim=1).long()  # [N,T,H,W], 0 = background
    palette = torch.tensor(list(colours.values()), device=device, dtype=torch.uint8)
    colours = torch.cat([background, palette[colour_idx].permute(0, 2, 1, 3)], dim=2)  # [N,T,K+1,3]
    n, t_, h, w = top.shape
    out = torch.gather(colours.reshape(n * t_, -1, 3), 1, top.reshape(n * t_, h * w, 1).expand(-1, -1, 3))
    return out.reshape(n, t_, h, w, 3)


def render(scene: Scene, frames: int, size: int) -> torch.Tensor:
    """Draw every video of ``scene``: uint8 [N, T, size, size, 3]. No loop over frames or videos."""
    device = scene.start.device
    t = torch.arange(frames, device=device, dtype=torch.float32)
    centre = scene.start[:, :, None, :] + scene.velocity[:, :, None, :] * t[None, None, :, None]  # [N,K,T,2]
    axis = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    dx = axis[None, None, None, None, :] - centre[..., 0, None, None]  # [N,K,T,1,W]
    dy = axis[None, None, None, :, None] - centre[..., 1, None, None]  # [N,K,T,H,1]
    mask = shape_masks(scene.shape[:, :, None, None, None], dx, dy, scene.radius[:, :, None, None, None])
    visible = scene.active[:, :, None] & (t[None, None, :] >= scene.appear_frame[:, :, None])
    mask = mask & visible[..., None, None]  # [N,K,T,H,W]
    colour_idx = torch.where(
        t[None, None, :] >= scene.change_frame[:, :, None], scene.colour_end[:, :, None], scene.colour_start[:, :, None]
    )  # [N,K,T]
    background = torch.tensor(BACKGROUND, device=device, dtype=torch.uint8).expand(*colour_idx.shape[::2], 1, 3)
    return composite(mask, colour_idx, background)


# -- files --------------------------------------------------------------------------------------
def write_mp4(path: Path, frames, fps: int) -> None:
    """Encode uint8 [T, H, W, 3] frames as near-lossless H.264."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate(out_dir: str | Path, count: int | None = None, frames: int | None = None, size: int = 224,
             fps: int | None = None, split: str = "test", seed: int | None = None, batch: int | None = None,
             task: str = "short") -> Path:
    """Write ``count`` samples of ``split`` of ``task`` (``data.tasks.TASKS``): ``OUT/videos/*.mp4``
    and ``OUT/<split>.jsonl``; unset counts, frames and rate are the task's.

    The seed defaults to the split's (``SPLIT_SEEDS``); scenes are drawn on the CPU so a split is
    the same on every machine.
    """
    from .tasks import TASKS

    spec = TASKS[task]
    count, frames, fps = count or spec.test_size, frames or spec.frames, fps or spec.fps
    batch = batch or spec.render_batch
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    seed = SPLIT_SEEDS[split] if seed is None else seed
    scene, questions = spec.sample(count, frames, size, seed)
    docs = questions.docs(split, qtypes=spec.qtypes, phrases=spec.phrases)
    from tqdm import tqdm

    with tqdm(total=count, desc=f"{spec.name} {split} videos", unit="video", disable=count < 2 * batch) as progress:
        for lo in range(0, count, batch):
            part = scene.map(lambda value: value[lo:lo + batch])
            for doc, video in zip(docs[lo:lo + batch], spec.render(part, frames, size).numpy()):
                write_mp4(out / doc["video"], video, fps)
            progress.update(min(batch, count - lo))
    with open(out / f"{split}.jsonl", "w") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    meta = {"generator_version": spec.version, "task": task, "count": count, "frames": frames, "size": size,
            "fps": fps, "split": split, "seed": seed}
    (out / f"{split}.meta.json").write_text(json.dumps(meta) + "\n")
    return out / f"{split}.jsonl"


DEFAULT_TASK_DATA = Path(__file__).resolve().parents[2] / "task_configs" / "freres_synthetic" / "data"
DEFAULT_TEST_SIZE = 350  # 50 per question type
GENERATOR_VERSION = 3  # bump when the videos or questions a seed gives change


def ensure_synthetic(out_dir: str | Path | None = None, count: int | None = None, task: str = "short", **kwargs) -> Path:
    """The test split of ``task`` (``split``/``seed`` in kwargs: another), generated if missing, older
    than its generator, or other than asked."""
    from .tasks import TASKS

    spec = TASKS[task]
    out_dir, count = Path(out_dir or spec.data_dir), count or spec.test_size
    split = kwargs.get("split", "test")
    path, meta_path = out_dir / f"{split}.jsonl", out_dir / f"{split}.meta.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        wanted = {"generator_version": spec.version, "count": count, **kwargs}
        if all(meta.get(k) == v for k, v in wanted.items()) and meta.get("task", "short") == task:
            return path
    return generate(out_dir, count, task=task, **kwargs)


def main(argv: list[str] | None = None) -> None:
    from .tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="short",
                        help="short: freres_synthetic (16 frames); long: freres_synthetic_long (128 frames)")
    parser.add_argument("--out", default=None, help="default: where the task's YAML looks")
    parser.add_argument("--count", type=int, default=None, help="samples (question types interleave); default: the task's")
    parser.add_argument("--frames", type=int, default=None, help="default: the task's (16 short, 128 long; long: up to 512)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fps", type=int, default=None)
    parser.add_argument("--split", choices=list(SPLIT_SEEDS), default="test")
    parser.add_argument("--seed", type=int, default=None,
                        help="default: the split's own seed; any other seed draws a fresh split (held-out checks)")
    args = parser.parse_args(argv)
    out = args.out or TASKS[args.task].data_dir
    print(generate(out, args.count, args.frames, args.size, args.fps, args.split, args.seed, task=args.task))


if __name__ == "__main__":
    main()
