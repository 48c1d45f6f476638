"""The campaign file: one validated spec of what to train, against which parent, and how.

``load_campaign`` reads YAML (or a dict) into a :class:`CampaignSpec`; every problem comes back as
one :class:`CampaignError` whose lines read ``field.path: what is wrong (got …)``. ``prepare``
then builds the target structure and checks everything that needs files or a calculator.

Example (see :func:`example_campaign`)::

    name: pt260-emt
    target:
      builder: {kind: octahedron, element: Pt, length: 8, cutoff: 3, lattice_constant: 3.92}
      rattle: {stdev: 0.1, seed: 0}
    parent: {name: emt, params: {}}
    initial: {generator: bulk, n_structures: 20}
    model: {cutoff: 6.0, hidden_layers: [25, 25], ensemble_size: 10}
    nft: {chunks_per_iteration: 26, chunk_radius: null, threshold: 0.1, patience: 2,
          max_iterations: 10, seed: 0}
    validation: {true_forces: true}
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from nft_fw.labels.prior import PriorError, PriorLabels
from nft_fw.labels.prior import read as read_prior
from nft_fw.parents.parent import Parent, ParentError, get_parent
from nft_fw.potential import baseline as baseline_mod
from nft_fw.structures.particles import (
    GEOMETRY,
    StructureError,
    build_nanoparticle,
    check_composition,
    check_element,
    check_geometry,
    rattle,
    read_frames,
    read_structure,
    validate_atoms,
    vegard_lattice_constant,
)

if TYPE_CHECKING:  # imported where used: loading a campaign file needs no JAX
    from nft_fw.potential.descriptors import DescriptorSpec
    from nft_fw.potential.model import Architecture
    from nft_fw.potential.training import TrainConfig

log = logging.getLogger(__name__)

Kind = Literal[
    "octahedron", "cuboctahedron", "icosahedron", "decahedron", "fcc111", "fcc100", "bulk"
]
PositiveInt = Annotated[int, Field(ge=1)]


class CampaignError(ValueError):
    """The campaign cannot be used. ``field`` is the dotted path of the first problem;
    ``errors`` lists every (field, message); ``source`` is the campaign file, if any.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        errors: list[tuple[str, str]] | None = None,
        source: Path | None = None,
    ) -> None:
        self.errors = [(field, message), *(errors or [])]
        self.field = field
        self.source = source
        lines = [f"{f}: {m}" for f, m in self.errors]
        if source is not None:
            lines.append(f"(in campaign file {source})")
        super().__init__("\n".join(lines))

    @classmethod
    def from_errors(
        cls, errors: list[tuple[str, str]], source: Path | None = None
    ) -> CampaignError:
        """One error holding all of ``errors`` (at least one)."""
        (first_field, first_message), *rest = errors
        return cls(first_field, first_message, errors=rest, source=source)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN/inf: never valid


class RattleSpec(_Spec):
    stdev: float = Field(
        ge=0.0, le=1.0, description="Standard deviation of each Cartesian displacement, Å."
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of numpy.random.default_rng for the rattle."
    )


class BuilderSpec(_Spec):
    kind: Kind = Field(description="Shape: nanoparticle (ase.cluster), fcc slab or fcc bulk.")
    element: str | None = Field(
        default=None, description="Chemical symbol of a one-element target."
    )
    composition: dict[str, float] | None = Field(
        default=None, description="Alloy fractions {symbol: fraction}, each > 0, summing to 1."
    )
    lattice_constant: float | None = Field(
        default=None,
        ge=2.0,
        le=20.0,  # fcc metals lie between ~3.5 and ~6 Å
        description="fcc lattice constant, Å; null = the parent's optimum (Vegard).",
    )
    length: int | None = Field(
        default=None,
        ge=1,
        description="octahedron/cuboctahedron: atoms along an edge of the octahedron.",
    )
    cutoff: int | None = Field(
        default=None, ge=0, description="octahedron: layers cut at each vertex (default 0)."
    )
    shells: int | None = Field(
        default=None,
        ge=1,
        description="icosahedron: shells, the central atom being shell 1 (5 → 309).",
    )
    p: int | None = Field(
        default=None, ge=1, description="decahedron: atoms along the (100) facets."
    )
    q: int | None = Field(
        default=None, ge=1, description="decahedron: atoms along the (111) facets."
    )
    r: int | None = Field(
        default=None, ge=0, description="decahedron: depth of the Marks re-entrance."
    )
    size: list[PositiveInt] | None = Field(
        default=None, min_length=3, max_length=3, description="fcc111/fcc100: [nx, ny, layers]."
    )
    repeat: list[PositiveInt] | None = Field(
        default=None, min_length=3, max_length=3, description="bulk: repeats of the cubic fcc cell."
    )
    vacancies: int = Field(default=0, ge=0, description="bulk: atoms removed at random (seeded).")
    vacuum: float = Field(
        default=8.0, ge=0.0, le=100.0, description="fcc111/fcc100: vacuum on each side, Å."
    )
    seed: int = Field(default=0, ge=0, description="Seed for alloy site assignment and vacancies.")

    @field_validator("element")
    @classmethod
    def _symbol(cls, value: str | None) -> str | None:
        if value is not None:
            _plain(check_element, value, "element")
        return value

    @field_validator("composition")
    @classmethod
    def _composition(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            _plain(check_composition, value, "composition")
        return value

    @model_validator(mode="after")
    def _one_species_source(self) -> BuilderSpec:
        if (self.element is None) == (self.composition is None):
            raise ValueError(
                "give exactly one of element (e.g. Pt) or composition (e.g. {Pt: 0.5, Au: 0.5})"
            )
        return self

    @property
    def species(self) -> dict[str, float]:
        """{symbol: fraction} of the target (a single element has fraction 1)."""
        return {self.element: 1.0} if self.element is not None else dict(self.composition or {})

    def geometry(self) -> dict[str, Any]:
        """The geometry parameters the kind uses, as given (None left out)."""
        return {k: getattr(self, k) for k in GEOMETRY[self.kind] if getattr(self, k) is not None}


class TargetSpec(_Spec):
    builder: BuilderSpec | None = Field(default=None, description="Build the target with ASE.")
    file: Path | None = Field(
        default=None,
        description="Read the target from a file ASE reads (relative to the campaign file).",
    )
    index: int = Field(default=-1, description="Frame of `file` to use (ASE index; -1 = last).")
    rattle: RattleSpec | None = Field(
        default=None, description="Gaussian displacement of the target."
    )

    @model_validator(mode="after")
    def _one_source(self) -> TargetSpec:
        if (self.builder is None) == (self.file is None):
            raise ValueError("give exactly one of builder or file")
        return self


class ParentSpec(_Spec):
    name: str = Field(
        default="emt", description="Registered parent calculator: emt, gpaw or a plug-in."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Parameters of the parent (JSON), checked at load time; gpaw: GPAW keywords plus "
            "nft-fw's `vacuum`, `magmom` and `retries` (see 'DFT parent (GPAW)' in "
            "docs/gpaw.md)."
        ),
    )


class InitialSpec(_Spec):
    generator: Literal["bulk"] | None = Field(
        default="bulk",
        description="Generate strained, rattled fcc bulk cells labelled by the parent.",
    )
    file: Path | None = Field(
        default=None,
        description="Labelled initial structures (energy eV, forces eV/Å) instead of a generator.",
    )
    n_structures: int = Field(
        default=20, ge=1, le=5000, description="Structures in the initial set."
    )
    n_candidates: int = Field(
        default=60, ge=1, description="Candidates generated, from which n_structures are picked."
    )
    lattice_spread: float = Field(
        default=0.06,
        ge=0.0,
        lt=0.5,
        description="Fractional ± range of lattice constants (0.06 = ±6 %).",
    )
    rattle_stdev: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Gaussian displacement of each coordinate, Å."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the initial-set generator.")

    @model_validator(mode="before")
    @classmethod
    def _file_replaces_generator(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("file") is not None and "generator" not in data:
            return {**data, "generator": None}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> InitialSpec:
        if (self.generator is None) == (self.file is None):
            raise ValueError("give exactly one of generator or file")
        if self.n_candidates < self.n_structures:
            raise ValueError(
                f"n_candidates ({self.n_candidates}) < n_structures ({self.n_structures}); "
                f"raise n_candidates to at least {self.n_structures}"
            )
        return self


class ModelSpec(_Spec):
    cutoff: float = Field(
        default=6.0, ge=2.0, le=12.0, description="Descriptor cutoff radius R_c, Å."
    )
    hidden_layers: list[Annotated[int, Field(ge=1, le=512)]] = Field(
        default_factory=lambda: [25, 25],
        min_length=1,
        max_length=4,
        description="Neurons per hidden layer of each element's network (1–4 layers).",
    )
    ensemble_size: int = Field(default=10, ge=2, le=64, description="Ensemble members M.")
    n_radial: int = Field(
        default=16, ge=2, le=64, description="Radial (G2) symmetry functions per pair."
    )
    angular_etas: list[Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: [0.005, 0.025],
        min_length=1,
        description="Widths η of the angular (G5) functions, Å⁻².",
    )
    angular_zetas: list[Annotated[int, Field(ge=1, le=12)]] = Field(
        default_factory=lambda: [1, 2, 4, 8],
        min_length=1,
        description="Angular resolutions ζ of the G5 functions (dimensionless, at most 12).",
    )
    activation: Literal["tanh", "silu"] = Field(
        default="tanh", description="Hidden-layer activation."
    )
    baseline: Literal["none", "emt"] = Field(
        default="none",
        description="A physical potential under the networks (Δ-learning): the model predicts "
        "the baseline plus the ensemble, the ensemble learns the parent minus the baseline, δ "
        "is the ensemble's alone. emt: ASE's EMT (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O). "
        "What it does for robustness: docs/gpaw.md, 'A baseline under the network'.",
    )

    scale_floor: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Each descriptor feature is scaled by at least this fraction of the "
        "largest standard deviation among the features of its kind (radial per neighbour "
        "element, angular per element pair) instead of by its own deviation alone; null: "
        "its own deviation. Keeps features that hardly vary in the data (narrow radial "
        "functions between neighbour shells) from sending new structures far outside it: "
        "docs/gpaw.md, 'Holes between the neighbour shells'.",
    )

    def descriptor_spec(self, elements: Sequence[str]) -> DescriptorSpec:
        """The descriptor these settings give for ``elements``."""
        from nft_fw.potential.descriptors import DescriptorSpec

        return DescriptorSpec.default(
            elements,
            cutoff=self.cutoff,
            n_radial=self.n_radial,
            g5_eta=tuple(self.angular_etas),
            g5_zeta=tuple(self.angular_zetas),
        )

    @property
    def architecture(self) -> Architecture:
        from nft_fw.potential.model import Architecture

        return Architecture(tuple(self.hidden_layers), self.ensemble_size, self.activation)


#: Training fields of nft-fw 0.1 that are gone, and why.
REMOVED_TRAINING_FIELDS = {
    "batch_chunks": "chunks are packed into batches of descriptor rows; set "
    "training.batches_per_step instead",
}


class TrainingSpec(_Spec):
    initial_steps: int = Field(
        default=3000, ge=0, description="Optimiser steps of the first training."
    )
    steps_per_iteration: int = Field(
        default=3000, ge=0, description="Optimiser steps per NFT iteration."
    )
    learning_rate: float = Field(default=3e-3, gt=0.0, description="Initial learning rate (Adam).")
    final_learning_rate: float = Field(
        default=3e-4, gt=0.0, description="Learning rate at the end."
    )
    batches_per_step: int = Field(
        default=1,
        ge=1,
        description="Chunk batches (1,024 descriptor rows each, about 25 chunks) per step.",
    )
    energy_weight: float = Field(
        default=1.0, ge=0.0, description="Multiplier of the per-atom energy MSE, (eV/atom)²."
    )
    force_weight: float = Field(
        default=1.0, ge=0.0, description="Multiplier of the force MSE, (eV/Å)²."
    )
    warm_start: bool = Field(
        default=True, description="Start each iteration from the previous model."
    )
    bootstrap: bool = Field(
        default=True,
        description="Each member trains on its own Poisson(1) bootstrap resample of the "
        "labels (the paper's ensemble); false: every member on every label, members differing "
        "only by their initial weights.",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key, why in REMOVED_TRAINING_FIELDS.items():
                if key in data:
                    raise ValueError(
                        f"training.{key} was removed in nft-fw 0.2 ({why}); see docs/upgrading.md"
                    )
        return data


class NFTSpec(_Spec):
    chunks_per_iteration: int = Field(
        default=13,
        ge=1,
        description="Chunks labelled per iteration (fewer per retraining: fewer chunks for "
        "the same error, more retrainings).",
    )
    chunk_radius: float | None = Field(
        default=None,
        gt=0.0,
        description="Radius of a chunk around its centre, Å; null = 2·model.cutoff; at least "
        "2·model.cutoff (a smaller one is refused, exit 2).",
    )
    allow_short_chunks: bool = Field(
        default=False,
        description="Accept chunk_radius below 2·model.cutoff (the model's central force then "
        "depends on atoms the chunk lacks); for tiny test chunks only.",
    )
    threshold: float = Field(
        default=0.1,
        gt=0.0,
        description="Stop when the largest force uncertainty δ on the target (calibrated "
        "when threshold_on is calibrated_delta) is below this, eV/Å.",
    )
    threshold_on: Literal["delta", "calibrated_delta"] = Field(
        default="delta",
        description="Which δ the threshold applies to: `delta` = δ as the ensemble gives it "
        "(2.58 σ); `calibrated_delta` = δ times the campaign's calibration scale, once enough "
        "out-of-sample errors exist (from iteration 1 on; iteration 0 uses δ).",
    )
    calibration_coverage: float = Field(
        default=0.95,
        gt=0.0,
        lt=1.0,
        description="The calibrated δ covers this fraction of the out-of-sample errors (the "
        "previous model's central-force errors on each iteration's new chunks).",
    )
    patience: int = Field(
        default=2,
        ge=1,
        description="Stop after this many iterations without gain in the progress measure.",
    )
    progress_measure: Literal["mean_delta", "max_delta", "estimated_error"] = Field(
        default="mean_delta",
        description="What patience and the kept model go by: `mean_delta` = the mean δ over "
        "the target, which falls with the force error; `max_delta` = the largest δ (the "
        "paper's structure uncertainty, one atom's value and noisier); `estimated_error` = "
        "the mean δ in units of error, scaled by the out-of-sample errors on the chunks of "
        "the latest iterations (docs/training.md).",
    )
    target_error: float | None = Field(
        default=None,
        gt=0.0,
        le=100.0,
        description="The mean force error the campaign needs, eV/Å: it stops once the "
        "estimated error (see progress_measure) is at or below it; null = no such stop.",
    )
    min_gain: float = Field(
        default=0.02,
        ge=0.0,
        lt=1.0,
        description="An iteration counts as a gain when its progress measure is at least this "
        "fraction below the lowest before it.",
    )
    max_iterations: int = Field(default=10, ge=1, le=1000, description="Most NFT iterations.")
    best_tolerance: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description=(
            "The model kept is the latest whose progress measure is within this fraction of "
            "the lowest (0 = strictly the lowest)."
        ),
    )
    seed: int = Field(default=0, ge=0, description="Seed of bootstrap and selection.")
    rounds: Literal["synchronous", "overlapping"] = Field(
        default="synchronous",
        description="How iterations follow each other in the service: `synchronous` = each "
        "trainer waits for every chunk of its round; `overlapping` = chunks_per_iteration "
        "chunks are kept in flight, and the next trainer starts once next_round_after of them "
        "have arrived since the last one (the rest train in a later iteration); the trainer "
        "asks for as many new chunks as arrived, so workers never wait for a round's slowest "
        "label or for the trainer (docs/operators-guide.md, section 8).",
    )
    next_round_after: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="With rounds: overlapping, the fraction of chunks_per_iteration that "
        "must arrive (labelled or failed) before the next trainer starts.",
    )
    seed_chunks: int = Field(
        default=0,
        ge=0,
        le=100000,
        description="With rounds: overlapping, this many chunks asked for before any model "
        "exists — centres by farthest-point sampling of the target's atoms in descriptor "
        "space — and labelled beside the initial images, so the workers label from the start "
        "instead of waiting for the initial images and the first training; they count in the "
        "flight and train as they arrive (0: none).",
    )
    selection: Literal["most_uncertain", "diverse"] = Field(
        default="most_uncertain",
        description="How the chunk centres are chosen: `most_uncertain` = the largest δ; "
        "`diverse` = uncertain and unlike each other (δ-weighted farthest point in descriptor "
        "space among the 3·chunks_per_iteration most uncertain atoms).",
    )


class ValidationSpec(_Spec):
    true_forces: bool = Field(
        default=False,
        description="Also label the whole target with the parent to report true errors.",
    )


class PriorLabelsSpec(_Spec):
    file: Path = Field(
        description=(
            "Labels exported by `nft-fw labels NAME --export FILE`: a structure the file "
            "holds a label of is never labelled again, and its NFT chunks of this target "
            "are asked for first, iteration by iteration (docs/labels.md)."
        )
    )
    accept_parent_mismatch: bool = Field(
        default=False,
        description=(
            "Use labels computed with other parent settings (their hash differs from this "
            "campaign's parent) as if this parent had computed them."
        ),
    )


class ServiceSpec(_Spec):
    labels_per_firework: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description=(
            "Chunks labelled by one label Firework; null = 1 for expensive parents (DFT), "
            "13 for cheap ones (EMT) so queue overhead stays small."
        ),
    )
    max_label_fireworks: int = Field(
        default=64,
        ge=1,
        le=10000,
        description=(
            "Most label Fireworks in one round: a round with more chunks than "
            "labels_per_firework × this puts more chunks in each, so the campaign's workflow "
            "(and FireWorks' cost per launch, which grows with it) stays bounded."
        ),
    )
    label_category: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="FireWorks `_category` of label Fireworks; null = `label` (`dft` for gpaw).",
    )
    train_category: str = Field(
        default="train",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="FireWorks `_category` of the init, train and report Fireworks.",
    )
    offline_labels: bool = Field(
        default=False,
        description=(
            "Label Fireworks carry their structures and the parent settings, so workers in "
            "FireWorks offline mode (no database) can run them; `lpad recover_offline` brings "
            "the labels back and the next trainer stores them."
        ),
    )


class RelaxSpec(_Spec):
    fmax: float = Field(
        default=0.05,
        gt=0.0,
        le=100.0,
        description="Converged when every force is below this, eV/Å.",
    )
    max_steps: int = Field(
        default=200, ge=1, le=100000, description="Most optimiser steps per relaxation."
    )
    optimizer: Literal["fire", "lbfgs", "bfgs"] = Field(
        default="fire",
        description="ASE optimiser; bfgs keeps a dense 3N×3N Hessian: avoid above ~500 atoms.",
    )
    retrain: bool = Field(
        default=True,
        description=(
            "Retrain from the trajectory: while its max δ exceeds the threshold, label chunks "
            "cut from it, retrain (warm start) and relax again."
        ),
    )
    chunks_per_round: int = Field(
        default=26, ge=1, le=10000, description="Chunks taken from one trajectory per retraining."
    )
    selection: Literal["cur", "most_uncertain", "diverse"] = Field(
        default="cur",
        description=(
            "How trajectory chunks are chosen among atoms above the threshold: CUR on their "
            "descriptors (diverse environments), the most uncertain, or diverse (the most "
            "uncertain first, then unlike each other, as md.selection)."
        ),
    )
    threshold: float | None = Field(
        default=None,
        gt=0.0,
        description="δ above which a trajectory atom is uncertain, eV/Å; null = nft.threshold.",
    )
    patience: int = Field(
        default=2,
        ge=1,
        description="Stop after this many retrainings without a lower trajectory max δ.",
    )
    max_rounds: int = Field(
        default=5, ge=0, le=100, description="Most retrainings from trajectories."
    )
    max_frames: int = Field(
        default=25,
        ge=2,
        le=10000,
        description=(
            "Trajectory frames kept (evenly spaced, first and last included); chunks come "
            "from those after the start."
        ),
    )
    search_until: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "Take chunks only from the frames up to the first step whose largest δ exceeds "
            "this, eV/Å (where the model first leaves its data), not from the rest of a "
            "trajectory that may have run away from there; null: the whole trajectory."
        ),
    )
    resume: Literal["start", "frontier"] = Field(
        default="start",
        description=(
            "Where round r > 0 relaxes from: start (the target, every round) or frontier "
            "(the frame of round r − 1 where δ first exceeded search_until, as MD continues "
            "from its pause); with frontier a relaxation also stops at the first step after "
            "its start above search_until, which it needs."
        ),
    )
    check_chunks: int = Field(
        default=0,
        ge=0,
        le=10000,
        description=(
            "When a relaxation ends with its largest δ below the threshold, label this many "
            "chunks of its last frame (around the atoms check_selection picks) before the "
            "phase stops: the model's error on their central forces before training on them "
            "checks the relaxed structure itself, where δ may agree and still be wrong; 0: no "
            "check."
        ),
    )
    check_selection: Literal["cover", "most_uncertain"] = Field(
        default="cover",
        description=(
            "Which atoms of the relaxed structure the check labels chunks around: cover "
            "(farthest-point sampling of every atom's descriptors, starting from the most "
            "uncertain: every kind of environment, whatever δ says of it — δ is what the check "
            "checks) or most_uncertain (the largest δ)."
        ),
    )
    check_error: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "The check passes when the checked chunks' central-force MAE before training is at "
            "most this, eV/Å; otherwise the next round trains on them, relaxes again and is "
            "checked again (within max_rounds). Needed with check_chunks."
        ),
    )

    @model_validator(mode="after")
    def _frontier_needs_a_level(self) -> RelaxSpec:
        if self.resume == "frontier" and self.search_until is None:
            raise ValueError(
                "relax.resume: frontier needs relax.search_until (the δ level, eV/Å, that "
                "ends a relaxation and marks where the next round resumes); set it, or use "
                "relax.resume: start"
            )
        return self

    @model_validator(mode="after")
    def _check_needs_both(self) -> RelaxSpec:
        if self.check_chunks and self.check_error is None:
            raise ValueError(
                "relax.check_chunks needs relax.check_error (the largest central-force MAE, "
                "eV/Å, of the relaxed structure's chunks before training that passes the "
                "check); set it, or leave check_chunks out"
            )
        if self.check_error is not None and not self.check_chunks:
            raise ValueError(
                "relax.check_error is set and relax.check_chunks is 0: nothing is checked; "
                "set check_chunks (chunks of the relaxed structure to label), or leave "
                "check_error out"
            )
        if self.check_chunks and not self.retrain:
            raise ValueError(
                "relax.check_chunks needs relax.retrain: true (a failed check trains on the "
                "checked chunks and relaxes again); set retrain, or leave check_chunks out"
            )
        return self


class MDSpec(_Spec):
    integrator: Literal["langevin", "bussi", "nve"] = Field(
        default="langevin",
        description=(
            "ASE integrator: langevin (friction 1/thermostat_time_fs), bussi (stochastic "
            "velocity rescaling, time constant thermostat_time_fs) or nve (velocity Verlet, "
            "for checks; temperature_K sets the starting velocities)."
        ),
    )
    temperature_K: float = Field(default=300.0, gt=0.0, le=5000.0, description="Temperature, K.")
    timestep_fs: float = Field(
        default=2.0, gt=0.0, le=10.0, description="Time step, fs (Pt: up to ~5 fs)."
    )
    thermostat_time_fs: float = Field(
        default=100.0, gt=0.0, le=1.0e6, description="Thermostat time constant, fs."
    )
    length_ps: float = Field(
        default=10.0, gt=0.0, le=1.0e5, description="Length of the whole run, ps."
    )
    structure: str | None = Field(
        default=None,
        description=(
            "What runs: target, relaxed (the relaxation phase's final structure) or the name "
            "of a transfer target; null = relaxed when the campaign relaxes, else target."
        ),
    )
    threshold: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "Largest δ (calibrated or not: md.threshold_on) that pauses the run for labels, "
            "eV/Å; null = relax.threshold or nft.threshold."
        ),
    )
    threshold_on: Literal["delta", "calibrated_delta"] = Field(
        default="calibrated_delta",
        description=(
            "Which δ md.threshold and md.candidate_threshold apply to: calibrated_delta = δ "
            "times the scale fitted to the latest out-of-sample errors (δ as the ensemble "
            "gives it while there are too few); delta = δ as the ensemble gives it (2.58 σ). "
            "delta where the labels' own noise dominates those errors (DFT chunks at a "
            "surface: docs/gpaw.md, 'MD on GPAW') and a calibrated threshold would pause at "
            "every step."
        ),
    )
    candidate_threshold: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "δ above which an atom of the frames since the last retraining may be a chunk "
            "centre at a pause (below md.threshold, so that a pause labels the neighbourhoods "
            "that are becoming uncertain too, not only the one that crossed), eV/Å; null = "
            "half md.threshold."
        ),
    )
    chunks_per_pause: int = Field(
        default=4, ge=1, le=10000, description="Most chunks labelled at one pause."
    )
    selection: Literal["diverse", "most_uncertain", "cur"] = Field(
        default="diverse",
        description=(
            "How a pause's centres are chosen among the atoms above the threshold in the "
            "frames since the last retraining: diverse (most uncertain first, then unlike "
            "each other in descriptor space), most_uncertain, or cur."
        ),
    )
    max_pauses: int = Field(
        default=20,
        ge=0,
        le=10000,
        description="Most pauses (each labels chunks and retrains); what follows them is "
        "md.out_of_pauses.",
    )
    out_of_pauses: Literal["stop", "continue"] = Field(
        default="stop",
        description="When δ exceeds the threshold and no pause is left: stop (the phase ends "
        "there, recorded as stopped: the model has left its data) or continue to the length "
        "without learning, the steps above the threshold counted in the record, the follower, "
        "the report and nft-fw status.",
    )
    frame_every: int = Field(
        default=10,
        ge=1,
        le=1000000,
        description="Steps between stored frames (centres come from stored frames).",
    )
    checkpoint_every: int = Field(
        default=500,
        ge=1,
        le=1000000,
        description="Steps between saved states: a killed MD worker resumes from the last.",
    )
    seed: int | None = Field(
        default=None, ge=0, description="Velocities and thermostat noise; null = nft.seed."
    )
    true_force_check_every: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Validation only: every this many steps the parent labels the whole frame and "
            "the model's forces are compared with it (affordable with EMT, not DFT); null = "
            "never."
        ),
    )


class TransferSpec(TargetSpec):
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Label of the transfer target in records and plots; null = transfer-<k>.",
    )
    retrain: bool = Field(
        default=False,
        description=(
            "When the target's max δ along its relaxation exceeds 2× the trained target's, "
            "start a follow-up campaign <name>-<label> that runs NFT rounds on it, "
            "warm-started from this campaign's model and labels."
        ),
    )
    prior_labels: PriorLabelsSpec | None = Field(
        default=None,
        description=(
            "Labels the follow-up campaign of this target exported before (`nft-fw labels "
            "<name>-<label> --export FILE`): the follow-up takes them as its prior labels, so "
            "its exported iterations and rounds replay with no parent call and it labels only "
            "past their end (docs/labels.md); needs retrain."
        ),
    )
    follow_up: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Settings of the follow-up campaign that differ from this campaign's, as "
            "`section.field: value` of the settings `nft-fw amend` may change (e.g. "
            "`nft.max_iterations: 4`), applied as it is registered; needs retrain."
        ),
    )


#: the settings that may differ between a campaign and what comes after it — `nft-fw amend`
#: on a submitted campaign, a transfer target's ``follow_up`` for its follow-up campaign — by
#: section: the ones that decide what comes next, never one that stored labels, models or
#: records depend on (parent, model, training, chunk radius, target)
AMENDABLE: dict[str, tuple[str, ...]] = {
    "nft": ("max_iterations", "patience", "threshold", "target_error"),
    "relax": (
        "fmax", "max_steps", "chunks_per_round", "selection", "threshold", "patience",
        "max_rounds", "max_frames", "search_until", "resume", "check_chunks", "check_error",
        "check_selection",
    ),
    # each MD segment records the threshold and temperature it ran under
    "md": (
        "length_ps", "max_pauses", "chunks_per_pause", "out_of_pauses", "threshold",
        "candidate_threshold", "temperature_K",
    ),
}  # fmt: skip


def apply_settings(
    data: Mapping[str, Any], settings: Mapping[str, Any], where: str = "", fix: str = ""
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``data`` (a campaign as a mapping) with ``settings`` (``section.field``: value) set,
    not validated, and the changes (``section.field``: [before, after]). Raises CampaignError
    naming ``where`` + the key for a setting not in :data:`AMENDABLE` (``fix``: what to do
    instead) or a phase the campaign lacks."""
    new = copy.deepcopy(dict(data))
    changes: dict[str, list[Any]] = {}
    for key, value in settings.items():
        section, _, name = str(key).partition(".")
        if name not in AMENDABLE.get(section, ()):
            allowed = ", ".join(f"{s}.{f}" for s, fs in AMENDABLE.items() for f in fs)
            raise CampaignError(
                f"{where}{key}",
                "cannot change for what comes next (stored labels, models or records depend "
                f"on it, or it is not a setting); these can: "
                f"{allowed}.{' ' + fix if fix else ''}",
            )
        if not isinstance(new.get(section), dict):
            raise CampaignError(
                f"{where}{key}",
                f"the campaign has no {section} phase; submit a campaign that has one",
            )
        part = dict(new[section])
        changes[str(key)] = [part.get(name), value]
        part[name] = value
        new[section] = part
    return new, changes


def follow_up_name(campaign: str, label: str) -> str:
    """The name of the follow-up campaign of transfer target ``label``."""
    return f"{campaign}-{label}"[:64]


def follow_up_spec(spec: CampaignSpec, index: int) -> CampaignSpec:
    """The campaign transfer target ``index`` becomes when it is flagged with ``retrain``:
    this campaign's settings, its ``follow_up`` settings applied, on the transfer target,
    with no transfer targets of its own and the target's ``prior_labels`` as its own. Raises
    CampaignError naming ``transfer.<index>.follow_up``."""
    entry = spec.transfer[index]
    where = f"transfer.{index}.follow_up."
    data = spec.model_dump(mode="json")
    given = data["transfer"][index]
    data.update(
        name=follow_up_name(spec.name, entry.name or f"transfer-{index}"),
        target={k: v for k, v in given.items() if k not in _TRANSFER_ONLY},
        transfer=[],
        prior_labels=given["prior_labels"],
    )
    new, _ = apply_settings(data, entry.follow_up, where)
    try:
        return CampaignSpec.model_validate(new)
    except ValidationError as err:
        raise CampaignError.from_errors(
            [(f"{where}{f}" if f.split(".")[0] in AMENDABLE else f, m) for f, m in _describe(err)]
        ) from err


#: the keys of a transfer entry that are not the keys of a target
_TRANSFER_ONLY = ("name", "retrain", "prior_labels", "follow_up")


class CampaignSpec(_Spec):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Campaign name: letters, digits, _ . - (up to 64 characters).",
    )
    target: TargetSpec = Field(description="The structure the potential is trained for.")
    parent: ParentSpec = Field(description="The reference calculator that labels chunks.")
    initial: InitialSpec = Field(
        default_factory=lambda: InitialSpec(), description="Initial training set."
    )
    model: ModelSpec = Field(
        default_factory=lambda: ModelSpec(), description="Descriptor and ensemble."
    )
    training: TrainingSpec = Field(default_factory=lambda: TrainingSpec(), description="Optimiser.")
    nft: NFTSpec = Field(
        default_factory=lambda: NFTSpec(), description="Nearsighted force training loop."
    )
    validation: ValidationSpec = Field(
        default_factory=lambda: ValidationSpec(), description="Extra checks against the parent."
    )
    prior_labels: PriorLabelsSpec | None = Field(
        default=None,
        description=(
            "Labels of an earlier or other campaign, used as if this one had computed them; "
            "null = none."
        ),
    )
    service: ServiceSpec = Field(
        default_factory=lambda: ServiceSpec(),
        description="How the campaign runs on FireWorks (ignored by run_locally).",
    )
    relax: RelaxSpec | None = Field(
        default=None,
        description=(
            "After NFT: relax the target with the model, watching δ, and retrain from the "
            "trajectory; null = no relaxation phase."
        ),
    )
    md: MDSpec | None = Field(
        default=None,
        description=(
            "After NFT (and relaxation): molecular dynamics with the model, δ watched every "
            "step; where it exceeds the threshold the run pauses, chunks around the uncertain "
            "atoms are labelled, the model retrains and the run continues from its saved "
            "state; null = no MD phase."
        ),
    )
    transfer: list[TransferSpec] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Other structures relaxed with the final model without new data (relaxation "
            "settings from relax, or its defaults), δ reported along each trajectory. Each "
            "entry takes the keys of `target` plus `name` and `retrain`."
        ),
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> CampaignSpec:
        errors: list[tuple[str, str]] = []
        try:
            parent = get_parent(self.parent.name, self.parent.params, field="parent")
        except ParentError as err:
            errors.append((err.field, err.message))
            parent = None
        targets = [("target", self.target)] + [
            (f"transfer.{k}", t) for k, t in enumerate(self.transfer)
        ]
        for where, target in targets:
            if target.builder is not None:
                errors.extend(_builder_errors(target.builder, f"{where}.builder", parent))
        trained = self.target.builder.species if self.target.builder is not None else None
        labels: dict[str, int] = {}
        for k, t in enumerate(self.transfer):
            label = t.name or f"transfer-{k}"
            if label in labels:
                errors.append(
                    (
                        f"transfer.{k}.name",
                        f"{label!r} is already the name of transfer.{labels[label]}; "
                        "give each transfer target its own name",
                    )
                )
            labels[label] = k
            if (t.prior_labels is not None or t.follow_up) and not t.retrain:
                errors.append(
                    (
                        f"transfer.{k}.retrain",
                        "is false, but prior_labels or follow_up are set for this target's "
                        "follow-up campaign, which only retrain: true starts; set retrain: true "
                        "or leave them out",
                    )
                )
            elif t.follow_up:
                try:
                    follow_up_spec(self, k)
                except CampaignError as err:
                    errors.extend(err.errors)
            if trained is not None and t.builder is not None:
                unseen = sorted(set(t.builder.species) - set(trained))
                if unseen:
                    errors.append(
                        (
                            f"transfer.{k}.builder",
                            f"has {', '.join(unseen)}, which the target (target.builder: "
                            f"{', '.join(sorted(trained))}) lacks: the model has no network for "
                            "it; transfer only to the target's elements, or change the target",
                        )
                    )
        if self.md is not None and self.md.structure is not None:
            names = {"target", "relaxed", *labels}
            if self.md.structure not in names:
                errors.append(
                    (
                        "md.structure",
                        f"is {self.md.structure!r}; use target, relaxed or the name of a "
                        f"transfer target ({', '.join(sorted(labels)) or 'none given'})",
                    )
                )
            elif self.md.structure == "relaxed" and self.relax is None:
                errors.append(
                    (
                        "md.structure",
                        "is relaxed, but the campaign has no relaxation phase; add relax: {} "
                        "or run the MD on target",
                    )
                )
        # the pause level as the MD phase resolves it: a null md.threshold falls back to
        # relax.threshold, then nft.threshold
        pause = self.md_threshold if self.md is not None else None
        if self.md is not None and pause and (self.md.candidate_threshold or 0.0) > pause:
            errors.append(
                (
                    "md.candidate_threshold",
                    f"is {self.md.candidate_threshold:g} eV/Å, above the MD pause threshold "
                    f"({pause:g}, md.threshold or the one it falls back to): a pause would "
                    "find no centre; use at most that (or null: half of it)",
                )
            )
        if self.md is not None and self.md.length_ps * 1000.0 < self.md.timestep_fs:
            errors.append(
                (
                    "md.length_ps",
                    f"is {self.md.length_ps:g} ps, shorter than one time step "
                    f"({self.md.timestep_fs:g} fs); give the run's length in ps",
                )
            )
        if self.nft.seed_chunks and self.nft.rounds != "overlapping":
            errors.append(
                (
                    "nft.seed_chunks",
                    f"is {self.nft.seed_chunks}, but nft.rounds is {self.nft.rounds}: chunks "
                    "asked for before the first model train as they arrive, which only "
                    "overlapping rounds do; set nft.rounds: overlapping or seed_chunks: 0",
                )
            )
        if self.nft.rounds == "overlapping":
            if self.prior_labels is not None:
                errors.append(
                    (
                        "nft.rounds",
                        "is overlapping, but the campaign continues from prior_labels, whose "
                        "chunks replay iteration by iteration; use rounds: synchronous with "
                        "prior_labels",
                    )
                )
            if self.service.offline_labels:
                errors.append(
                    (
                        "nft.rounds",
                        "is overlapping, but service.offline_labels is set: the next trainer "
                        "starts from a label's arrival in the database, which offline labels "
                        "reach only through a trainer; use rounds: synchronous",
                    )
                )
        radius, reach = self.nft.chunk_radius, 2.0 * self.model.cutoff
        if radius is not None and radius < reach and not self.nft.allow_short_chunks:
            errors.append(
                (
                    "nft.chunk_radius",
                    f"is {radius:g} Å, below 2·model.cutoff = {reach:g} Å: the model's force "
                    "on the central atom depends on atoms up to 2·cutoff away, which the chunk "
                    f"would lack; use at least {reach:g} Å (or null), or lower model.cutoff",
                )
            )
        if errors:
            raise CampaignError.from_errors(errors)
        return self

    # ------------------------------------------------------------ settings as the phases use them

    def train_config(self, iteration: int) -> TrainConfig:
        """The optimiser's settings for NFT iteration or relax/MD round ``iteration``: the
        first training (or every one without warm starts) runs ``initial_steps``."""
        from nft_fw.potential.training import TrainConfig

        t = self.training
        first = iteration == 0 or not t.warm_start
        return TrainConfig(
            steps=t.initial_steps if first else t.steps_per_iteration,
            learning_rate=t.learning_rate,
            final_learning_rate=t.final_learning_rate,
            batches=t.batches_per_step,
            energy_weight=t.energy_weight,
            force_weight=t.force_weight,
            bootstrap=t.bootstrap,
            seed=self.nft.seed + 1000 * iteration,
        )

    @property
    def relax_settings(self) -> RelaxSpec:
        """The relaxation's settings (the defaults for a campaign without a relax section:
        its transfer targets are relaxed with them)."""
        return self.relax if self.relax is not None else RelaxSpec()

    @property
    def relax_threshold(self) -> float:
        """δ the relax rounds aim below: relax.threshold, else nft.threshold."""
        return self.relax_settings.threshold or self.nft.threshold

    @property
    def md_spec(self) -> MDSpec:
        """The MD phase's settings; ValueError for a campaign without one."""
        if self.md is None:
            raise ValueError(f"campaign {self.name} has no MD phase (md: null)")
        return self.md

    @property
    def md_threshold(self) -> float:
        """δ at which the MD pauses: md.threshold, else the relax rounds' threshold."""
        return self.md_spec.threshold or self.relax_threshold

    @property
    def md_candidate_threshold(self) -> float:
        """δ above which an atom may be a chunk centre at a pause (default half the
        threshold)."""
        return self.md_spec.candidate_threshold or 0.5 * self.md_threshold

    @property
    def md_total_steps(self) -> int:
        """The run's length in steps: md.length_ps over md.timestep_fs, rounded."""
        m = self.md_spec
        return max(1, round(m.length_ps * 1000.0 / m.timestep_fs))

    @property
    def md_structure(self) -> str:
        """What the MD runs on: target, relaxed or a transfer target's name."""
        return self.md_spec.structure or ("relaxed" if self.relax is not None else "target")

    def to_yaml(self) -> str:
        """The spec as YAML that :func:`load_campaign` reads back to an equal spec."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


GEOMETRY_KEYS = {k for params in GEOMETRY.values() for k in params}


def _builder_errors(
    builder: BuilderSpec, where: str, parent: Parent | None
) -> list[tuple[str, str]]:
    """What is wrong with a builder beyond its own fields: parameters of other kinds, the
    geometry, and elements the parent cannot label."""
    errors: list[tuple[str, str]] = []
    for key in sorted(GEOMETRY_KEYS - set(GEOMETRY[builder.kind])):
        value = getattr(builder, key)
        if value != BuilderSpec.model_fields[key].default:
            errors.append(
                (
                    f"{where}.{key}",
                    f"is not a parameter of kind {builder.kind!r} (its parameters: "
                    f"{', '.join(GEOMETRY[builder.kind])}); remove it (got {value!r})",
                )
            )
    try:
        check_geometry(builder.kind, builder.geometry(), where)
    except StructureError as err:
        errors.append((err.field, err.message))
    if parent is not None:
        key = "element" if builder.element is not None else "composition"
        unsupported = sorted(set(builder.species) - parent.supported_elements)
        if unsupported:
            errors.append(
                (
                    f"{where}.{key}",
                    f"parent {parent.name!r} does not support {', '.join(unsupported)} "
                    f"(supported: {', '.join(sorted(parent.supported_elements))}); "
                    "choose another element or parent",
                )
            )
    return errors


def _plain(check: Any, value: Any, name: str) -> None:
    """Run a structures check inside a pydantic validator (pydantic supplies the location)."""
    try:
        check(value, name)
    except StructureError as err:
        raise ValueError(err.message) from err


# --- loading -----------------------------------------------------------------------------------


def example_campaign() -> dict[str, Any]:
    """The documented example: a rattled 260-atom Pt octahedron trained against EMT."""
    return {
        "name": "pt260-emt",
        "target": {
            "builder": {
                "kind": "octahedron",
                "element": "Pt",
                "length": 8,
                "cutoff": 3,
                "lattice_constant": 3.92,
            },
            "rattle": {"stdev": 0.1, "seed": 0},
        },
        "parent": {"name": "emt", "params": {}},
        "initial": {"generator": "bulk", "n_structures": 20},
        "model": {"cutoff": 6.0, "hidden_layers": [25, 25], "ensemble_size": 10},
        "nft": {
            "chunks_per_iteration": 26,
            "chunk_radius": None,
            "threshold": 0.1,
            "patience": 2,
            "max_iterations": 10,
            "seed": 0,
        },
        "validation": {"true_forces": True},
    }


def load_campaign(
    path_or_dict: str | Path | Mapping[str, Any], base_dir: str | Path | None = None
) -> CampaignSpec:
    """Read and validate a campaign from a YAML file or a mapping.

    Relative ``target.file`` / ``initial.file`` / ``prior_labels.file`` paths (and those of
    the transfer targets) are resolved against ``base_dir``, which
    defaults to the YAML file's folder (for a mapping: left as given). Raises CampaignError.
    """
    source: Path | None = None
    if isinstance(path_or_dict, Mapping):
        raw: Any = copy.deepcopy(dict(path_or_dict))
    else:
        source = Path(path_or_dict)
        if base_dir is None:
            base_dir = source.parent
        try:
            raw = yaml.safe_load(source.read_text())
        except OSError as err:
            raise CampaignError(
                str(source), f"cannot read the campaign file ({err}); check the path"
            ) from err
        except yaml.YAMLError as err:
            raise CampaignError(
                str(source), f"is not valid YAML: {err}; fix the syntax at the place shown"
            ) from err
        if not isinstance(raw, dict):
            raise CampaignError(
                str(source),
                f"holds a YAML {type(raw).__name__}, expected a mapping with keys "
                f"{', '.join(CampaignSpec.model_fields)} (see nft_fw.spec.campaign.example_campaign)",
            )
    if base_dir is not None:
        transfer = raw.get("transfer")
        parts = [raw.get("target"), raw.get("initial"), raw.get("prior_labels")]
        entries = transfer if isinstance(transfer, list) else []
        parts += entries + [t.get("prior_labels") for t in entries if isinstance(t, dict)]
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("file"), str | Path):
                path = Path(part["file"]).expanduser()
                part["file"] = str(path if path.is_absolute() else Path(base_dir) / path)
    try:
        return CampaignSpec.model_validate(raw)
    except ValidationError as err:
        raise CampaignError.from_errors(_describe(err), source) from err


def _describe(
    err: ValidationError,
    model_at: Callable[[tuple[int | str, ...]], type[BaseModel] | None] | None = None,
    fallback: str = "see example_campaign()",
    clean_loc: Callable[[tuple[int | str, ...]], tuple[int | str, ...]] = tuple,
) -> list[tuple[str, str]]:
    """``field.path: message (got …)`` for each error; an unknown key lists the keys allowed
    where it stands (``model_at``: the model at a path, default within CampaignSpec)."""
    errors: list[tuple[str, str]] = []
    for e in err.errors():
        inner = e.get("ctx", {}).get("error")
        if isinstance(inner, CampaignError):
            errors.extend(inner.errors)
            continue
        loc = clean_loc(tuple(e["loc"]))
        where = ".".join(str(p) for p in loc) or "campaign"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            model = (model_at or _model_at)(loc[:-1])
            allowed = ", ".join(model.model_fields) if model else fallback
            message = f"unknown key; allowed keys here: {allowed} (check the spelling)"
        if e["type"] != "missing":
            message += f" (got {_short(e.get('input'))})"
        errors.append((where, message))
    return errors


def _model_at(
    loc: tuple[int | str, ...], root: type[BaseModel] | None = None
) -> type[BaseModel] | None:
    model: type[BaseModel] = CampaignSpec if root is None else root
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        candidates = [info.annotation, *get_args(info.annotation)]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- preparing ---------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A campaign ready to run: its target built and its inputs checked.

    ``elements``: sorted symbols of the target and any initial file; ``chunk_radius_A``: the
    chunk radius in Å; ``initial_frames``: the labelled frames of ``initial.file``, if any;
    ``prior``: the checked labels of ``prior_labels.file``, if any; ``transfer_priors``: those
    of each transfer target's ``prior_labels.file`` (None where it has none).
    """

    spec: CampaignSpec
    target: Atoms
    parent: Parent
    elements: tuple[str, ...]
    chunk_radius_A: float
    warnings: list[str] = field(default_factory=list)
    initial_frames: list[Atoms] | None = None
    transfers: list[tuple[str, Atoms]] = field(default_factory=list)
    prior: PriorLabels | None = None
    transfer_priors: list[PriorLabels | None] = field(default_factory=list)


def prepare(spec: CampaignSpec) -> Prepared:
    """Build (or read), rattle and validate the target; check the initial file; resolve the
    chunk radius. Raises CampaignError naming the field; returns warnings for risky choices.
    """
    try:
        return _prepare(spec)
    except (StructureError, ParentError) as err:
        raise CampaignError(err.field, err.message) from err


def _target_field(target: Any) -> str:
    """The campaign-file field a target is given by (builder or file)."""
    return "target.builder" if getattr(target, "builder", None) is not None else "target.file"


def _transfer_targets(
    spec: CampaignSpec, parent: Parent, elements: set[str]
) -> list[tuple[str, Atoms]]:
    """(name, atoms) of each transfer target, refused when it holds an element the target
    lacks (the model has no network for it)."""
    transfers: list[tuple[str, Atoms]] = []
    for k, t in enumerate(spec.transfer):
        atoms = build_target(t, parent, f"transfer.{k}", spec.name)
        unseen = sorted(set(atoms.get_chemical_symbols()) - elements)
        if unseen:
            raise CampaignError(
                f"transfer.{k}",
                f"has {', '.join(unseen)}, which the target ({_target_field(spec.target)}: "
                f"{', '.join(sorted(elements))}) lacks: the model has no network for it; "
                "transfer only to the target's elements, or change the target",
            )
        transfers.append((t.name or f"transfer-{k}", atoms))
    return transfers


def _initial_frames(path: Path, parent: Parent) -> list[Atoms]:
    """The labelled initial structures of ``initial.file`` (a label export's images only),
    each checked for the parent's elements and its energy and forces."""
    frames = read_frames(path, field="initial.file")
    if any("nft_kind" in f.info for f in frames):  # an nft-fw label export
        frames = [f for f in frames if f.info.get("nft_kind") == "image"]
        if not frames:
            raise CampaignError(
                "initial.file",
                "is a label export without initial images (nft_kind: image); give its "
                "chunks as prior_labels.file, and initial images here",
            )
    for k, frame in enumerate(frames):
        try:
            validate_atoms(frame, "initial.file", parent.supported_elements)
        except StructureError as err:
            raise CampaignError("initial.file", f"frame {k}: {err.message}") from err
        results = frame.calc.results if isinstance(frame.calc, SinglePointCalculator) else {}
        missing = [p for p in ("energy", "forces") if p not in results]
        if missing:
            raise CampaignError(
                "initial.file",
                f"frame {k} has no {' or '.join(missing)}; the initial file must hold "
                "structures labelled by the parent (e.g. extxyz written after a single "
                "point), or use initial.generator: bulk",
            )
    return frames


def _prior_labels(
    given: PriorLabelsSpec | None, field: str, parent: Parent, elements: set[str]
) -> PriorLabels | None:
    """A prior label file read and checked against the parent's settings and the campaign's
    elements (None without one); ``field`` names it in errors."""
    if given is None:
        return None
    try:
        prior = read_prior(
            given.file,
            parent.settings_hash,
            given.accept_parent_mismatch,
            field=field,
            rehash=lambda name, params: get_parent(name, dict(params)).settings_hash,
        )
    except PriorError as err:
        raise CampaignError(err.field, err.message) from err
    for lb in prior.labels.values():
        try:
            validate_atoms(lb.atoms, field, parent.supported_elements)
        except StructureError as err:
            raise CampaignError(field, err.message) from err
        unseen = sorted(set(lb.atoms.get_chemical_symbols()) - elements)
        if unseen and lb.kind != "image":
            raise CampaignError(
                field,
                f"a {lb.kind} label holds {', '.join(unseen)}, which the target lacks; "
                "import labels of this target's elements only",
            )
    return prior


def _prepare_warnings(spec: CampaignSpec, parent: Parent, chunk_radius: float) -> list[str]:
    """What the campaign may run with but should know: chunks shorter than the model's or
    the parent's reach, and an error target that a DFT parent's chunks cannot vouch for."""
    warnings: list[str] = []
    if chunk_radius < 2.0 * spec.model.cutoff:  # only with nft.allow_short_chunks
        warnings.append(
            f"nft.chunk_radius {chunk_radius:g} Å is below 2·model.cutoff = "
            f"{2.0 * spec.model.cutoff:g} Å: the model's central force then depends on atoms "
            "outside the chunk; use at least that radius"
        )
    if chunk_radius < parent.force_locality_A:
        warnings.append(
            f"nft.chunk_radius {chunk_radius:g} Å is below the force locality of parent "
            f"{parent.name!r} ({parent.force_locality_A:.2f} Å): the parent's central force in a "
            "chunk differs from that in the full structure; use at least that radius"
        )
    if spec.nft.target_error is not None and spec.parent.name in DFT_PARENTS:
        warnings.append(
            f"nft.target_error {spec.nft.target_error:g} eV/Å with a DFT parent: the estimated "
            "error measures the model against its chunk labels, not against the whole "
            "structure; on Pt140 GPAW it put 0.115 eV/Å on a model 0.266 from the whole "
            "particle (docs/training.md). Check the kept model on a whole-structure label"
        )
    return warnings


def _prepare(spec: CampaignSpec) -> Prepared:
    parent = get_parent(spec.parent.name, spec.parent.params, field="parent")
    target = build_target(spec.target, parent, "target", spec.name)
    elements = set(target.get_chemical_symbols())
    transfers = _transfer_targets(spec, parent, elements)
    frames = None
    if spec.initial.file is not None:
        frames = _initial_frames(spec.initial.file, parent)
        for frame in frames:
            elements |= set(frame.get_chemical_symbols())
    prior = _prior_labels(spec.prior_labels, "prior_labels.file", parent, elements)
    transfer_priors = [
        _prior_labels(t.prior_labels, f"transfer.{k}.prior_labels.file", parent, elements)
        for k, t in enumerate(spec.transfer)
    ]
    if spec.model.baseline != "none":
        missing = baseline_mod.unsupported(spec.model.baseline, sorted(elements))
        if missing:
            raise CampaignError(
                "model.baseline",
                f"the {spec.model.baseline} baseline has no parameters for "
                f"{', '.join(missing)}; use model.baseline: none for these elements",
            )
    if spec.nft.seed_chunks > len(target):
        raise CampaignError(
            "nft.seed_chunks",
            f"asks for {spec.nft.seed_chunks} chunks of a target of {len(target)} atoms (one "
            f"per atom at most); use at most {len(target)}",
        )
    chunk_radius = spec.nft.chunk_radius or 2.0 * spec.model.cutoff
    warnings = _prepare_warnings(spec, parent, chunk_radius)
    for message in warnings:
        log.warning("campaign %s: %s", spec.name, message)
    return Prepared(
        spec=spec,
        target=target,
        parent=parent,
        elements=tuple(sorted(elements)),
        chunk_radius_A=chunk_radius,
        warnings=warnings,
        initial_frames=frames,
        transfers=transfers,
        prior=prior,
        transfer_priors=transfer_priors,
    )


def build_target(target_spec: TargetSpec, parent: Parent, where: str, campaign: str = "") -> Atoms:
    """Build (or read) and rattle one structure of the campaign file, checked for the parent;
    ``where`` names its field in errors."""
    if target_spec.builder is not None:
        b = target_spec.builder
        a = b.lattice_constant
        if a is None:
            try:
                a = vegard_lattice_constant(b.species, parent.optimal_lattice_constant)
            except ParentError as err:
                raise CampaignError(f"{where}.builder.lattice_constant", err.message) from err
            log.info(
                "campaign %s: %s lattice constant %.4f Å from parent %s",
                campaign,
                where,
                a,
                parent.name,
            )
        atoms = build_nanoparticle(
            b.kind,
            element=b.element,
            composition=b.composition,
            seed=b.seed,
            lattice_constant=a,
            field=f"{where}.builder",
            **b.geometry(),
        )
    else:
        assert target_spec.file is not None
        atoms = read_structure(target_spec.file, target_spec.index, field=f"{where}.file")
    if target_spec.rattle is not None:
        validate_atoms(atoms, where, parent.supported_elements)
        atoms = rattle(atoms, target_spec.rattle.stdev, target_spec.rattle.seed)
        try:
            validate_atoms(atoms, where, parent.supported_elements)
        except StructureError as err:
            raise CampaignError(
                f"{where}.rattle.stdev",
                f"{err.message} after the rattle of {target_spec.rattle.stdev:g} Å; use a "
                "smaller stdev",
            ) from err
        return atoms
    validate_atoms(atoms, where, parent.supported_elements)
    return atoms


# --- the nearsightedness campaign ----------------------------------------------------------------
# A campaign file with ``kind: nearsightedness`` runs the analysis of nft_fw.steps.nearsightedness as
# FireWorks (chunk labels on any worker, then one analysis Firework), instead of training. Its
# labels are kept apart from training labels. Files without ``kind`` are NFT campaigns.

NEARSIGHTEDNESS = "nearsightedness"
CAMPAIGN_KINDS = ("nft", NEARSIGHTEDNESS)
MAX_NS_FIREWORKS = 1000  # above this many label Fireworks in one workflow, warn


class CentresSampleSpec(_Spec):
    count: int = Field(
        ge=1, le=100000, description="Distinct atoms drawn at random as centres (at most all)."
    )
    seed: int = Field(default=0, ge=0, description="Seed of numpy.random.default_rng for the draw.")


def _centres_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return "all"
    if isinstance(value, list | tuple):
        return "indices"
    if isinstance(value, Mapping | CentresSampleSpec):
        return "random"
    return None


CENTRES_TAGS = ("all", "indices", "random")
Centres = Annotated[
    Annotated[Literal["all"], Tag("all")]
    | Annotated[list[Annotated[int, Field(ge=0)]], Tag("indices")]
    | Annotated[CentresSampleSpec, Tag("random")],
    Discriminator(
        _centres_shape,
        custom_error_type="centres_shape",
        custom_error_message=(
            "give 'all', a list of atom indices (e.g. [0, 12, 40]) or a random draw "
            "{count: N, seed: S}"
        ),
    ),
]


class NearsightednessServiceSpec(_Spec):
    labels_per_firework: int = Field(
        default=1,
        ge=1,
        le=10000,
        description=(
            "Distinct chunks labelled by one label Firework (the whole structure always has "
            "a Firework of its own); raise it for cheap parents such as EMT."
        ),
    )
    label_category: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description=(
            "FireWorks `_category` of the label Fireworks; null = `label` (`dft` for gpaw)."
        ),
    )
    analysis_category: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description=(
            "FireWorks `_category` of the analysis Firework (statistics and plot, seconds on a "
            "CPU); null = the label category."
        ),
    )


class NearsightednessSpec(_Spec):
    kind: Literal["nearsightedness"] = Field(
        description="Campaign kind: `nearsightedness` (leave kind out for an NFT campaign)."
    )
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Campaign name: letters, digits, _ . - (up to 64 characters).",
    )
    target: TargetSpec = Field(description="The structure whose chunks are compared.")
    parent: ParentSpec = Field(description="The reference calculator that labels the chunks.")
    centres: Centres = Field(
        description=(
            "Atoms the chunks are cut around: `all`, a list of atom indices, or "
            "`{count, seed}`: that many distinct atoms drawn at random."
        )
    )
    radii: list[Annotated[float, Field(gt=0.0, le=100.0)]] = Field(
        min_length=1,
        max_length=100,
        description="Chunk radii, Å (each > 0 and given once; analysed in ascending order).",
    )
    full: bool = Field(
        default=True,
        description=(
            "Also label the whole target and compare each chunk's central force with it; "
            "false when that is unaffordable (the largest chunk is then the reference)."
        ),
    )
    tolerance_eV_per_A: float = Field(
        default=0.05,
        gt=0.0,
        le=100.0,
        description=(
            "Recommend the smallest radius from which every centre's deviation stays below "
            "this, eV/Å."
        ),
    )
    service: NearsightednessServiceSpec = Field(
        default_factory=lambda: NearsightednessServiceSpec(),
        description="How the labels run on FireWorks.",
    )

    @field_validator("radii")
    @classmethod
    def _distinct_radii(cls, value: list[float]) -> list[float]:
        twice = sorted({r for r in value if value.count(r) > 1})
        if twice:
            raise ValueError(
                f"{', '.join(f'{r:g}' for r in twice)} Å given more than once; give each "
                "radius once"
            )
        return value

    @field_validator("centres")
    @classmethod
    def _distinct_centres(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("the list of centres is empty; give at least one atom index")
            twice = sorted({c for c in value if value.count(c) > 1})
            if twice:
                raise ValueError(f"atoms {twice} given more than once; give each centre once")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> NearsightednessSpec:
        errors: list[tuple[str, str]] = []
        try:
            parent = get_parent(self.parent.name, self.parent.params, field="parent")
        except ParentError as err:
            errors.append((err.field, err.message))
            parent = None
        if self.target.builder is not None:
            errors.extend(_builder_errors(self.target.builder, "target.builder", parent))
        if errors:
            raise CampaignError.from_errors(errors)
        return self

    def to_yaml(self) -> str:
        """The spec as YAML that :func:`load_any_campaign` reads back to an equal spec."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


AnySpec = CampaignSpec | NearsightednessSpec


def load_any_campaign(
    path_or_dict: str | Path | Mapping[str, Any], base_dir: str | Path | None = None
) -> AnySpec:
    """Read and validate a campaign of any kind: ``kind: nearsightedness`` gives a
    :class:`NearsightednessSpec`; no ``kind`` (or ``kind: nft``) an NFT :class:`CampaignSpec`
    exactly as :func:`load_campaign` reads it. Raises CampaignError."""
    source: Path | None = None
    raw: Any
    if isinstance(path_or_dict, Mapping):
        raw = copy.deepcopy(dict(path_or_dict))
    else:
        source = Path(path_or_dict)
        try:
            raw = yaml.safe_load(source.read_text())
        except (OSError, yaml.YAMLError):
            raw = None
        if base_dir is None:
            base_dir = source.parent
    if isinstance(raw, dict) and "kind" not in raw and {"centres", "radii"} & set(raw):
        raise CampaignError(
            "kind",
            "missing: a file with centres and radii is a nearsightedness campaign; add "
            f"kind: {NEARSIGHTEDNESS} (without kind the file is read as an NFT campaign)",
            source=source,
        )
    if not isinstance(raw, dict) or "kind" not in raw:
        return load_campaign(path_or_dict, base_dir)  # its errors for unreadable files too
    kind = raw.pop("kind")
    if kind == "nft":
        try:
            return load_campaign(raw, base_dir)
        except CampaignError as err:
            raise CampaignError.from_errors(err.errors, source) from err
    if kind != NEARSIGHTEDNESS:
        raise CampaignError(
            "kind",
            f"unknown campaign kind; use {NEARSIGHTEDNESS}, or leave kind out for an NFT "
            f"campaign (got {_short(kind)})",
            source=source,
        )
    raw["kind"] = kind
    target = raw.get("target")
    if base_dir is not None and isinstance(target, dict) and isinstance(target.get("file"), str):
        path = Path(target["file"]).expanduser()
        target["file"] = str(path if path.is_absolute() else Path(base_dir) / path)
    try:
        return NearsightednessSpec.model_validate(raw)
    except ValidationError as err:
        raise CampaignError.from_errors(_describe_nearsightedness(err), source) from err


def _describe_nearsightedness(err: ValidationError) -> list[tuple[str, str]]:
    """``field.path: message (got …)`` for a NearsightednessSpec; the union tags pydantic puts
    into the path of ``centres`` are left out."""
    return _describe(
        err,
        model_at=_ns_model_at,
        fallback="see docs/campaign-file.md",
        clean_loc=lambda loc: tuple(
            p for k, p in enumerate(loc) if not (k == 1 and loc[0] == "centres")
        ),
    )


def _ns_model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    if loc == ("centres",):
        return CentresSampleSpec
    return _model_at(loc, NearsightednessSpec)


@dataclass
class PreparedNearsightedness:
    """A nearsightedness campaign ready to submit: its target built, centres drawn, and
    every chunk cut (``plan``: an :class:`nft_fw.structures.chunks.ChunkPlan`; radii
    ascending, Å)."""

    spec: NearsightednessSpec
    target: Atoms
    parent: Parent
    centres: list[int]
    radii: list[float]
    plan: Any
    warnings: list[str] = field(default_factory=list)

    @property
    def n_label_fireworks(self) -> int:
        """Label Fireworks of the workflow: chunk batches, plus the whole structure."""
        per = self.spec.service.labels_per_firework
        return -(-len(self.plan.distinct()) // per) + int(self.spec.full)


def prepare_nearsightedness(spec: NearsightednessSpec) -> PreparedNearsightedness:
    """Build (or read) and rattle the target, resolve the centres and cut every chunk.
    Raises CampaignError naming the field; returns warnings for choices that cannot give a
    useful answer."""
    from nft_fw.structures.chunks import plan_chunks, random_centres

    try:
        parent = get_parent(spec.parent.name, spec.parent.params, field="parent")
        target = build_target(spec.target, parent, "target", spec.name)
    except (StructureError, ParentError) as err:
        raise CampaignError(err.field, err.message) from err
    n = len(target)
    if spec.centres == "all":
        centres = list(range(n))
    elif isinstance(spec.centres, CentresSampleSpec):
        if spec.centres.count > n:
            raise CampaignError(
                "centres.count",
                f"asks for {spec.centres.count} distinct atoms of a target of {n}; use at "
                f"most {n}, or centres: all (got {spec.centres.count})",
            )
        centres = random_centres(n, spec.centres.count, spec.centres.seed)
    else:
        centres = list(spec.centres)
        outside = [c for c in centres if c >= n]
        if outside:
            raise CampaignError(
                "centres",
                f"atoms {outside} are outside the target's {n} atoms (indices 0–{n - 1}); "
                f"use indices below {n} (got {_short(centres)})",
            )
    plan = plan_chunks(target, centres, spec.radii)
    radii = plan.radii
    warnings: list[str] = []
    if radii[-1] < parent.force_locality_A:
        warnings.append(
            f"radii: the largest, {radii[-1]:g} Å, is below the force locality of parent "
            f"{parent.name!r} ({parent.force_locality_A:.2f} Å): the deviation may not have "
            "levelled off by then; add a larger radius"
        )
    if not spec.full and len(radii) < 2:
        warnings.append(
            "radii: with full: false the largest chunk is the reference and cannot be judged "
            "itself; give at least two radii for a recommendation"
        )
    whole = [r for k, r in enumerate(radii) if min(plan.n_atoms[k]) == n]
    if whole:
        warnings.append(
            f"radii: from {whole[0]:g} Å on every chunk is the whole target, which says "
            "nothing about locality; use a larger target or smaller radii"
        )
    prepared = PreparedNearsightedness(
        spec=spec,
        target=target,
        parent=parent,
        centres=centres,
        radii=radii,
        plan=plan,
        warnings=warnings,
    )
    if prepared.n_label_fireworks > MAX_NS_FIREWORKS:
        warnings.append(
            f"service.labels_per_firework: {prepared.n_label_fireworks} label Fireworks in "
            "one workflow make every state change slow (FireWorks rewrites the workflow each "
            "time); raise labels_per_firework or use fewer centres"
        )
    for message in warnings:
        log.warning("campaign %s: %s", spec.name, message)
    return prepared


def kind_of(prepared: Prepared | PreparedNearsightedness) -> str:
    """The kind of a prepared campaign, one of :data:`CAMPAIGN_KINDS` (the key of
    ``nft_fw.firetasks.kinds.KINDS``)."""
    return NEARSIGHTEDNESS if isinstance(prepared, PreparedNearsightedness) else "nft"


def prepare_any(spec: AnySpec) -> Prepared | PreparedNearsightedness:
    """:func:`prepare` for an NFT campaign, :func:`prepare_nearsightedness` otherwise."""
    if isinstance(spec, NearsightednessSpec):
        return prepare_nearsightedness(spec)
    return prepare(spec)


# --- how the service routes a campaign's work ----------------------------------------------------
# One rule for every kind of campaign: which FireWorks _category its label Fireworks carry,
# and how many items each holds. Shaping (nft_fw.workflows) and storing (nft_fw.launchpad)
# both read it from here.

DFT_PARENTS = frozenset({"gpaw"})  # their labels go to 'dft' workers
CHEAP_PARENTS = {"emt": 13}  # default chunks per label Firework; other parents label one each
#: how a campaign's Fireworks are laid out: one workflow that its trainers grow
#: (nft_fw.workflows.campaign). Campaigns without this field were submitted by nft-fw 0.1.
LAYOUT = "one-workflow"


def label_category(spec: AnySpec) -> str:
    """FireWorks ``_category`` of a campaign's label Fireworks: ``service.label_category``,
    else ``dft`` for a DFT parent and ``label`` for any other."""
    if spec.service.label_category:
        return spec.service.label_category
    return "dft" if spec.parent.name in DFT_PARENTS else "label"


def analysis_category(spec: NearsightednessSpec) -> str:
    """FireWorks ``_category`` of a nearsightedness campaign's analysis Firework."""
    return spec.service.analysis_category or label_category(spec)


def labels_per_firework(spec: CampaignSpec) -> int:
    """Items per label Firework: ``service.labels_per_firework``, else the parent's default."""
    return spec.service.labels_per_firework or CHEAP_PARENTS.get(spec.parent.name, 1)
