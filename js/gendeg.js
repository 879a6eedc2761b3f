// ComfyUI-GenDeg editor extension.
//
// * colours per category (GenDeg/Degrade, Restore, Quality, Dataset) on new nodes;
// * after a run: the numbers a node reports (ui.gendeg_stats: μ/σ, scores, counts) and its
//   messages (ui.text) shown on it, and a before/after comparison slider fed by
//   ui.gendeg_compare; nodes a grown node would cover are moved down; outputs of cached
//   nodes are shown from the prompt's history (ComfyUI does not resend them);
// * a compact type + intensity picker (light / medium / heavy) on GenDegCondition and
//   GenDegSynthesize.
//
// Only nodes whose class id starts with "GenDeg" are touched; nothing here assumes those
// nodes exist, and every hook chains the previous one.

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { addPicker, compareWidget, infoText, infoWidget } from "./gendeg_widgets.js";

export const CATEGORY_COLORS = {
  "GenDeg/Degrade": { color: "#6b4a2a", bgcolor: "#3f2d1c" },
  "GenDeg/Restore": { color: "#2f5f45", bgcolor: "#1f3b2c" },
  "GenDeg/Quality": { color: "#33507a", bgcolor: "#1f3049" },
  "GenDeg/Dataset": { color: "#5b3f73", bgcolor: "#372646" },
};

const PICKER_NODES = new Set(["GenDegCondition", "GenDegSynthesize"]);

function isOurs(name) {
  return typeof name === "string" && name.startsWith("GenDeg");
}

function categoryColors(category) {
  if (typeof category !== "string") return null;
  for (const [prefix, colors] of Object.entries(CATEGORY_COLORS)) {
    if (category === prefix || category.startsWith(prefix + "/")) return colors;
  }
  return null;
}

function chain(proto, name, after) {
  const previous = proto[name];
  proto[name] = function (...args) {
    const result = previous?.apply(this, args);
    try {
      after.apply(this, args);
    } catch (err) {
      console.warn(`[GenDeg] ${name} failed on node ${this?.id}:`, err);
    }
    return result;
  };
}

/**
 * The editor adds a "control after generate" widget to every INT input named seed, but its
 * loader (migrateWidgetsValues, frontend 1.5x) only counts that widget's saved value when the
 * input declares control_after_generate; on a node that also has a forceInput input it then
 * drops one saved value and every later widget gets its neighbour's value. Declaring it for
 * our seed inputs keeps saved workflows aligned (a no-op where it is already declared).
 */
function declareSeedControls(nodeData) {
  for (const group of ["required", "optional"]) {
    const inputs = nodeData.input?.[group];
    if (!inputs || typeof inputs !== "object") continue;
    for (const [name, spec] of Object.entries(inputs)) {
      if (!Array.isArray(spec) || spec[0] !== "INT" || !(name === "seed" || name === "noise_seed")) continue;
      const options = spec[1] && typeof spec[1] === "object" ? spec[1] : {};
      if (options.control_after_generate === undefined) spec[1] = { ...options, control_after_generate: true };
    }
  }
}

/** Node ids are only final once a node is in a graph: label the pack's widget elements again. */
function tagElements(node) {
  for (const w of node.widgets ?? []) {
    if (typeof w.name === "string" && w.name.startsWith("gendeg_") && w.element?.dataset) {
      w.element.dataset.gendegNode = String(node.id);
    }
  }
}

/** What a GenDeg node does with its ui output (also called for cached outputs). */
export function showOutput(node, output) {
  if (!output || typeof output !== "object") return;
  const text = infoText(output);
  if (text) infoWidget(node, text);
  const pairs = output.gendeg_compare;
  if (Array.isArray(pairs) && pairs.length) compareWidget(node)?.gendegSetPairs(pairs);
}

/**
 * Outputs of cached nodes. When a node's result comes from ComfyUI's cache, ComfyUI sends its
 * ui again only for output nodes ("executed"); a cached intermediate node (GenDegSynthesize
 * feeding a SaveImage) gets nothing, so a fresh tab would show no slider or μ/σ. Its ui is in
 * the prompt's history, though: after the prompt succeeds, the GenDeg nodes that were cached
 * and got no "executed" are shown from ``/history/<prompt_id>``.
 */
const cachedByPrompt = new Map();

function nodeById(id) {
  try {
    return app.graph?.getNodeById?.(id) ?? null;
  } catch {
    return null;
  }
}

export async function showCachedOutputs(promptId, nodeIds, fetchHistory) {
  const ours = [...nodeIds].map((id) => [id, nodeById(id)]).filter(([, n]) => n && isOurs(n.type ?? n.comfyClass));
  if (!ours.length) return 0;
  const history = await fetchHistory(promptId);
  const outputs = history?.[promptId]?.outputs ?? {};
  let shown = 0;
  for (const [id, node] of ours) {
    if (outputs[id]) {
      showOutput(node, outputs[id]);
      shown += 1;
    }
  }
  return shown;
}

async function fetchHistory(promptId) {
  const res = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
  return res.ok ? res.json() : {};
}

function listenForCachedOutputs() {
  if (typeof api?.addEventListener !== "function") return;
  api.addEventListener("execution_cached", ({ detail }) => {
    if (detail?.prompt_id && Array.isArray(detail.nodes) && detail.nodes.length) {
      cachedByPrompt.set(detail.prompt_id, new Set(detail.nodes.map(String)));
    }
  });
  api.addEventListener("executed", ({ detail }) => {
    const pending = cachedByPrompt.get(detail?.prompt_id);
    pending?.delete(String(detail?.display_node ?? detail?.node));
    pending?.delete(String(detail?.node));
  });
  api.addEventListener("execution_success", ({ detail }) => {
    const pending = cachedByPrompt.get(detail?.prompt_id);
    cachedByPrompt.delete(detail?.prompt_id);
    if (pending?.size) {
      showCachedOutputs(detail.prompt_id, pending, fetchHistory).catch((err) =>
        console.warn("[GenDeg] could not show cached outputs", err),
      );
    }
  });
  for (const event of ["execution_error", "execution_interrupted"]) {
    api.addEventListener(event, ({ detail }) => cachedByPrompt.delete(detail?.prompt_id));
  }
}

listenForCachedOutputs(); // at import: before the first prompt can run

app.registerExtension({
  name: "GenDeg.Editor",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isOurs(nodeData?.name)) return;
    declareSeedControls(nodeData);
    const colors = categoryColors(nodeData.category);
    const proto = nodeType.prototype;

    chain(proto, "onNodeCreated", function () {
      if (colors && !this.color && !this.bgcolor) {
        this.color = colors.color;
        this.bgcolor = colors.bgcolor;
      }
      if (PICKER_NODES.has(nodeData.name)) addPicker(this);
    });

    chain(proto, "onAdded", function () {
      tagElements(this);
    });

    chain(proto, "onConfigure", function () {
      tagElements(this);
      this.widgets?.find((w) => w.name === "gendeg_picker")?.gendegRefresh?.();
    });

    chain(proto, "onExecuted", function (output) {
      showOutput(this, output);
    });
  },
});
