"""The workflow of a nearsightedness campaign (``kind: nearsightedness``).

    [label 0] [label 1] … [full] ──▶ [analysis]

Label Fireworks (``labels_per_firework`` distinct chunks each; category ``label``, ``dft``
for gpaw) and one Firework for the whole structure (when ``full``) run on any worker; the
analysis Firework (``_allow_fizzled_parents``) runs when they have all ended, so a chunk
the parent could not label shows up as missing in the report instead of holding it back.
The analysis reads labels from the database, never from its parents' outputs.

The campaign is one workflow: FireWorks rewrites a workflow on every state change, so it is
meant for the tens to hundreds of chunks of an analysis (the spec warns above
``MAX_NS_FIREWORKS``).
"""

from __future__ import annotations

from typing import Any

from fireworks import FiretaskBase, Firework, Workflow

from nft_fw.spec.campaign import (
    NEARSIGHTEDNESS,
    NearsightednessSpec,
    PreparedNearsightedness,
    analysis_category,
    label_category,
)
from nft_fw.steps.nearsightedness import FULL_ITEM, plan_items
from nft_fw.workflows.campaign import LABEL_PRIORITY, TRAIN_PRIORITY

# the whole structure is the longest single calculation: start it before the chunks
FULL_PRIORITY = LABEL_PRIORITY + 1


def _spec(spec: NearsightednessSpec, role: str, category: str, priority: int, **extra: Any) -> dict:
    return {
        "_category": category,
        "_priority": priority,
        "_add_launchpad_and_fw_id": True,
        "campaign": spec.name,
        "nft_role": role,
        "nft_phase": NEARSIGHTEDNESS,
        **extra,
    }


def workflow(
    prepared: PreparedNearsightedness,
    label_task: type[FiretaskBase],
    report_task: type[FiretaskBase],
) -> Workflow:
    """Label Fireworks (running ``label_task``) for the distinct chunks and the whole
    structure, feeding the analysis Firework (``report_task``); the task classes are handed
    in (:mod:`nft_fw.firetasks.nearsightedness`), so shaping imports no task."""
    spec = prepared.spec
    name, category = spec.name, label_category(spec)
    items = plan_items(prepared.plan)
    per = spec.service.labels_per_firework
    labels = [
        Firework(
            label_task(campaign=name, items=items[i : i + per]),
            name=f"{name} nearsightedness label {b}",
            spec=_spec(spec, "label", category, LABEL_PRIORITY, nft_batch=b),
        )
        for b, i in enumerate(range(0, len(items), per))
    ]
    if spec.full:
        labels.append(
            Firework(
                label_task(campaign=name, items=[dict(FULL_ITEM)]),
                name=f"{name} nearsightedness full structure",
                spec=_spec(spec, "full", category, FULL_PRIORITY),
            )
        )
    analysis = Firework(
        report_task(campaign=name),
        name=f"{name} nearsightedness analysis",
        parents=labels,
        spec=_spec(
            spec,
            "analysis",
            analysis_category(spec),
            TRAIN_PRIORITY,
            _allow_fizzled_parents=True,
        ),
    )
    return Workflow(
        [*labels, analysis],
        name=name,
        metadata={"campaign": name, "kind": NEARSIGHTEDNESS},
    )
