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

from fireworks import Firework, LaunchPad, Workflow

from nft_fw.campaign import NearsightednessSpec, PreparedNearsightedness
from nft_fw.firetasks.nearsightedness import NearsightednessLabelTask, NearsightednessReportTask
from nft_fw.launchpad import nearsightedness as ns
from nft_fw.workflows.campaign import LABEL_PRIORITY, TRAIN_PRIORITY, ensure_initialised

# the whole structure is the longest single calculation: start it before the chunks
FULL_PRIORITY = LABEL_PRIORITY + 1


def _spec(spec: NearsightednessSpec, role: str, category: str, priority: int, **extra: Any) -> dict:
    return {
        "_category": category,
        "_priority": priority,
        "_add_launchpad_and_fw_id": True,
        "campaign": spec.name,
        "nft_role": role,
        "nft_phase": ns.PHASE,
        **extra,
    }


def workflow(prepared: PreparedNearsightedness) -> Workflow:
    """Label Fireworks for the distinct chunks (and the whole structure) feeding the
    analysis Firework."""
    spec = prepared.spec
    name, category = spec.name, ns.label_category(spec)
    items = ns.plan_items(prepared)
    per = spec.service.labels_per_firework
    labels = [
        Firework(
            NearsightednessLabelTask(campaign=name, items=items[i : i + per]),
            name=f"{name} nearsightedness label {b}",
            spec=_spec(spec, "label", category, LABEL_PRIORITY, nft_batch=b),
        )
        for b, i in enumerate(range(0, len(items), per))
    ]
    if spec.full:
        labels.append(
            Firework(
                NearsightednessLabelTask(campaign=name, items=[dict(ns.FULL_ITEM)]),
                name=f"{name} nearsightedness full structure",
                spec=_spec(spec, "full", category, FULL_PRIORITY),
            )
        )
    analysis = Firework(
        NearsightednessReportTask(campaign=name),
        name=f"{name} nearsightedness analysis",
        parents=labels,
        spec=_spec(
            spec,
            "analysis",
            ns.analysis_category(spec),
            TRAIN_PRIORITY,
            _allow_fizzled_parents=True,
        ),
    )
    return Workflow(
        [*labels, analysis],
        name=name,
        metadata={"campaign": name, "kind": ns.KIND},
    )


def submit(lp: LaunchPad, prepared: PreparedNearsightedness) -> list[int]:
    """Register the campaign and add its workflow; returns the Firework ids. A name already
    taken raises CampaignExists before anything is written."""
    ensure_initialised(lp)
    ns.register(lp.db, prepared)
    mapping = lp.add_wf(workflow(prepared))
    return sorted(mapping.values())
