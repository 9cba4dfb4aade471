"""Per-scale controls: cfg, tau and subject strength for coarse and fine scales, or explicit lists."""
from __future__ import annotations

from comfy_api.latest import io, ui

from var_core import defaults
from var_core.schedules import RESOLUTION_LABELS, per_scale, scale_schedule
from var_core.tuning import ScaleWeights

from .types import (ASPECTS, CATEGORY, DEFAULT_ASPECT, DEFAULT_RESOLUTION, RESOLUTIONS, Schedule, aspect, preset,
                    zero_means)


ALL_PRESETS = list(RESOLUTION_LABELS.values())
# the same ranges as the scalar widgets
RANGES = {"cfg": (0.0, 30.0), "tau": (0.0, 5.0), "strength": (0.0, 2.0)}
# 0 on a cfg or tau widget or in a list: the loaded model's own value (Infinity.sampling_defaults), set by the sampler
OWN = f"0 = the model's own ({defaults.describe('sampling', 'cfg')})"
OWN_TAU = f"0 = the model's own ({defaults.describe('sampling', 'tau')})"


def coarse_fine(coarse: float, fine: float, switch: int, num_scales: int) -> list[float]:
    """``coarse`` on scales 0..switch-1, ``fine`` from scale ``switch`` on."""
    return [float(coarse) if k < switch else float(fine) for k in range(num_scales)]


def parse_list(text: str, name: str, key: str | None = None) -> list[float] | None:
    text = text.strip()
    if not text:
        return None
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: write numbers separated by commas, e.g. 1,1,1,0.5 (got {text!r}).") from None
    if key is not None:
        lo, hi = RANGES[key]
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            raise ValueError(f"{name}: every value must be between {lo:g} and {hi:g}, as on the {key} widgets; got "
                             f"{', '.join(f'{v:g}' for v in bad)}.")
    return values


def shown(v: float, key: str) -> str:
    return "own" if v == 0 and key in ("cfg", "tau") else f"{v:g}"


def listed(values: list[float]) -> str:
    """'4' for one value on every scale, '4,4,1' for values that differ."""
    return f"{values[0]:g}" if len(set(values)) == 1 else ",".join(f"{v:g}" for v in values)


def resolve(schedule: dict | None, key: str, default, num_scales: int):
    """The per-scale list for ``key`` at ``num_scales`` scales (``default`` when the schedule leaves it out)."""
    if not schedule or key not in schedule:
        return default
    value = schedule[key]
    if isinstance(value, tuple):
        return coarse_fine(*value, schedule["switch"], num_scales)
    return per_scale(value, num_scales, f"The {key} list")


def unused_fine_values(schedule: dict | None, num_scales: int) -> list[str]:
    """A warning when the schedule's switch lies beyond the sampled scales while its fine values differ from the
    coarse ones (they would never apply)."""
    if not schedule or schedule["switch"] < num_scales:
        return []
    differ = [k for k in ("cfg", "tau", "strength") if isinstance(schedule.get(k), tuple)
              and schedule[k][0] != schedule[k][1]]
    return [f"warning: the schedule's switch {schedule['switch']} is beyond these {num_scales} scales: its fine "
            f"{', '.join(differ)} never apply (set switch below {num_scales})"] if differ else []


class ScaleSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_ScaleSchedule", display_name="Per-Scale Schedule", category=f"{CATEGORY}/sampling",
            description="Per-scale cfg, tau and subject strength: 'coarse' values on the scales before 'switch', "
                        "'fine' values after, or explicit comma-separated lists (one value per scale). Coarse "
                        "scales carry layout and a subject's identity; fine scales carry texture.",
            inputs=[
                io.Combo.Input("resolution", options=RESOLUTIONS, default=DEFAULT_RESOLUTION,
                               tooltip="Only used to show the scales and check the lists here; the sampler's own "
                                       "resolution counts. auto: the lists are checked by the sampler."),
                io.Combo.Input("aspect_ratio", options=ASPECTS, default=DEFAULT_ASPECT,
                               tooltip="Only used to show the token grid of each scale."),
                io.Int.Input("switch", default=8, min=0, max=16, tooltip="First scale that uses the 'fine' values."),
                zero_means(io.Float.Input("cfg_coarse", default=0.0, min=0.0, max=30.0, step=0.1,
                                          tooltip=f"Guidance on coarse scales; {OWN}.")),
                zero_means(io.Float.Input("cfg_fine", default=0.0, min=0.0, max=30.0, step=0.1,
                                          tooltip=f"Guidance on fine scales; {OWN}.")),
                zero_means(io.Float.Input("tau_coarse", default=0.0, min=0.0, max=5.0, step=0.01,
                                          tooltip=f"Temperature on coarse scales; {OWN_TAU}.")),
                zero_means(io.Float.Input("tau_fine", default=0.0, min=0.0, max=5.0, step=0.01,
                                          tooltip=f"Temperature on fine scales; {OWN_TAU}.")),
                io.Float.Input("strength_coarse", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Multiplier of every applied subject's strength on coarse scales (weights "
                                       "and placeholder, see Apply Subject)."),
                io.Float.Input("strength_fine", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Multiplier of every applied subject's strength on fine scales."),
                io.String.Input("cfg_list", default="", optional=True,
                                tooltip="Optional: one cfg per scale, comma separated (overrides coarse/fine)."),
                io.String.Input("tau_list", default="", optional=True,
                                tooltip="Optional: one tau per scale, comma separated (overrides coarse/fine)."),
                io.String.Input("strength_list", default="", optional=True,
                                tooltip="Optional: one strength multiplier per scale (overrides coarse/fine)."),
            ],
            outputs=[Schedule.Output(display_name="schedule", tooltip="Connect to the sampler's schedule input.")])

    @classmethod
    def execute(cls, resolution, aspect_ratio, switch, cfg_coarse, cfg_fine, tau_coarse, tau_fine, strength_coarse,
                strength_fine, cfg_list="", tau_list="", strength_list=""):
        schedule = {"switch": switch}
        for key, coarse, fine, text in (("cfg", cfg_coarse, cfg_fine, cfg_list), ("tau", tau_coarse, tau_fine, tau_list),
                                        ("strength", strength_coarse, strength_fine, strength_list)):
            schedule[key] = parse_list(text or "", f"{key}_list", key) or (coarse, fine)
        pn = preset(resolution)
        if pn is None:  # auto: the sampler's model decides the scales; say what each resolution takes
            lines = ["scales: the sampler's resolution (auto); a list takes one value per scale: "
                     + ", ".join(f"{len(scale_schedule(1.0, p))} at {p}" for p in ALL_PRESETS)]
            for key in ("cfg", "tau", "strength"):
                value = schedule[key]
                lines.append(f"{key}: " + (f"{shown(value[0], key)} before scale {switch}, {shown(value[1], key)} "
                                           f"from it" if isinstance(value, tuple)
                                           else ", ".join(shown(v, key) for v in value)))
            lines.append("training loss weights (ARBooth): coarse on the first "
                         + ", ".join(f"{ScaleWeights().coarse_scales(n)} of {n}" for n in
                                     sorted({len(scale_schedule(1.0, p)) for p in ALL_PRESETS})) + " scales")
            return io.NodeOutput(schedule, ui=ui.PreviewText("\n".join(lines)))
        scales = scale_schedule(aspect(aspect_ratio), pn)
        K = len(scales)
        lines = [f"{K} scales at {pn}: " + " ".join(f"{h}x{w}" for h, w in scales)]
        if switch >= K:
            lines.append(f"switch {switch} >= {K} scales: every scale uses the coarse values here")
        for key in ("cfg", "tau", "strength"):
            lines.append(f"{key}: " + ", ".join(shown(v, key) for v in resolve(schedule, key, None, K)))
        weights = ScaleWeights().scale_weights(scales)  # what Train Subject's ARBooth weighting uses here
        lines.append("training loss weights (ARBooth): " + ", ".join(f"{v:g}" for v in weights))
        return io.NodeOutput(schedule, ui=ui.PreviewText("\n".join(lines)))


NODES = [ScaleSchedule]
