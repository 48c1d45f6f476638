"""The campaign-file reference, ``docs/campaign-file.md``, generated from the pydantic models of
:mod:`nft_fw.spec.campaign`, so that it lists exactly the fields the loader accepts, with their
types, defaults, bounds and descriptions.

Regenerate it after changing a model (``make docs`` runs the first command)::

    .venv/bin/python -m nft_fw.spec.reference --write docs/campaign-file.md
    .venv/bin/python -m nft_fw.spec.reference > docs/campaign-file.md

The introduction and the notes between the tables are written here; every table row comes from
a model field (its ``description=`` is the "meaning" column).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nft_fw.spec.campaign import CampaignSpec, NearsightednessSpec

COMMAND = "make docs"
WRITE_COMMAND = ".venv/bin/python -m nft_fw.spec.reference --write docs/campaign-file.md"

HEADER = f"""\
<!-- Generated file, do not edit: regenerate it with `{COMMAND}`
     ({WRITE_COMMAND})
     after changing the models in nft_fw/spec/campaign.py or the text in nft_fw/spec/reference.py. -->

"""

INTRO = """\
# The campaign file

YAML, validated before anything runs; an unknown key, a wrong type, a negative radius, an
unknown element or parent, a missing or empty structure file, NaN coordinates or atoms
closer than 0.5 Å are refused with one message per problem naming the field
(`target.rattle.stdev: Input should be greater than or equal to 0 (got -1)`).
Examples: [`nft_fw/examples/pt260-emt.yaml`](../nft_fw/examples/pt260-emt.yaml),
[`ptau-alloy-emt.yaml`](../nft_fw/examples/ptau-alloy-emt.yaml) (Pt–Au alloy),
[`pt111-slab-emt.yaml`](../nft_fw/examples/pt111-slab-emt.yaml) (periodic slab).

```yaml
name: pt260-emt
target:   {builder: {kind: octahedron, element: Pt, length: 8, cutoff: 3, lattice_constant: 3.92},
           rattle: {stdev: 0.1, seed: 0}}         # or target: {file: particle.xyz}
parent:   {name: emt, params: {}}                 # emt | gpaw (params go to the calculator)
initial:  {generator: bulk, n_structures: 20}     # or initial: {file: labelled.extxyz}
model:    {cutoff: 6.0, hidden_layers: [25, 25], ensemble_size: 10}
training: {steps_per_iteration: 1500}             # default 3000: fewer chunks, more training
nft:      {chunks_per_iteration: 26, chunk_radius: null, threshold: 0.1, patience: 2,
           max_iterations: 10, seed: 0}           # default 13 chunks per iteration
validation: {true_forces: true}                   # benchmark only: parent on the whole target
```

The parameters of the GPAW parent (`parent.params` with `parent: {name: gpaw}`) are listed
under [DFT parent (GPAW)](gpaw.md#dft-parent-gpaw). In the tables, a field `a.b` is the key
`b` of the mapping `a`; an entry of the list `transfer` takes the keys `transfer.…`.

## NFT campaign files
"""

BUILDER_KINDS = """\
Builder kinds: `octahedron` (`length`, `cutoff`), `cuboctahedron` (`length`),
`icosahedron` (`shells`), `decahedron` (`p`, `q`, `r`), `fcc111`/`fcc100` slabs (`size`,
`vacuum`), `bulk` (`repeat`, `vacancies`); `element` or `composition` for alloys.
"""

NEARSIGHTEDNESS_INTRO = """\
## Nearsightedness campaign files

A file with `kind: nearsightedness` runs the
[nearsightedness analysis](gpaw.md#nearsightedness-analysis) on FireWorks workers instead of
training (`nft-fw validate` and `nft-fw submit` take it; without `kind` a file is an NFT
campaign). `target` and `parent` take the keys documented above. Example:
[`nft_fw/examples/pt260-nearsightedness-emt.yaml`](../nft_fw/examples/pt260-nearsightedness-emt.yaml).

```yaml
kind: nearsightedness
name: pt260-nearsightedness-emt
target:   {builder: {kind: octahedron, element: Pt, length: 8, cutoff: 3, lattice_constant: 3.92},
           rattle: {stdev: 0.1, seed: 0}}
parent:   {name: emt, params: {}}
centres:  {count: 8, seed: 0}                     # or: all, or [0, 17, 130]
radii:    [4, 6, 8, 10, 12]                       # Å
full:     true                                    # also label the whole target
tolerance_eV_per_A: 0.05
service:  {labels_per_firework: 8}
```
"""

_TABLE_HEAD = "| field | type | default | meaning |\n|---|---|---|---|\n"


def campaign_file_reference() -> str:
    """The whole of ``docs/campaign-file.md``: introduction, the NFT campaign table, the
    nearsightedness campaign table."""
    walker = _Walker()
    return "\n".join(
        [
            HEADER + INTRO,
            walker.table(CampaignSpec),
            BUILDER_KINDS,
            NEARSIGHTEDNESS_INTRO,
            walker.table(NearsightednessSpec, expand_known=False),
        ]
    )


class _Walker:
    """Writes the tables of one page, remembering which fields it has described so that a field
    met again (``transfer.builder.kind``, the same field as ``target.builder.kind``) reads "As
    `target.builder.kind`", and which models it has expanded."""

    def __init__(self) -> None:
        self.described: dict[tuple[type, str], str] = {}
        self.expanded: dict[type[BaseModel], str] = {}
        self.known: dict[type[BaseModel], str] = {}  # models expanded in earlier tables
        self.expand_known = True

    def table(self, model: type[BaseModel], *, expand_known: bool = True) -> str:
        """A markdown table of ``model``'s fields. ``expand_known=False``: a nested model
        expanded in an earlier table is referred to, not listed again."""
        self.expand_known = expand_known
        self.known = dict(self.expanded)
        return _TABLE_HEAD + "".join(self._rows(model, ""))

    def _rows(self, model: type[BaseModel], prefix: str) -> Iterator[str]:
        self.expanded.setdefault(model, prefix.rstrip("."))
        for name, info in model.model_fields.items():
            path = prefix + name
            key = (_defined_in(model, name), name)
            description = _description(info, path)
            if key in self.described:
                description = f"As `{self.described[key]}`."
            else:
                self.described[key] = path
            subs = _models(info.annotation)
            known = [self.known[s] for s in subs if s in self.known and not self.expand_known]
            if known:
                description += f" Its keys are those of `{known[0]}` in the table above."
            cells = [f"`{path}`", _type(info.annotation, info.metadata), _default(info)]
            yield "| " + " | ".join([*cells, _escape(description)]) + " |\n"
            if not known:
                for sub in subs:
                    yield from self._rows(sub, path + ".")


def _defined_in(model: type[BaseModel], name: str) -> type:
    """The class (of ``model``'s bases) whose body declares the field ``name``."""
    for cls in reversed(model.__mro__):
        if name in inspect.get_annotations(cls):
            return cls
    return model


def _description(info: FieldInfo, path: str) -> str:
    if not info.description:
        raise ValueError(
            f"campaign field {path} has no description; give its Field a description= "
            "(the reference's meaning column)"
        )
    return info.description


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, …]`` → (X, its constraint metadata); anything else as it is."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        meta: list[Any] = []
        for item in extra:
            meta += item.metadata if isinstance(item, FieldInfo) else [item]
        return inner, meta
    return annotation, []


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field holds, directly, in a list or as a member of a union."""
    annotation, _ = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if _is_union(annotation) or typing.get_origin(annotation) is list:
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", Path: "path"}


def _type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """The YAML type of a field, with its bounds: ``1 ≤ integer ≤ 512``, ``list (1–4 items)
    of …``, ```fire`, `lbfgs` or `bfgs```."""
    annotation, own = _strip(annotation)
    metadata = [*own, *metadata]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(annotation):
        members = [a for a in args if a is not type(None)]
        parts = [_type(a, metadata if len(members) == 1 else ()) for a in members]
        if len(members) < len(args):
            parts.append("null")
        return _choice(parts)
    if origin is typing.Literal:
        return _choice([f"`{v}`" for v in args])
    if origin is list:
        return f"list{_length(metadata)} of {_type(args[0])}"
    if origin is dict:
        key, value = args
        if value is Any:
            return "mapping"
        return f"mapping of {_type(key)} to {_type(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    name = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    pattern = next((m.pattern for m in metadata if getattr(m, "pattern", None)), None)
    if pattern is not None:
        return f"{name} matching `{pattern}`"
    return _bounds(name, metadata)


def _choice(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _bounds(name: str, metadata: Sequence[Any]) -> str:
    """``name`` with its bounds: ``integer ≥ 1``, ``0 < number < 1``, ``number ≤ 100``."""
    low: tuple[bool, str] | None = None  # (inclusive, value)
    high: tuple[bool, str] | None = None
    for m in metadata:
        if isinstance(m, at.Ge):
            low = (True, _number(m.ge))
        elif isinstance(m, at.Gt):
            low = (False, _number(m.gt))
        elif isinstance(m, at.Le):
            high = (True, _number(m.le))
        elif isinstance(m, at.Lt):
            high = (False, _number(m.lt))
    if low is not None and high is not None:
        return f"{low[1]} {'≤' if low[0] else '<'} {name} {'≤' if high[0] else '<'} {high[1]}"
    if low is not None:
        return f"{name} {'≥' if low[0] else '>'} {low[1]}"
    if high is not None:
        return f"{name} {'≤' if high[0] else '<'} {high[1]}"
    return name


def _length(metadata: Sequence[Any]) -> str:
    low = next((m.min_length for m in metadata if isinstance(m, at.MinLen)), None)
    high = next((m.max_length for m in metadata if isinstance(m, at.MaxLen)), None)
    if low is not None and low == high:
        return f" ({low} items)"
    if low is not None and high is not None:
        return f" ({low}–{high} items)"
    if low is not None:
        return f" (at least {low} item{'s' if low > 1 else ''})"
    if high is not None:
        return f" (at most {high} items)"
    return ""


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "each key's default"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A default as it would be written in the campaign file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _escape(text: str) -> str:
    """Text for a table cell: ``|`` escaped everywhere, ``<`` outside code spans (it would
    start an HTML tag)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if k % 2 else p.replace("<", "\\<") for k, p in enumerate(parts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nft_fw.spec.reference",
        description="Print (or write) docs/campaign-file.md, generated from nft_fw.spec.campaign.",
    )
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="write the page to PATH instead of stdout"
    )
    args = parser.parse_args(argv)
    text = campaign_file_reference()
    if args.write is not None:
        args.write.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
