// Shows on each VARBooth node the text it returns (ui.text): Train Subject's summary and checkpoint path, the
// sampler's scales and its warnings about placeholder tokens, the Per-Scale Schedule listing, saved paths. This
// frontend draws ui.text for no custom node, so without this a warning would reach the browser and go unseen.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NAME = "varbooth_text";
const PADDING = 14; // the text box's inner padding and border, top and bottom together

// The height the text needs in a box as wide as the node: its lines, each wrapped at the box's width.
function neededHeight(el, text, width) {
  const style = getComputedStyle(el);
  const size = parseFloat(style.fontSize) || 12;
  const lineHeight = parseFloat(style.lineHeight) || 1.25 * size;
  const ctx = (neededHeight.ctx ??= document.createElement("canvas").getContext("2d"));
  ctx.font = `${size}px ${style.fontFamily || "monospace"}`;
  const available = Math.max(60, width - 30);
  const rows = text.split("\n").reduce((n, line) => n + Math.max(1, Math.ceil(ctx.measureText(line).width / available)), 0);
  return Math.ceil(rows * lineHeight + PADDING);
}

function showText(node, text) {
  let widget = node.widgets?.find((w) => w.name === NAME);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, NAME, ["STRING", { multiline: true }], app).widget;
    widget.inputEl.readOnly = true;
    widget.inputEl.classList.add("varbooth-text");
    widget.inputEl.style.opacity = 0.85;
    // output, not input: never part of the prompt (it would change the cache key) or of the saved widget values
    widget.options = { ...(widget.options || {}), serialize: false };
    widget.serialize = false;
  }
  widget.value = text;
  // the box grows to its text (a multiline box otherwise keeps its ~42 px minimum and cuts the text off)
  const height = neededHeight(widget.inputEl, text, node.size[0]);
  widget.options.getMinHeight = () => height;
  widget.options.getMaxHeight = () => Math.max(height, 600);
  const [w, h] = node.computeSize();
  node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
  node.setDirtyCanvas?.(true, true);
}

// A number widget whose 0 stands for a word (nodes/types.py zero_means: "auto (the model's own)", "none") shows the
// word while its value is 0, instead of a magic 0; the value saved and sent stays 0.
function showZeroAs(widget, word) {
  let base;
  for (let p = Object.getPrototypeOf(widget); p && !base; p = Object.getPrototypeOf(p)) {
    base = Object.getOwnPropertyDescriptor(p, "_displayValue");
  }
  Object.defineProperty(widget, "_displayValue", {
    configurable: true,
    get() {
      return Number(this.value) === 0 && !this.computedDisabled ? word : base?.get ? base.get.call(this) : String(this.value);
    },
  });
}

app.registerExtension({
  name: "varbooth.nodeText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("VARBooth_")) return;
    const zeroWords = {};
    for (const group of ["required", "optional"]) {
      for (const [name, spec] of Object.entries(nodeData.input?.[group] || {})) {
        if (spec?.[1]?.varbooth_zero) zeroWords[name] = spec[1].varbooth_zero;
      }
    }
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const out = onNodeCreated?.apply(this, arguments);
      for (const widget of this.widgets || []) {
        if (zeroWords[widget.name]) showZeroAs(widget, zeroWords[widget.name]);
      }
      return out;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (text == null || (Array.isArray(text) && text.length === 0)) return;
      showText(this, Array.isArray(text) ? text.join("\n") : String(text));
    };
  },
});
