// ComfyUI-GenDeg: DOM widgets used by gendeg.js (comparison slider, stats, type + intensity picker).
// Plain DOM, no framework. Every widget is added LAST on a node and is never serialized,
// so saved workflows (widgets_values) are exactly what they would be without this file.

import { api } from "../../scripts/api.js";

const STYLE_ID = "gendeg-style";

export function ensureStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = `
.gendeg-compare { position: relative; width: 100%; height: 100%; min-height: 120px; overflow: hidden;
  cursor: ew-resize; user-select: none; background: #111; border-radius: 4px; }
.gendeg-compare img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain;
  pointer-events: none; }
.gendeg-compare .gendeg-after { clip-path: inset(0 0 0 50%); }
.gendeg-compare .gendeg-handle { position: absolute; top: 0; bottom: 0; left: 50%; width: 2px;
  background: #fff; box-shadow: 0 0 3px #000; pointer-events: none; }
.gendeg-compare .gendeg-label { position: absolute; top: 2px; padding: 0 4px; font: 10px sans-serif;
  color: #fff; background: rgba(0,0,0,.55); border-radius: 3px; pointer-events: none; }
.gendeg-compare .gendeg-label.before { left: 2px; }
.gendeg-compare .gendeg-label.after { right: 2px; }
.gendeg-compare .gendeg-pager { position: absolute; bottom: 2px; right: 2px; font: 10px sans-serif;
  color: #fff; background: rgba(0,0,0,.55); border-radius: 3px; padding: 0 4px; cursor: pointer; }
.gendeg-stats { font: 11px/16px monospace; color: var(--input-text, #ddd); padding: 2px 4px;
  white-space: pre; overflow: auto; box-sizing: border-box; }
.gendeg-picker { display: flex; flex-direction: column; gap: 3px; padding: 2px 0; }
.gendeg-picker .gendeg-row { display: flex; flex-wrap: wrap; gap: 3px; }
.gendeg-picker button { font: 10px sans-serif; padding: 1px 5px; border-radius: 8px; cursor: pointer;
  border: 1px solid #666; background: #2a2a2a; color: #ccc; }
.gendeg-picker button.active { background: #4a6fa5; color: #fff; border-color: #8ab; }
`;
  document.head.appendChild(style);
}

/** URL of an image ref {filename, subfolder, type} as ComfyUI's /view serves it. */
export function viewUrl(ref) {
  const params = new URLSearchParams({
    filename: ref.filename ?? "",
    subfolder: ref.subfolder ?? "",
    type: ref.type ?? "temp",
  });
  const path = `/view?${params.toString()}`;
  return typeof api?.apiURL === "function" ? api.apiURL(path) : `/api${path}`;
}

function noValue() {
  return { serialize: false, hideOnZoom: false, getValue: () => undefined, setValue: () => {} };
}

function markUnserialized(widget) {
  try {
    if (widget && widget.serialize !== false) widget.serialize = false;
  } catch {
    /* a read-only getter that already says what options.serialize says */
  }
}

/** Graph nodes, whichever name this frontend keeps them under. */
function graphNodes(graph) {
  return graph?._nodes ?? graph?.nodes ?? [];
}

function titleHeight() {
  return globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
}

/**
 * A node grew (a display widget arrived after a run): move the nodes it now covers down, so
 * nothing overlaps. Only nodes that were wholly below it (and overlap it horizontally) move,
 * by just enough to keep a small gap; nodes they cover in turn move too.
 */
export function makeRoom(node, oldBottom, gap = 12) {
  const nodes = graphNodes(node.graph);
  const moved = new Set([node]);
  const queue = [[node, oldBottom]];
  while (queue.length) {
    const [above, aboveOldBottom] = queue.shift();
    const bottom = above.pos[1] + above.size[1];
    for (const other of nodes) {
      if (moved.has(other) || !other.pos || !other.size) continue;
      const overlapsX = other.pos[0] < above.pos[0] + above.size[0] && above.pos[0] < other.pos[0] + other.size[0];
      const top = other.pos[1] - titleHeight();
      if (!overlapsX || top < aboveOldBottom - 1) continue; // beside it, or already overlapping before
      const shift = bottom + gap - top;
      if (shift <= 0) continue;
      const otherOldBottom = other.pos[1] + other.size[1];
      other.pos[1] += shift;
      moved.add(other);
      queue.push([other, otherOldBottom]);
    }
  }
  return moved.size - 1;
}

/**
 * Fit a node's height to its widgets after one of ours was added or changed. The width stays
 * what it was before (``width``, measured before the change; at least ``minWidth``): a long title
 * must not make the node wider and cover its right-hand neighbour. Nodes below are moved down.
 */
function resizeNode(node, minWidth, extraHeight, width) {
  try {
    const oldBottom = (node.pos?.[1] ?? 0) + (node.size?.[1] ?? 0);
    const size = node.computeSize?.() ?? node.size;
    const w = Math.max(width ?? node.size?.[0] ?? 0, minWidth);
    node.setSize?.([w, Math.max(node.size?.[1] ?? 0, size[1] + (extraHeight ?? 0))]);
    if (node.graph && node.pos && node.size && node.pos[1] + node.size[1] > oldBottom) makeRoom(node, oldBottom);
    node.setDirtyCanvas?.(true, true);
  } catch (err) {
    console.debug("[GenDeg] could not resize node", err);
  }
}

/** Find or add the before/after comparison widget of a node. */
export function compareWidget(node) {
  const existing = node.widgets?.find((w) => w.name === "gendeg_compare");
  if (existing) return existing;
  if (typeof node.addDOMWidget !== "function") return null;
  ensureStyle();
  const el = document.createElement("div");
  el.className = "gendeg-compare";
  el.dataset.gendegNode = String(node.id);
  const before = document.createElement("img");
  before.className = "gendeg-before";
  const after = document.createElement("img");
  after.className = "gendeg-after";
  const handle = document.createElement("div");
  handle.className = "gendeg-handle";
  const lb = document.createElement("span");
  lb.className = "gendeg-label before";
  lb.textContent = "before";
  const la = document.createElement("span");
  la.className = "gendeg-label after";
  la.textContent = "after";
  const pager = document.createElement("span");
  pager.className = "gendeg-pager";
  pager.style.display = "none";
  el.append(before, after, handle, lb, la, pager);

  const state = { pairs: [], index: 0, split: 0.5 };
  const setSplit = (fraction) => {
    state.split = Math.min(1, Math.max(0, fraction));
    const pct = (state.split * 100).toFixed(1);
    after.style.clipPath = `inset(0 0 0 ${pct}%)`;
    handle.style.left = `${pct}%`;
    el.dataset.split = pct;
  };
  const show = () => {
    const pair = state.pairs[state.index];
    if (!pair) return;
    before.src = viewUrl(pair.before);
    after.src = viewUrl(pair.after);
    pager.style.display = state.pairs.length > 1 ? "" : "none";
    pager.textContent = `${state.index + 1}/${state.pairs.length}`;
  };
  el.addEventListener("pointermove", (e) => {
    const rect = el.getBoundingClientRect();
    if (rect.width > 0) setSplit((e.clientX - rect.left) / rect.width);
  });
  pager.addEventListener("pointerdown", (e) => {
    e.stopPropagation();
    if (state.pairs.length) {
      state.index = (state.index + 1) % state.pairs.length;
      show();
    }
  });
  setSplit(0.5);

  const width = node.size?.[0];
  const widget = node.addDOMWidget("gendeg_compare", "gendeg_compare", el, {
    ...noValue(),
    getMinHeight: () => 160,
    getHeight: () => 220,
  });
  markUnserialized(widget);
  widget.gendegSetPairs = (pairs) => {
    state.pairs = Array.isArray(pairs) ? pairs.filter((p) => p && p.before && p.after) : [];
    state.index = 0;
    show();
  };
  widget.gendegSetSplit = setSplit;
  resizeNode(node, 260, 0, width);
  return widget;
}

/** Find or add the stats text widget of a node, showing ``rows`` (sized for them from the start). */
export function statsWidget(node, rows) {
  return infoWidget(node, formatStats(rows));
}

/** Find or add the text widget of a node (stats and messages), showing ``text``. */
export function infoWidget(node, text) {
  const existing = node.widgets?.find((w) => w.name === "gendeg_stats");
  if (existing) {
    existing.gendegSetText?.(text);
    return existing;
  }
  if (typeof node.addDOMWidget !== "function") return null;
  ensureStyle();
  const el = document.createElement("div");
  el.className = "gendeg-stats";
  el.dataset.gendegNode = String(node.id);
  el.textContent = text;
  let lines = Math.max(1, text.split("\n").length);
  const height = () => 16 * lines + 22; // + the margins the editor takes off a DOM widget
  const width = node.size?.[0];
  const widget = node.addDOMWidget("gendeg_stats", "gendeg_stats", el, {
    ...noValue(),
    getMinHeight: height,
    getMaxHeight: height,
    getHeight: height,
  });
  markUnserialized(widget);
  widget.computeSize = (width) => [width ?? node.size?.[0] ?? 200, height()];
  widget.gendegSetText = (newText) => {
    el.textContent = newText;
    el.title = newText; // long lines (a report path) scroll; the tooltip shows them whole
    lines = Math.max(1, newText.split("\n").length);
    resizeNode(node, 200, 0);
  };
  widget.gendegSetRows = (newRows) => widget.gendegSetText(formatStats(newRows));
  el.title = text;
  resizeNode(node, 200, 0, width);
  return widget;
}

const SYMBOLS = { mu: "μ", sigma: "σ", mu_target: "μ*", sigma_target: "σ*" };

/** One number for display: intensities always with 4 decimals, whole numbers (counts) as they are. */
export function formatNumber(key, value) {
  if (typeof value !== "number") return String(value);
  if (!(key in SYMBOLS) && Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toFixed(4);
}

/** "μ 0.1234  σ 0.0567" per image (at most 4 lines); counts as whole numbers ("passed 2  dropped 1"). */
export function formatStats(rows) {
  if (!Array.isArray(rows) || rows.length === 0) return "";
  const lines = rows.slice(0, 4).map((row, i) => {
    const parts = Object.entries(row ?? {}).map(([k, v]) => `${SYMBOLS[k] ?? k} ${formatNumber(k, v)}`);
    return (rows.length > 1 ? `#${i} ` : "") + parts.join("  ");
  });
  if (rows.length > 4) lines.push(`… ${rows.length - 4} more`);
  return lines.join("\n");
}

/** The text a node shows for its ui output: its stats, then its messages (``ui.text``). */
export function infoText(output) {
  const parts = [];
  if (Array.isArray(output?.gendeg_stats) && output.gendeg_stats.length) parts.push(formatStats(output.gendeg_stats));
  if (Array.isArray(output?.text)) parts.push(...output.text.filter((t) => typeof t === "string" && t));
  return parts.join("\n");
}

// --- type + intensity picker --------------------------------------------------------

export const LEVELS = ["light", "medium", "heavy"];

// BEGIN SYNTH_MU_PRESETS: GenDeg μ per type and level, a copy of core/synth/plan.py PRESETS
// (tests/test_studio.py keeps the two equal). GenDegCondition has its own `preset` input
// (per-type μ and σ from GenDeg's training data), which the strip sets instead.
export const SYNTH_MU_PRESETS = {"haze": {"light": 0.066, "medium": 0.109, "heavy": 0.168}, "rain": {"light": 0.029, "medium": 0.049, "heavy": 0.091}, "snow": {"light": 0.017, "medium": 0.049, "heavy": 0.095}, "motion_blur": {"light": 0.016, "medium": 0.029, "heavy": 0.045}, "low_light": {"light": 0.121, "medium": 0.197, "heavy": 0.246}, "raindrop": {"light": 0.023, "medium": 0.031, "heavy": 0.064}, "rain+haze": {"light": 0.133, "medium": 0.177, "heavy": 0.233}, "snow+haze": {"light": 0.118, "medium": 0.159, "heavy": 0.206}, "jpeg": {"light": 0.006, "medium": 0.01, "heavy": 0.018}, "noise": {"light": 0.02, "medium": 0.05, "heavy": 0.09}};
// END SYNTH_MU_PRESETS

const TYPE_NAMES = ["degradation", "type"];
const SHORT = {
  haze: "haze",
  rain: "rain",
  snow: "snow",
  motion_blur: "blur",
  low_light: "dark",
  raindrop: "drops",
  "rain+haze": "rain+haze",
  "snow+haze": "snow+haze",
  jpeg: "jpeg",
  noise: "noise",
};

function findWidget(node, names) {
  for (const name of names) {
    const w = node.widgets?.find((x) => x.name === name);
    if (w) return w;
  }
  return null;
}

function comboValues(widget) {
  const values = widget?.options?.values;
  const list = typeof values === "function" ? values() : values;
  return Array.isArray(list) ? list : [];
}

function setWidget(node, widget, value) {
  if (!widget) return;
  const o = widget.options ?? {};
  if (typeof value === "number") {
    if (typeof o.min === "number") value = Math.max(o.min, value);
    if (typeof o.max === "number") value = Math.min(o.max, value);
  }
  widget.value = value;
  try {
    widget.callback?.(widget.value, globalThis.app?.canvas, node);
  } catch (err) {
    console.debug("[GenDeg] widget callback failed", err);
  }
  node.setDirtyCanvas?.(true, true);
  node.graph?.setDirtyCanvas?.(true, true);
}

/**
 * How a node's intensity follows a level:
 * - a `preset` combo (GenDegCondition): set it to the level; the node looks up μ, σ per type;
 * - a `mu` widget (GenDegSynthesize): μ from SYNTH_MU_PRESETS for the current type, and
 *   `intensity_mode` switched to "mu".
 */
function intensityKind(node) {
  const preset = node.widgets?.find((w) => w.name === "preset");
  if (preset && LEVELS.every((l) => comboValues(preset).includes(l))) return "preset";
  if (node.widgets?.find((w) => w.name === "mu")) return "mu";
  return null;
}

/** μ of a level for a type, or undefined. */
export function synthMu(type, level) {
  return SYNTH_MU_PRESETS[type]?.[level];
}

/** Which level the node's intensity widgets currently match, or "". */
export function currentLevel(node) {
  const kind = intensityKind(node);
  if (kind === "preset") {
    const v = String(findWidget(node, ["preset"]).value);
    return LEVELS.includes(v) ? v : "";
  }
  if (kind === "mu") {
    const mode = findWidget(node, ["intensity_mode"]);
    if (mode && String(mode.value) !== "mu") return "";
    const type = String(findWidget(node, TYPE_NAMES)?.value ?? "");
    const mu = Number(findWidget(node, ["mu"]).value);
    return LEVELS.find((l) => synthMu(type, l) !== undefined && Math.abs(synthMu(type, l) - mu) < 1e-9) ?? "";
  }
  return "";
}

/** Set a node's intensity to a level (see intensityKind). */
export function applyLevel(node, level) {
  const kind = intensityKind(node);
  if (kind === "preset") {
    setWidget(node, findWidget(node, ["preset"]), level);
  } else if (kind === "mu") {
    const type = String(findWidget(node, TYPE_NAMES)?.value ?? "");
    const mu = synthMu(type, level);
    if (mu === undefined) return;
    const mode = findWidget(node, ["intensity_mode"]);
    if (mode && comboValues(mode).includes("mu")) setWidget(node, mode, "mu");
    setWidget(node, findWidget(node, ["mu"]), mu);
  }
}

function levelTitle(node, level) {
  if (intensityKind(node) === "preset") return `${level}: typical μ, σ of this type in GenDeg's training data`;
  const type = String(findWidget(node, TYPE_NAMES)?.value ?? "");
  const mu = synthMu(type, level);
  return mu === undefined ? level : `${level}: μ ${mu} for ${type}`;
}

/** Add the compact type chips + light/medium/heavy strip (once). */
export function addPicker(node) {
  if (node.widgets?.find((w) => w.name === "gendeg_picker")) return null;
  if (typeof node.addDOMWidget !== "function") return null;
  const typeWidget = findWidget(node, TYPE_NAMES);
  const kind = intensityKind(node);
  if (!typeWidget && !kind) return null;
  ensureStyle();
  const el = document.createElement("div");
  el.className = "gendeg-picker";
  el.dataset.gendegNode = String(node.id);
  const typeRow = document.createElement("div");
  typeRow.className = "gendeg-row gendeg-types";
  const presetRow = document.createElement("div");
  presetRow.className = "gendeg-row gendeg-presets";
  el.append(typeRow, presetRow);

  const refresh = () => {
    for (const b of typeRow.children) b.classList.toggle("active", !!typeWidget && b.dataset.value === String(typeWidget.value));
    const cur = currentLevel(node);
    for (const b of presetRow.children) {
      b.classList.toggle("active", b.dataset.value === cur);
      b.title = levelTitle(node, b.dataset.value);
    }
  };
  for (const v of comboValues(typeWidget)) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.value = String(v);
    b.title = `degradation type: ${v}`;
    b.textContent = SHORT[v] ?? String(v);
    b.addEventListener("click", (e) => {
      e.stopPropagation();
      const level = currentLevel(node);
      setWidget(node, typeWidget, v);
      if (level && kind === "mu") applyLevel(node, level); // keep "heavy" heavy for the new type
      refresh();
    });
    typeRow.appendChild(b);
  }
  if (kind) {
    for (const level of LEVELS) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.value = level;
      b.textContent = level;
      b.addEventListener("click", (e) => {
        e.stopPropagation();
        applyLevel(node, level);
        refresh();
      });
      presetRow.appendChild(b);
    }
  }
  // keep the chips in step when the user edits the ordinary widgets
  for (const name of [...TYPE_NAMES, "preset", "mu", "intensity_mode"]) {
    const w = findWidget(node, [name]);
    if (!w || w.gendegWrapped) continue;
    const cb = w.callback;
    w.callback = function (...args) {
      const r = cb?.apply(this, args);
      refresh();
      return r;
    };
    w.gendegWrapped = true;
  }
  const width = node.size?.[0];
  const widget = node.addDOMWidget("gendeg_picker", "gendeg_picker", el, {
    ...noValue(),
    getMinHeight: () => 48,
    getHeight: () => 52,
  });
  markUnserialized(widget);
  widget.gendegRefresh = refresh;
  refresh();
  resizeNode(node, 260, 0, width);
  return widget;
}
