"""Which part of a workflow a Ray job runs per batch of a folder's files.

A workflow is *folder-driven* when exactly one ``GenDegLoadImageFolder`` (in ``list``
output mode) feeds every output node: then the nodes downstream of it can run on any
subset of the folder's files and the union of those runs is the run over the whole folder,
provided no node in between needs the whole list at once. This module decides that from
the API prompt and the node classes alone (nothing runs); :func:`plan_folder_job` returns
a :class:`FolderJob`, or the reason, in one sentence, why the graph must run as a whole.

Nodes that take whole lists (``INPUT_IS_LIST``) are per-item safe only when listed in
:data:`PER_ITEM_LIST_NODES`: savers whose writes are gathered per batch (dataset pairs,
scores), filters that judge each item alone (quality gate, intensity filter), and the
degradation plan, whose items depend on each file's position in the folder (the worker
passes it those positions). A contact sheet, for example, gathers the whole list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..graph.validate import is_link

FOLDER_LOADER = "GenDegLoadImageFolder"
PLAN_NODE = "GenDegDegradationPlan"
#: List-taking nodes that give the same result on any split of their list into batches.
PER_ITEM_LIST_NODES = frozenset(
    {"GenDegSaveDatasetPairs", "GenDegSaveScores", "GenDegQualityGate", "GenDegIntensityFilter", PLAN_NODE}
)
#: The loader's output slot with the file names.
FILENAMES_SLOT = 2


@dataclass(frozen=True)
class FolderJob:
    """A folder-driven workflow: ``loader`` is the folder node, ``downstream`` every node that depends on it (itself included)."""

    loader: str
    downstream: frozenset[str]
    folder_inputs: Mapping[str, Any]
    """The loader's literal inputs (folder, pattern, recursive, start, limit, output)."""


def _describe(prompt: Mapping[str, Mapping[str, Any]], nid: str) -> str:
    return f"node {nid} ({prompt[nid].get('class_type')})"


def plan_folder_job(
    prompt: Mapping[str, Mapping[str, Any]], registry: Mapping[str, type], order: list[str]
) -> FolderJob | str:
    """The :class:`FolderJob` of a validated prompt whose nodes ``order`` run, or why it is not one."""
    loaders = [nid for nid in order if prompt[nid].get("class_type") == FOLDER_LOADER]
    if not loaders:
        return "no GenDeg Load Image Folder feeds its outputs"
    if len(loaders) > 1:
        return f"it loads {len(loaders)} folders (nodes {', '.join(loaders)}); --ray splits the files of one"
    loader = loaders[0]
    inputs = prompt[loader].get("inputs", {})
    for name, value in inputs.items():
        if is_link(value):
            return f"{_describe(prompt, loader)} takes its {name} from another node; give it as a value"
    if inputs.get("output", "list") != "list":
        return f"{_describe(prompt, loader)} outputs one batch; set its output to list"

    running = set(order)
    downstream = {loader}
    for nid in order:  # dependencies come first in ``order``
        for value in prompt[nid].get("inputs", {}).values():
            if is_link(value) and str(value[0]) in downstream:
                downstream.add(nid)
                break

    for nid in order:
        cls = registry[prompt[nid]["class_type"]]
        if getattr(cls, "OUTPUT_NODE", False) is True and nid not in downstream:
            return f"output {_describe(prompt, nid)} does not depend on the folder (it would run once per batch)"
    for nid in order:
        if nid not in downstream or nid == loader:
            continue
        node = prompt[nid]
        cls = registry[node["class_type"]]
        if getattr(cls, "INPUT_IS_LIST", False) and node["class_type"] not in PER_ITEM_LIST_NODES:
            return f"{_describe(prompt, nid)} gathers the whole list at once, so it cannot run per batch"
        for name, value in node.get("inputs", {}).items():
            if not is_link(value):
                continue
            src = str(value[0])
            if node["class_type"] == PLAN_NODE and name == "filenames" and (src != loader or value[1] != FILENAMES_SLOT):
                return f"{_describe(prompt, nid)} must take its filenames straight from {_describe(prompt, loader)}"
            if src in downstream or src not in running:
                continue
            src_cls = registry[prompt[src]["class_type"]]
            is_list = list(getattr(src_cls, "OUTPUT_IS_LIST", ()))
            slot = int(value[1])
            if slot < len(is_list) and is_list[slot]:
                return (
                    f"{_describe(prompt, nid)} pairs the folder's images with the list of {_describe(prompt, src)}, "
                    "which a batch would pair differently"
                )
    return FolderJob(loader, frozenset(downstream), dict(inputs))
