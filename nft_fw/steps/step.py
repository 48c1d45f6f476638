"""Each phase of a campaign once, as a function of data: the NFT iteration, the relax
round, the transfer and the MD segment.

:func:`nft_step` is the NFT iteration of Zeng, Chen, Peterson, J. Chem. Phys. 156, 064104
(2022), Sec. IV: train on every label so far → predict the target and δ → record →
decide → the next chunks to label. :func:`relax_step` is a relaxation round (Sec. V C):
retrain (from round 1 on) → relax the target (or resume from the frontier) → record →
decide → chunks from the trajectory (or the prior labels' chunks of the next round).
:func:`transfer_step` relaxes a larger target with the kept model (Sec. V D) and flags it
when δ says it left the data. :func:`md_step` is an MD segment: retrain on the last
pause's chunks → run from the saved state until the length or the first step above the
threshold → record → the chunks of the pause. Each takes plain inputs (labels, the
previous model, the records before, the campaign) and returns plain outputs (the record,
the model, the decision, label requests); they read and write nothing else. Their two
runners add only I/O:

* :mod:`nft_fw.runners.local` (``run_locally``, ``relax_locally``, ``transfer_locally``,
  ``md_locally``) keeps everything in memory and labels requests in-process;
* the Fireworks (:mod:`nft_fw.firetasks.iteration`, :mod:`nft_fw.firetasks.relax`,
  :mod:`nft_fw.firetasks.md`) load the inputs from the database, call the step, store its
  outputs and hand the requests to FireWorks.

The order labels arrive in never matters: the step sorts images by their hash and chunks by
(iteration, centre, hash) before training, so a campaign gives the same history in one
process, with one worker or with many.

This module gathers their public names; each step lives in a module of its own
(:mod:`~nft_fw.steps.nft_step`, :mod:`~nft_fw.steps.relax_step`,
:mod:`~nft_fw.steps.transfer_step`, :mod:`~nft_fw.steps.md_step`), and what they share —
the initial set, chunk requests and labels, features, training, assessment — in
:mod:`~nft_fw.steps.common`.
"""

from __future__ import annotations

from nft_fw.steps.common import (
    MD_CALIBRATION_POINTS,
    Assessment,
    CachedFeatures,
    ChunkRequest,
    FeatureMemo,
    FeatureSource,
    FeatureStore,
    Fit,
    assess,
    calibrate_record,
    central_residual,
    chunk_features,
    chunk_out_of_sample,
    composition,
    cut_chunk,
    error_figures,
    fit,
    fresh_ensemble,
    in_order,
    initial_structures,
    label_chunk,
    label_structure,
    md_settings,
    md_start,
    md_start_structure,
    out_of_sample,
    request_atoms,
    residual_images,
    selection_features,
    target_forces,
    threshold_values,
    trajectory_figures,
    validate_relaxation,
)
from nft_fw.steps.md_step import (
    MDInputs,
    MDOutcome,
    md_step,
)
from nft_fw.steps.nft_step import (
    NFTInputs,
    NFTOutcome,
    Prediction,
    nft_step,
    seed_requests,
)
from nft_fw.steps.relax_step import (
    RelaxInputs,
    RelaxOutcome,
    relax_start,
    relax_step,
)
from nft_fw.steps.transfer_step import (
    FLAG_RATIO,
    TransferInputs,
    TransferOutcome,
    transfer_step,
)

__all__ = [
    "FLAG_RATIO",
    "MD_CALIBRATION_POINTS",
    "Assessment",
    "CachedFeatures",
    "ChunkRequest",
    "FeatureMemo",
    "FeatureSource",
    "FeatureStore",
    "Fit",
    "MDInputs",
    "MDOutcome",
    "NFTInputs",
    "NFTOutcome",
    "Prediction",
    "RelaxInputs",
    "RelaxOutcome",
    "TransferInputs",
    "TransferOutcome",
    "assess",
    "calibrate_record",
    "central_residual",
    "chunk_features",
    "chunk_out_of_sample",
    "composition",
    "cut_chunk",
    "error_figures",
    "fit",
    "fresh_ensemble",
    "in_order",
    "initial_structures",
    "label_chunk",
    "label_structure",
    "md_settings",
    "md_start",
    "md_start_structure",
    "md_step",
    "nft_step",
    "out_of_sample",
    "relax_start",
    "relax_step",
    "request_atoms",
    "residual_images",
    "seed_requests",
    "selection_features",
    "target_forces",
    "threshold_values",
    "trajectory_figures",
    "transfer_step",
    "validate_relaxation",
]
