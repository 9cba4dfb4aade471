"""Scale schedules: which (h, w) token grid each autoregressive step produces, per aspect ratio and resolution.

Infinity defines 15 aspect-ratio templates (h/w). Each has a 13-scale schedule at 1024² ("1M"); the smaller presets
are its first 7, 10 or 12 scales. Ratios below 1 are the transposes of their reciprocals. Latent grids are in VAE
tokens: one token is 16×16 pixels.
"""
from __future__ import annotations

VAE_STRIDE = 16

# Full 1M schedules of the templates with h >= w, as (h, w) per scale.
_TALL_1M: dict[str, list[tuple[int, int]]] = {
    "1.0": [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40),
            (48, 48), (64, 64)],
    "1.25": [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36),
             (55, 44), (70, 56)],
    "1.333": [(1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36),
              (60, 45), (72, 54)],
    "1.5": [(1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32),
            (63, 42), (78, 52)],
    "1.75": [(1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32),
             (70, 40), (84, 48)],
    "2.0": [(1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30),
            (74, 37), (90, 45)],
    "2.5": [(1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26),
            (80, 32), (100, 40)],
    "3.0": [(1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24),
            (90, 30), (111, 37)],
}

# Resolution presets (pn): how many leading scales of the 1M schedule they use.
PRESETS: dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
# Not one of Infinity's: 128² (5 scales), the toy world's resolution (the embedded model, var_core/embedded.py).
TOY_PRESETS: dict[str, int] = {"0.015M": 5}
PRESET_ALIASES = {"128": "0.015M", "256": "0.06M", "512": "0.25M", "768": "0.60M", "1024": "1M"}


def _wide_key(tall_key: str) -> str:
    # The reference names 1/r by truncating to three decimals: 1/1.5 -> "0.666", 1/1.333 -> "0.75".
    value = 1.0 / float(tall_key)
    return repr(int(value * 1000) / 1000)


TEMPLATES_1M: dict[str, list[tuple[int, int]]] = {}
for _key, _scales in _TALL_1M.items():
    TEMPLATES_1M[_key] = _scales
    if _key != "1.0":
        TEMPLATES_1M[_wide_key(_key)] = [(w, h) for h, w in _scales]

# The reference order: 1.0, then each ratio followed by its reciprocal.
TEMPLATE_KEYS: list[str] = list(TEMPLATES_1M)
TEMPLATE_VALUES: list[float] = [float(k) for k in TEMPLATE_KEYS]


def aspect_label(key: str) -> str:
    """How the nodes show a template: '0.75 (h/w) 1184×896' (h/w, then width×height at 1M)."""
    h, w = TEMPLATES_1M[key][-1]
    return f"{key} (h/w) {w * VAE_STRIDE}×{h * VAE_STRIDE}"


def resolution_label(pn: str) -> str:
    """How the nodes show a preset: '0.25M (512²)'."""
    return f"{pn} ({(TEMPLATES_1M['1.0'][(PRESETS.get(pn) or TOY_PRESETS[pn]) - 1][0]) * VAE_STRIDE}²)"


ASPECT_LABELS = {aspect_label(k): k for k in TEMPLATE_KEYS}
RESOLUTION_LABELS = {resolution_label(pn): pn for pn in (*TOY_PRESETS, *PRESETS)}  # the toy preset first


def resolve_preset(pn: str) -> str:
    """A preset name ("0.25M"), its label ("0.25M (512²)") or pixel alias ("512") -> the preset name; else refused."""
    pn = str(pn)
    pn = RESOLUTION_LABELS.get(pn, PRESET_ALIASES.get(pn, pn))
    if pn not in PRESETS and pn not in TOY_PRESETS:
        raise ValueError(f"Unknown resolution preset {pn!r}; choose one of {list(PRESETS)} "
                         f"(or {list(PRESET_ALIASES)} as pixel sizes).")
    return pn


def nearest_template(h_div_w: float) -> str:
    """Key of the template whose h/w is nearest (absolute difference) to ``h_div_w``, as the reference picks it."""
    h_div_w = float(h_div_w)
    if not h_div_w > 0:
        raise ValueError(f"Aspect ratio h/w must be positive, got {h_div_w}.")
    return min(TEMPLATE_KEYS, key=lambda k: abs(float(k) - h_div_w))


def template_key(h_div_w) -> str:
    """Accept a template key ("1.333"), its label (aspect_label), a ratio (1.33), or "h:w" like "4:3"; anything
    else is refused (the one parser of aspect ratios: the CLI, the nodes and the library use it)."""
    if isinstance(h_div_w, str):
        text = h_div_w.strip()
        if text in TEMPLATES_1M:
            return text
        if h_div_w in ASPECT_LABELS:
            return ASPECT_LABELS[h_div_w]
        if ":" in text:
            h, w = text.split(":", 1)
            try:
                return nearest_template(float(h) / float(w))
            except (ValueError, ZeroDivisionError):
                pass
        try:
            h_div_w = float(text)
        except ValueError:
            raise ValueError(f"Unknown aspect ratio {text!r}: give h/w as a number (e.g. 1.333), 'h:w' (e.g. 4:3) "
                             f"or a template key {TEMPLATE_KEYS}.") from None
    return nearest_template(h_div_w)


def scale_schedule(h_div_w=1.0, pn: str = "1M") -> list[tuple[int, int]]:
    """The (h, w) token grid of every scale for the template nearest to ``h_div_w`` at preset ``pn``."""
    pn = resolve_preset(pn)
    return list(TEMPLATES_1M[template_key(h_div_w)][:PRESETS.get(pn) or TOY_PRESETS[pn]])


def rope_grid(schedule) -> tuple[int, int]:
    """RoPE positions are normalised to the last scale of the template's 1M schedule, whatever preset is used."""
    schedule = [tuple(s) for s in schedule]
    for scales in TEMPLATES_1M.values():
        if scales[:len(schedule)] == schedule:
            return scales[-1]
    # A custom schedule: normalise to its own last scale.
    return schedule[-1]


def pixel_size(schedule) -> tuple[int, int]:
    h, w = schedule[-1]
    return h * VAE_STRIDE, w * VAE_STRIDE


def scale_starts(schedule) -> list[int]:
    """Sequence position of the first token of every scale (tokens are row-major within a scale)."""
    starts, total = [], 0
    for h, w in schedule:
        starts.append(total)
        total += h * w
    return starts


def num_tokens(schedule) -> int:
    return sum(h * w for h, w in schedule)


def per_scale(value, num_scales: int, name: str) -> list[float]:
    """A number means the same value at every scale; a list must give exactly one value per scale (a list made
    for another resolution is refused, not cut or stretched)."""
    if isinstance(value, (int, float)):
        return [float(value)] * num_scales
    values = [float(v) for v in value]
    if len(values) != num_scales:
        raise ValueError(f"{name} has {len(values)} values but this resolution has {num_scales} scales: give one "
                         f"value per scale.")
    return values
