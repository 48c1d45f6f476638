"""Every FireTask survives FireWorks' round trip through the database: its stored
``_fw_name`` names the import path it is loaded back from, and its parameters come back
equal. Task import paths are stored with every Firework (never renamed or moved)."""

from __future__ import annotations

import importlib
import inspect

import pytest
from fireworks import FiretaskBase, Firework
from fireworks.utilities.fw_serializers import load_object

MODULES = ("nft_fw.firetasks.nft", "nft_fw.firetasks.nearsightedness", "nft_fw.firetasks.smoke")


def _tasks() -> list[type[FiretaskBase]]:
    out = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, FiretaskBase) and cls.__module__ == name and cls.required_params:
                out.append(cls)
    return out


def test_every_module_has_tasks() -> None:
    names = {cls.__name__ for cls in _tasks()}
    assert {
        "InitTask",
        "LabelTask",
        "TrainTask",
        "RelaxTask",
        "MDTask",
        "TransferTask",
        "ReportTask",
    } <= names
    assert {"NearsightednessLabelTask", "NearsightednessReportTask", "SumTask"} <= names


@pytest.mark.parametrize("cls", _tasks(), ids=lambda c: c.__name__)
def test_a_task_comes_back_from_its_stored_form(cls: type[FiretaskBase]) -> None:
    params = {
        p: [1, {"a": 2}] if p in ("items", "values") else f"x-{p}" for p in cls.required_params
    }
    task = cls(**params)
    stored = Firework(task, name="t").to_db_dict()["spec"]["_tasks"][0]
    assert stored["_fw_name"] == "{{" + f"{cls.__module__}.{cls.__name__}" + "}}"
    back = load_object(stored)
    assert type(back) is cls
    assert {k: v for k, v in back.items() if k != "_fw_name"} == params
