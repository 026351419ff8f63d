"""Checks of docs/ against the code they describe, where the description is exact enough to be
checked: the crate graph of docs/architecture.md against each crate's Cargo.toml, and the table
of renamed flags in docs/pipeline.md against the aliases the stages keep."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def crate_dependencies():
    """crate folder name -> the workspace crates it depends on (core left out: every crate does)."""
    graph = {}
    for manifest in sorted((ROOT / "crates").glob("*/Cargo.toml")):
        dependencies = tomllib.loads(manifest.read_text()).get("dependencies", {})
        graph[manifest.parent.name] = {name.removeprefix("layerprune-") for name in dependencies
                                       if name.startswith("layerprune-")} - {"core"}
    return graph


def documented_graph():
    """The crates of architecture.md's diagram, top to bottom, and what each line says it uses."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    diagram = text.split("## The crates", 1)[1].split("```")[1]
    order, graph = [], {}
    for line in diagram.splitlines():
        match = re.match(r"^([a-z]+)\s+\(.*?\)\s*(?:──► (.*))?$", line)
        if match:
            name, uses = match.groups()
            order.append(name)
            graph[name] = {u.strip() for u in uses.split(",")} if uses else set()
    return order, graph


def test_the_crate_diagram_is_the_cargo_dependency_graph():
    order, documented = documented_graph()
    actual = {name: deps for name, deps in crate_dependencies().items() if name not in ("core", "cli")}
    assert documented == actual
    # Each crate is drawn above every crate it depends on: the graph flows one way.
    for name, deps in documented.items():
        assert all(order.index(dep) > order.index(name) for dep in deps), (name, deps)


def flag_aliases():
    """(stage, flag, old name) for every hidden alias a stage's clap definition keeps."""
    found = set()
    for main in sorted((ROOT / "crates" / "cli").glob("*/src/main.rs")):
        stage = main.parent.parent.name
        text = main.read_text()
        # Each #[arg(...)] attribute that names an alias, and the field it is on.
        for attribute, field in re.findall(r"#\[arg\(((?:[^()]|\([^()]*\))*)\)\]\s*(\w+):", text):
            alias = re.search(r'alias = "([a-z-]+)"', attribute)
            if alias:
                named = re.search(r'long = "([a-z-]+)"', attribute)
                flag = named.group(1) if named else field.replace("_", "-")
                found.add((stage, f"--{flag}", f"--{alias.group(1)}"))
    return found


def test_every_renamed_flag_is_in_the_table_of_renamed_flags():
    table = (ROOT / "docs" / "pipeline.md").read_text().split("## Renamed flags", 1)[1]
    rows = set()
    for line in table.splitlines():
        cells = [cell.strip(" `") for cell in line.split("|")[1:-1]]
        if len(cells) == 5 and cells[0] not in ("stage", "---"):
            flag, old = (cell.split()[0] for cell in cells[1:3])
            rows.add((cells[0], flag, old))
    aliases = flag_aliases()
    assert len(aliases) >= 11
    assert aliases == rows
