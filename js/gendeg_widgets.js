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
.gendeg-stats { font: 11px/1.35 monospace; color: var(--input-text, #ddd); padding: 2px 4px;
  white-space: pre; overflow: hidden; }
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

function resizeNode(node, minWidth, extraHeight) {
  try {
    const size = node.computeSize?.() ?? node.size;
    node.setSize?.([Math.max(node.size?.[0] ?? 0, minWidth), Math.max(node.size?.[1] ?? 0, size[1] + (extraHeight ?? 0))]);
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
  resizeNode(node, 260, 0);
  return widget;
}

/** Find or add the stats text widget of a node. */
export function statsWidget(node) {
  const existing = node.widgets?.find((w) => w.name === "gendeg_stats");
  if (existing) return existing;
  if (typeof node.addDOMWidget !== "function") return null;
  ensureStyle();
  const el = document.createElement("div");
  el.className = "gendeg-stats";
  el.dataset.gendegNode = String(node.id);
  const widget = node.addDOMWidget("gendeg_stats", "gendeg_stats", el, {
    ...noValue(),
    getMinHeight: () => 20,
    getHeight: () => Math.max(20, 16 * Math.max(1, el.childElementCount || el.textContent.split("\n").length) + 6),
  });
  markUnserialized(widget);
  widget.gendegSetRows = (rows) => {
    el.textContent = formatStats(rows);
    resizeNode(node, 200, 0);
  };
  return widget;
}

const SYMBOLS = { mu: "μ", sigma: "σ", mu_target: "μ*", sigma_target: "σ*" };

/** "μ 0.1234  σ 0.0567" per image (at most 4 lines). */
export function formatStats(rows) {
  if (!Array.isArray(rows) || rows.length === 0) return "";
  const lines = rows.slice(0, 4).map((row, i) => {
    const parts = Object.entries(row ?? {}).map(([k, v]) => {
      const num = typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4)) : String(v);
      return `${SYMBOLS[k] ?? k} ${num}`;
    });
    return (rows.length > 1 ? `#${i} ` : "") + parts.join("  ");
  });
  if (rows.length > 4) lines.push(`… ${rows.length - 4} more`);
  return lines.join("\n");
}

// --- type + intensity picker --------------------------------------------------------

/** Editor shortcuts (not values from the paper): GenDeg intensity μ, σ of |clean − degraded|. */
export const PRESETS = {
  light: { mu: 0.04, sigma: 0.03, strength: 0.25 },
  medium: { mu: 0.1, sigma: 0.07, strength: 0.5 },
  heavy: { mu: 0.2, sigma: 0.12, strength: 0.85 },
};

const TYPE_NAMES = ["degradation", "degradation_type", "type", "deg_type"];
const MU_NAMES = ["mu", "target_mu", "intensity_mu", "mu_target"];
const SIGMA_NAMES = ["sigma", "target_sigma", "intensity_sigma", "sigma_target"];
const STRENGTH_NAMES = ["strength", "intensity"];

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

/** Which preset the node's intensity widgets currently match, or "". */
function currentPreset(node) {
  const mu = findWidget(node, MU_NAMES);
  const st = findWidget(node, STRENGTH_NAMES);
  for (const [name, p] of Object.entries(PRESETS)) {
    if (mu && Math.abs(Number(mu.value) - p.mu) < 1e-6) return name;
    if (!mu && st && Math.abs(Number(st.value) - p.strength) < 1e-6) return name;
  }
  return "";
}

/** Apply a preset: sets μ (and σ) when the node has them, else a 0..1 strength. */
export function applyPreset(node, name) {
  const p = PRESETS[name];
  if (!p) return;
  const mu = findWidget(node, MU_NAMES);
  const sigma = findWidget(node, SIGMA_NAMES);
  if (mu) setWidget(node, mu, p.mu);
  if (sigma) setWidget(node, sigma, p.sigma);
  if (!mu) setWidget(node, findWidget(node, STRENGTH_NAMES), p.strength);
}

/** Add the compact type chips + light/medium/heavy strip (once). */
export function addPicker(node) {
  if (node.widgets?.find((w) => w.name === "gendeg_picker")) return null;
  if (typeof node.addDOMWidget !== "function") return null;
  const typeWidget = findWidget(node, TYPE_NAMES);
  const hasIntensity = findWidget(node, MU_NAMES) || findWidget(node, STRENGTH_NAMES);
  if (!typeWidget && !hasIntensity) return null;
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
    for (const b of typeRow.children) b.classList.toggle("active", typeWidget && b.dataset.value === String(typeWidget.value));
    const cur = currentPreset(node);
    for (const b of presetRow.children) b.classList.toggle("active", b.dataset.value === cur);
  };
  const values = typeWidget?.options?.values;
  const typeValues = typeof values === "function" ? values() : values;
  if (typeWidget && Array.isArray(typeValues)) {
    for (const v of typeValues) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.value = String(v);
      b.title = `degradation type: ${v}`;
      b.textContent = SHORT[v] ?? String(v);
      b.addEventListener("click", (e) => {
        e.stopPropagation();
        setWidget(node, typeWidget, v);
        refresh();
      });
      typeRow.appendChild(b);
    }
  }
  if (hasIntensity) {
    for (const name of Object.keys(PRESETS)) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.value = name;
      const p = PRESETS[name];
      b.title = findWidget(node, MU_NAMES) ? `${name}: μ ${p.mu}, σ ${p.sigma}` : `${name}: strength ${p.strength}`;
      b.textContent = name;
      b.addEventListener("click", (e) => {
        e.stopPropagation();
        applyPreset(node, name);
        refresh();
      });
      presetRow.appendChild(b);
    }
  }
  // keep the chips in step when the user edits the ordinary widgets
  for (const w of [typeWidget, findWidget(node, MU_NAMES), findWidget(node, STRENGTH_NAMES)]) {
    if (!w) continue;
    const cb = w.callback;
    w.callback = function (...args) {
      const r = cb?.apply(this, args);
      refresh();
      return r;
    };
  }
  const widget = node.addDOMWidget("gendeg_picker", "gendeg_picker", el, {
    ...noValue(),
    getMinHeight: () => 48,
    getHeight: () => 52,
  });
  markUnserialized(widget);
  widget.gendegRefresh = refresh;
  refresh();
  resizeNode(node, 260, 0);
  return widget;
}
