"""docs/readings.md, where the paper leaves room: its settings are the config's defaults, its other readings valid."""

import ast
import dataclasses
import importlib
import re
from pathlib import Path

from csigen.config import TrainConfig, make_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "readings.md"
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
ASSIGNMENT = re.compile(r"`([a-z_0-9]+)=([^`]+)`")


def default(name):
    f = FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def tables() -> dict[str, list[list[str]]]:
    """The rows (cells) of each table, by the heading above it."""
    out, heading = {}, None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and not set(line) <= set("|-: "):
            out.setdefault(heading, []).append([c.strip() for c in line.strip().strip("|").split("|")])
    return {h: rows[1:] for h, rows in out.items()}  # without the header rows


def assignments(cell: str) -> list[tuple[str, object]]:
    found = []
    for name, value in ASSIGNMENT.findall(cell):
        assert name in FIELDS, f"docs/readings.md names `{name}=...`, which is no TrainConfig field"
        found.append((name, ast.literal_eval(value)))
    return found


def test_what_the_paper_states_is_the_default():
    rows = tables()["What the paper states, and csigen's defaults for it"]
    assert len(rows) >= 6
    stated = [a for _, csigen in rows for a in assignments(csigen)]
    assert {n for n, _ in stated} >= {"gan_every", "gan_lr", "gan_betas", "rec_lambda", "num_shifts", "cls_weight"}
    for name, value in stated:
        assert default(name) == value, f"docs/readings.md says the paper's {name} is {value!r}, the default is " \
                                       f"{default(name)!r}"


def test_each_reading_has_its_default_and_a_valid_other_reading():
    rows = tables()["Readings"]
    assert len(rows) >= 10
    named = set()
    for row in rows:
        assert len(row) == 5, row
        ours, others = assignments(row[2]), assignments(row[3])
        assert ours and others, f"reading {row[0]} needs csigen's `field=value` and the other one's: {row}"
        for name, value in ours:
            assert default(name) == value, f"reading {row[0]}: the default of {name} is {default(name)!r}, " \
                                           f"not {value!r}"
        for name, value in others:
            assert value != default(name), f"reading {row[0]}: {name}={value!r} is the default, not another reading"
            make_config("smoke", **{name: value})  # a valid configuration (raises ConfigError otherwise)
        if len({n for n, _ in others}) == len(others) > 1:  # several fields: one reading, valid together
            make_config("smoke", **dict(others))
        named |= {n for n, _ in ours + others}
    assert named >= {"f_optimizer", "train_blur_p", "rec_reduction", "gan_batch_size", "critic_bn_stats",
                     "joint_bn_stats", "gan_loss", "score", "eval_samples", "cifar100_superclasses"}


def test_the_code_it_points_to_exists():
    names = set(re.findall(r"`(csigen(?:\.[A-Za-z_0-9]+)+)`", DOC.read_text()))
    assert len(names) >= 10
    for dotted in sorted(names):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"docs/readings.md points to {dotted}, which does not exist"
            obj = getattr(obj, attr)


def test_the_readme_links_it():
    assert "docs/readings.md" in (DOC.parents[1] / "README.md").read_text()
