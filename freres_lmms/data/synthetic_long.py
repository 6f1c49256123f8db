"""Long synthetic clips (128 frames by default, up to 512): questions whose evidence is brief, spread or small.

The short task (``synthetic``, 16 frames) lets any method see every frame it needs. Here every
clip holds one scene built so that each question type has its evidence in a different place of
the clip, the regime of the papers (sparse frame sampling misses short events):

- brief: ``flash`` -- an object visible for only 2-4 frames: its colour (orange, cyan, pink: no
  other object has them, so the question is whether the kept frames caught it), or none;
- spread: ``changes`` -- how often the centre object changes colour (0-3; each colour holds a
  multiple of an eighth of the clip and none comes back: the changes are the colours shown less
  one); ``first`` -- the colour of the corner object that appears first (one appears in the first
  third of the clip, the other in the last third);
- detail: ``small_count`` -- how many small objects (a quarter of a merged token across) appear
  together for 16 frames (1-4); ``small_where`` -- the quadrant of the one small object;
- mixed: ``when_flash`` -- the quadrant of the orbiting object when the background flashes (2 frames).

Every clip carries every part (centre object, corner pair, orbiting object, flash, small
objects, background flash), drawn independently, so one clip answers every question type
(``small_where`` when exactly one small object appears): training asks up to five per clip. Each
type has one fixed option list and a uniform answer letter; types interleave (sample ``i`` asks
``LONG_QTYPES[i % 6]``). Durations are in frames, so a longer clip spreads the same events thinner.
Sampling and rendering are batched tensor code, as in ``synthetic``.

``ease`` (training only; 0, the task's clips, by default) lengthens and enlarges the needles: at
``ease=1`` the brief object and the small objects stay about a third of the clip, the small objects
are larger, the background flash lasts a sixth of the clip and the mover turns slowly enough to stay
in one quadrant through it. A curriculum from 1 to 0 lets attention find the needles before they
shrink to a few of 4,096 tokens (``scripts/train_testbed.py``, ``curriculum_share``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .synthetic import (
    BACKGROUND,
    COLOURS,
    FIXED,
    QUADRANTS,
    SHAPES,
    Questions,
    _Draw,
    pick_questions,
    _TensorFields,
    composite,
    shape_masks,
)

LONG_QUESTION_TYPES = {
    "flash": "brief",
    "changes": "spread",
    "first": "spread",
    "small_count": "detail",
    "small_where": "detail",
    "when_flash": "mixed",
}
LONG_QTYPES = tuple(LONG_QUESTION_TYPES)
LONG_GROUPS = ("brief", "spread", "detail", "mixed")
LONG_FRAMES = 128
MAX_LONG_FRAMES = 512
LONG_VERSION = 2  # bump when the clips or questions a seed gives change

# the short task's colours, then the brief object's own (the short task's draws index COLOURS)
LONG_COLOURS = {**COLOURS, "orange": (245, 135, 20), "cyan": (40, 215, 225), "pink": (250, 130, 190)}
COLOUR_INDEX = {name: i for i, name in enumerate(LONG_COLOURS)}
FLASH_COLOURS = ("orange", "cyan", "pink")  # the brief object's colours; option D is "none"
CORNER_COLOURS = ("red", "green", "blue", "yellow")  # the centre and corner objects' colours
MOVER_COLOUR, SMALL_COLOUR = "white", "purple"
FLASH_BACKGROUND = (120, 120, 132)  # the background of the 2 flash frames
SMALL_FRAMES = 16  # the small objects' segment
CHANGE_SLOTS = 8  # colour changes happen at multiples of T / 8

QUESTION_PHRASES = [
    "What colour is the object that appears only briefly?",
    "How many times does the centre object change colour?",
    "Which colour appears first in a corner?",
    "How many small objects appear?",
    "Where is the small object?",
    "Where is the moving object when the background flashes?",
]
OPTION_PHRASES = ["0", "1", "2", "3", "4"] + list(CORNER_COLOURS) + ["none"] + list(QUADRANTS) + list(FLASH_COLOURS)
LONG_PHRASES = FIXED + [" " + q for q in QUESTION_PHRASES] + [" " + o for o in OPTION_PHRASES]
_Q0 = len(FIXED)
_O0 = _Q0 + len(QUESTION_PHRASES)
O_DIGIT, O_COLOUR = _O0, _O0 + 5  # "0".."4"; red, green, blue, yellow
O_NONE = O_COLOUR + len(CORNER_COLOURS)
O_QUADRANT = O_NONE + 1
O_FLASH = O_QUADRANT + len(QUADRANTS)  # orange, cyan, pink

# slots of a scene's objects, in drawing order (later on top)
CENTRE, CORNER_A, CORNER_B, MOVER, FLASH, SMALL0 = range(6)
SLOTS = SMALL0 + 4


@dataclass
class LongScene(_TensorFields):
    """Objects of a batch of long clips ([N, K] with K = ``SLOTS``) and the background flash."""

    active: torch.Tensor  # bool [N, K]
    shape: torch.Tensor  # long [N, K] into SHAPES
    colours: torch.Tensor  # long [N, K, 4] into COLOURS: the colour before each change, then after
    change_frames: torch.Tensor  # long [N, K, 3] frames of the changes (past the clip: none)
    appear: torch.Tensor  # long [N, K] first visible frame
    vanish: torch.Tensor  # long [N, K] first invisible frame after it
    start: torch.Tensor  # float [N, K, 2] centre (x, y) at frame 0 (the orbit's centre for the mover)
    orbit_radius: torch.Tensor  # float [N, K]
    orbit_phase: torch.Tensor  # float [N, K] angle (radians, y down) at frame 0
    orbit_speed: torch.Tensor  # float [N, K] radians per frame
    radius: torch.Tensor  # float [N, K]
    flash_frame: torch.Tensor  # long [N] first frame with a lighter background
    lit_frames: torch.Tensor  # long [N] frames of the background flash (2 at ease 0)


def colour_ids(names, device) -> torch.Tensor:
    """Indices into LONG_COLOURS of colour names: long [len(names)]."""
    return torch.tensor([COLOUR_INDEX[c] for c in names], device=device)


def quadrant_of(x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Index into QUADRANTS of points (2 * row + column)."""
    return 2 * (y >= size / 2).long() + (x >= size / 2).long()


def sample_long(n: int, frames: int = LONG_FRAMES, size: int = 224, seed: int = 0,
                device: str | torch.device = "cpu", first: int = 0, ease: float = 0.0) -> tuple[LongScene, Questions]:
    """Draw ``n`` long scenes and questions; sample ``i`` asks ``LONG_QTYPES[(first + i) % 6]``.

    ``ease`` in [0, 1]: how much longer and larger the needles are (0: the task; the draws of a seed
    are the same at every ease, only durations, sizes and the mover's speed scale)."""
    if not 48 <= frames <= MAX_LONG_FRAMES:
        raise ValueError(f"long clips have 48 to {MAX_LONG_FRAMES} frames, got {frames}")
    if not 0.0 <= ease <= 1.0:
        raise ValueError(f"ease is in [0, 1], got {ease}")
    longer = round(ease * frames * 0.35)  # frames added to the brief and the small objects
    lit_frames = 2 + round(ease * frames / 6)
    draw = _Draw(seed, device)
    qtype = (torch.arange(n, device=device) + first) % len(LONG_QTYPES)
    k = SLOTS
    centre_xy = torch.full((n, 2), size / 2, device=device)

    # every answer first, uniform over its four options; the scene is built to show it
    flash_answer = draw.integers(0, 4, (n,))  # orange, cyan, pink, none
    changes = draw.integers(0, 4, (n,))
    first_colour = draw.integers(0, 4, (n,))
    small_count = torch.where(qtype == LONG_QTYPES.index("small_where"), 1, 1 + draw.integers(0, 4, (n,)))
    mover_quadrant = draw.integers(0, 4, (n,))

    shape = draw.integers(0, len(SHAPES), (n, k))
    radius = draw.uniform(size * 0.075, size * 0.09, (n, k))
    radius[:, SMALL0:] = size * (0.03 + 0.03 * ease)
    start = torch.zeros(n, k, 2, device=device)
    appear = torch.zeros(n, k, dtype=torch.long, device=device)
    vanish = torch.full((n, k), frames, dtype=torch.long, device=device)
    colours = torch.full((n, k, 4), COLOUR_INDEX[SMALL_COLOUR], dtype=torch.long, device=device)
    never = frames + 1
    change_frames = torch.full((n, k, 3), never, dtype=torch.long, device=device)

    # centre object: static; `changes` colour changes at distinct multiples of T/8, each to a colour
    # not shown before (a permutation of the four)
    start[:, CENTRE] = centre_xy
    sequence = draw.permutation(n, 4)
    corner_colours = colour_ids(CORNER_COLOURS, device)
    colours[:, CENTRE] = corner_colours[sequence]
    # the first `changes` of three sorted slots, the rest never (sorting keeps them in order)
    picked = draw.permutation(n, CHANGE_SLOTS - 1)[:, :3] + 1
    picked = torch.where(torch.arange(3, device=device)[None] < changes[:, None], picked, CHANGE_SLOTS * 2)
    slots = picked.sort(1).values * frames // CHANGE_SLOTS
    change_frames[:, CENTRE] = torch.where(slots < frames, slots, never)

    # corner pair: two corners, two colours; the earlier one (first third) shows `first_colour`,
    # the later one (last third) another; both stay once they appear
    corners = draw.permutation(n, 4)[:, :2]
    inset = draw.uniform(size * 0.12, size * 0.15, (n, 2, 2))
    corner_xy = torch.stack([corners % 2, corners // 2], -1).float() * (size - 2 * inset) + inset
    start[:, CORNER_A:CORNER_B + 1] = corner_xy
    other = (first_colour + 1 + draw.integers(0, 3, (n,))) % 4
    early_slot = draw.integers(0, 2, (n,))  # which of the two corner slots appears first
    early_at = draw.integers(0, frames // 3, (n,))
    late_at = draw.integers(2 * frames // 3, frames - frames // 8, (n,))
    pair_colour = torch.stack([corner_colours[first_colour], corner_colours[other]], 1)  # [early, late]
    pair_at = torch.stack([early_at, late_at], 1)
    order = torch.stack([early_slot, 1 - early_slot], 1)  # slot of the early one, of the late one
    colours[:, CORNER_A:CORNER_B + 1] = torch.zeros_like(pair_colour).scatter(1, order, pair_colour)[..., None]
    appear[:, CORNER_A:CORNER_B + 1] = torch.zeros_like(pair_at).scatter(1, order, pair_at)

    # the mover: white, orbiting the centre 1-2 times; at the background flash its angle is inside
    # `mover_quadrant`, at least 15 degrees from the quadrant's edges
    flash_frame = draw.integers(4, frames - 4 - lit_frames, (n,))
    speed = 2 * math.pi * draw.uniform(1.0, 2.0, (n,)) / frames * (1 - 0.9 * ease)
    diagonal = torch.tensor([1.25, 1.75, 0.75, 0.25], device=device)[mover_quadrant] * math.pi  # TL, TR, BL, BR
    at_flash = diagonal + draw.uniform(-math.pi / 6, math.pi / 6, (n,))
    orbit_radius = torch.zeros(n, k, device=device)
    orbit_phase = torch.zeros(n, k, device=device)
    orbit_speed = torch.zeros(n, k, device=device)
    orbit_radius[:, MOVER] = size * 0.3
    orbit_speed[:, MOVER] = speed
    orbit_phase[:, MOVER] = at_flash - speed * flash_frame
    start[:, MOVER] = centre_xy
    colours[:, MOVER] = COLOUR_INDEX[MOVER_COLOUR]
    radius[:, MOVER] = size * 0.08

    # the brief object: 2-4 frames, anywhere away from the border, on top of the mover
    duration = 2 + draw.integers(0, 3, (n,)) + longer
    flash_at = draw.integers(4, frames - 8 - longer, (n,))
    start[:, FLASH] = draw.uniform(size * 0.15, size * 0.85, (n, 2))
    colours[:, FLASH] = colour_ids([*FLASH_COLOURS, FLASH_COLOURS[0]], device)[flash_answer][:, None]  # none: slot inactive
    appear[:, FLASH], vanish[:, FLASH] = flash_at, flash_at + duration

    # small objects: 1-4 in distinct quadrants, away from the centre object, together for 16 frames
    quadrant = draw.permutation(n, 4)
    offset = draw.uniform(size * 0.15, size * 0.4, (n, 4, 2))
    start[:, SMALL0:] = torch.stack([quadrant % 2, quadrant // 2], -1).float() * (size / 2) \
        + torch.where(torch.stack([quadrant % 2, quadrant // 2], -1) > 0, offset, size / 2 - offset)
    small_frames = SMALL_FRAMES + longer
    small_at = draw.integers(4, frames - small_frames - 4, (n,))
    appear[:, SMALL0:], vanish[:, SMALL0:] = small_at[:, None], small_at[:, None] + small_frames

    active = torch.ones(n, k, dtype=torch.bool, device=device)
    active[:, FLASH] = flash_answer < 3
    active[:, SMALL0:] = torch.arange(4, device=device)[None] < small_count[:, None]
    scene = LongScene(active, shape, colours, change_frames, appear, vanish, start, orbit_radius, orbit_phase,
                      orbit_speed, radius, flash_frame, torch.full_like(flash_frame, lit_frames))
    return scene, ask_long(scene, qtype, frames, size)


def object_centres(scene: LongScene, t: torch.Tensor) -> torch.Tensor:
    """Object centres at frames ``t`` (float [T]): [N, K, T, 2]."""
    angle = scene.orbit_phase[..., None] + scene.orbit_speed[..., None] * t
    circle = torch.stack([angle.cos(), angle.sin()], -1) * scene.orbit_radius[..., None, None]
    return scene.start[:, :, None, :] + circle


def ask_long(scene: LongScene, qtype: torch.Tensor, frames: int, size: int) -> Questions:
    """Questions of type ``qtype`` [N] about ``scene``, every answer read off the scene."""
    n = len(qtype)
    device, rows = qtype.device, torch.arange(n, device=qtype.device)
    fixed = torch.arange(4, device=device).expand(n, 4)
    flash_colour = scene.colours[:, FLASH, 0]
    flash_answer = torch.where(scene.active[:, FLASH], (flash_colour[:, None] == colour_ids(FLASH_COLOURS, device)).long().argmax(1), 3)
    changes = (scene.change_frames[:, CENTRE] < frames).sum(1)
    early = torch.where(scene.appear[:, CORNER_A] <= scene.appear[:, CORNER_B], CORNER_A, CORNER_B)
    first_colour = (scene.colours[rows, early, 0][:, None] == colour_ids(CORNER_COLOURS, device)).long().argmax(1)
    small_count = scene.active[:, SMALL0:].sum(1)
    small_where = quadrant_of(scene.start[:, SMALL0, 0], scene.start[:, SMALL0, 1], size)
    at_flash = _mover_at(scene, scene.flash_frame)
    mover_quadrant = quadrant_of(at_flash[:, 0], at_flash[:, 1], size)
    quadrants = O_QUADRANT + fixed
    cases = {  # type: (question phrase, options, answer)
        "flash": (_Q0, torch.tensor([O_FLASH, O_FLASH + 1, O_FLASH + 2, O_NONE], device=device).expand(n, 4), flash_answer),
        "changes": (_Q0 + 1, O_DIGIT + fixed, changes),
        "first": (_Q0 + 2, O_COLOUR + fixed, first_colour),
        "small_count": (_Q0 + 3, O_DIGIT + 1 + fixed, small_count - 1),
        "small_where": (_Q0 + 4, quadrants, small_where),
        "when_flash": (_Q0 + 5, quadrants, mover_quadrant),
    }
    return pick_questions(qtype, cases, LONG_QTYPES)


def _mover_at(scene: LongScene, frame: torch.Tensor) -> torch.Tensor:
    """The mover's centre at one frame per clip: [N, 2]."""
    angle = scene.orbit_phase[:, MOVER] + scene.orbit_speed[:, MOVER] * frame.float()
    return scene.start[:, MOVER] + torch.stack([angle.cos(), angle.sin()], -1) * scene.orbit_radius[:, MOVER, None]


def valid_long_questions(scene: LongScene) -> torch.Tensor:
    """bool [N, 6]: the types a scene answers (all; ``small_where`` with exactly one small object)."""
    valid = torch.ones(len(scene.active), len(LONG_QTYPES), dtype=torch.bool, device=scene.active.device)
    valid[:, LONG_QTYPES.index("small_where")] = scene.active[:, SMALL0:].sum(1) == 1
    return valid


EXTRA_TURNS = 4  # other types every clip answers (``small_where`` needs exactly one small object)


def extra_long_questions(scene: LongScene, first: Questions, turns: int, frames: int, size: int,
                         seed: int) -> list[Questions]:
    """``turns`` (at most 4) more questions per clip, of distinct types the clip answers, none the first's.

    A type asked twice in one conversation could be answered by copying the earlier answer, a
    shortcut that lowers the training loss without looking at the clip (long run C)."""
    if not 0 <= turns <= EXTRA_TURNS:
        raise ValueError(f"the long task has {EXTRA_TURNS} more distinct questions per clip, asked for {turns}")
    draw = _Draw(seed, scene.active.device)
    allowed = valid_long_questions(scene).scatter(1, first.qtype[:, None], False)
    order = draw.ranked(allowed)
    return [ask_long(scene, order[:, j], frames, size) for j in range(turns)]


def render_long(scene: LongScene, frames: int, size: int) -> torch.Tensor:
    """Draw every clip: uint8 [N, T, size, size, 3], batched over clips, objects and frames."""
    device = scene.start.device
    t = torch.arange(frames, device=device, dtype=torch.float32)
    centre = object_centres(scene, t)  # [N,K,T,2]
    axis = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    dx = axis[None, None, None, None, :] - centre[..., 0, None, None]
    dy = axis[None, None, None, :, None] - centre[..., 1, None, None]
    mask = shape_masks(scene.shape[:, :, None, None, None], dx, dy, scene.radius[:, :, None, None, None])
    frame = torch.arange(frames, device=device)
    visible = scene.active[:, :, None] & (frame >= scene.appear[:, :, None]) & (frame < scene.vanish[:, :, None])
    mask = mask & visible[..., None, None]
    changed = (frame[None, None, None, :] >= scene.change_frames[..., None]).sum(2)  # [N,K,T] changes so far
    colour_idx = scene.colours.gather(2, changed)
    lit = (frame[None] >= scene.flash_frame[:, None]) & (frame[None] < (scene.flash_frame + scene.lit_frames)[:, None])  # [N,T]
    background = torch.where(lit[..., None], torch.tensor(FLASH_BACKGROUND, device=device),
                             torch.tensor(BACKGROUND, device=device)).to(torch.uint8)[:, :, None, :]
    return composite(mask, colour_idx, background, LONG_COLOURS)
