"""Category groups: mapping files (JSON / YAML), folding a column, named mappings per dataset."""

import json

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.groups import (
    OTHER,
    Groups,
    GroupsError,
    apply_groups,
    delete_groups,
    get_groups,
    groups_column,
    groups_warnings,
    list_groups,
    load_groups,
    parse_groups,
    parse_yaml_subset,
    save_groups,
)

SEED_YAML = """\
# seed 002: 19 relations in 5 groups
Size:
  categories: [small_predicate, big_predicate, tall_predicate, short_predicate, thin_predicate]
  color: "#ff7f0e"   # orange
Depth:
  - behind_predicate
Horizontal: [left_predicate, right_predicate, left_choice, right_choice]
Vertical:
  categories:
    - above_choice
    - tall_choice
    - 'short_choice'
  color: '#f2c12e'
Measurements: ["height_data", "width_data", "distance_data"]
"""

SEED_JSON = {
    "Size": {
        "categories": [
            "small_predicate",
            "big_predicate",
            "tall_predicate",
            "short_predicate",
            "thin_predicate",
        ],
        "color": "#ff7f0e",
    },
    "Depth": ["behind_predicate"],
    "Horizontal": ["left_predicate", "right_predicate", "left_choice", "right_choice"],
    "Vertical": {"categories": ["above_choice", "tall_choice", "short_choice"], "color": "#f2c12e"},
    "Measurements": ["height_data", "width_data", "distance_data"],
}


def _check_seed(g: Groups):
    assert g.names == ["Size", "Depth", "Horizontal", "Vertical", "Measurements"]
    assert g.groups["Vertical"] == ("above_choice", "tall_choice", "short_choice")
    assert g.groups["Depth"] == ("behind_predicate",)
    assert g.colors == {"Size": "#ff7f0e", "Vertical": "#f2c12e"}
    assert sum(len(c) for c in g.groups.values()) == 16
    cmap = g.color_map()
    assert set(cmap) == {*g.names, OTHER} and cmap["Size"] == "#ff7f0e"
    assert len(set(cmap.values())) == len(cmap)  # distinct colours


def test_load_json(tmp_path):
    p = tmp_path / "groups.json"
    p.write_text(json.dumps(SEED_JSON, indent=2))
    _check_seed(load_groups(p))


def test_load_yaml(tmp_path):
    p = tmp_path / "groups.yaml"
    p.write_text(SEED_YAML)
    _check_seed(load_groups(p))


def test_yaml_subset_reader_without_pyyaml():
    """The built-in reader gives the same structure PyYAML's BaseLoader gives."""
    obj = parse_yaml_subset(SEED_YAML, "seed.yaml")
    _check_seed(parse_groups(obj, "seed.yaml"))
    assert obj["Vertical"]["color"] == "#f2c12e"
    assert parse_yaml_subset("a:\n- x\n- 'y # z'\nb: [1, 2,]\n") == {
        "a": ["x", "y # z"],
        "b": ["1", "2"],
    }
    for bad, line in [
        ("a: [x, y\n", 1),
        ("a:\n  - x\n b: [y]\n", 3),
        ("a: x\na: y\n", 2),
        ("a:\n  - 'x\n", 2),
        ("a:\n  - {x: 1}\n", 2),
        ("a:\n\t- x\n", 2),
    ]:
        with pytest.raises(GroupsError, match=f"^m.yaml line {line}: "):
            parse_yaml_subset(bad, "m.yaml")


def test_bad_files_name_file_and_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "Size": ["a",\n  "Depth": ["b"]\n}')
    with pytest.raises(GroupsError, match=r"^broken\.json line 3: invalid JSON"):
        load_groups(p)
    y = tmp_path / "broken.yaml"
    y.write_text("Size:\n  - a\n  - [b\n")
    with pytest.raises(GroupsError, match=r"^broken\.yaml line \d: "):
        load_groups(y)
    with pytest.raises(GroupsError, match="mapping file not found"):
        load_groups(tmp_path / "missing.yaml")
    (tmp_path / "list.json").write_text('["a", "b"]')
    with pytest.raises(GroupsError, match="got a list"):
        load_groups(tmp_path / "list.json")
    (tmp_path / "empty.yml").write_text("# nothing\n")
    with pytest.raises(GroupsError, match="empty.yml"):
        load_groups(tmp_path / "empty.yml")


def test_duplicated_category_is_an_error():
    with pytest.raises(
        GroupsError, match="category 'tall' is in two groups: 'Size' and 'Vertical'"
    ):
        parse_groups({"Size": ["small", "tall"], "Vertical": {"categories": ["above", "tall"]}})
    # a repeat inside one group is harmless
    assert parse_groups({"A": ["x", "x", "y"]}).groups["A"] == ("x", "y")


def test_bad_shapes():
    for obj, msg in [
        ({}, "defines no groups"),
        ({"A": []}, "lists no categories"),
        ({"A": {"color": "#fff"}}, "no 'categories'"),
        ({"A": {"categories": ["x"], "colour": "not a colour!"}}, "colour 'not a colour!'"),
        ({"A": {"categories": ["x"], "size": 3}}, "unknown key 'size'"),
        ({"A": [["x"]]}, "expected a category name"),
        ({"A": 3}, "must list its categories"),
    ]:
        with pytest.raises(GroupsError, match=msg):
            parse_groups(obj)


def test_apply_groups_warns_about_unknown_categories():
    values = pd.Series(["left", "right", "above", None, "behind", 3, 3.0])
    g = {"Horizontal": ["left", "right", "foo"], "Depth": ["behind", "bar"], "Num": ["3"]}
    out, warnings = apply_groups(values, g)
    assert out.tolist() == ["Horizontal", "Horizontal", OTHER, None, "Depth", "Num", "Num"]
    assert warnings == ["mapping names 2 unknown categories: foo, bar — ignored"]
    _, warnings = apply_groups(values, {"Ghost": ["nope"], "Depth": ["behind"]})
    assert warnings == [
        "mapping names 1 unknown category: nope — ignored",
        "1 group has no items: Ghost",
    ]


def test_named_mappings_per_dataset(store):
    rel = ["left_predicate", "behind_predicate", "height_data", "zzz", None]
    ds = write_dataset(
        store,
        name="rel",
        vectors={"e": np.zeros((5, 2), np.float32)},
        metadata=pd.DataFrame({"qa_category": rel}),
    )
    assert list_groups(store, ds) == []
    save_groups(store, ds, "seed", parse_groups(SEED_JSON))
    save_groups(store, ds, "lr", {"L": ["left_predicate"]})
    assert list_groups(store, ds) == ["seed", "lr"]
    _check_seed(get_groups(store, ds, "seed"))
    assert (store.dataset_dir(ds) / "groups.json").is_file()
    values, colors = groups_column(store, ds, "qa_category", "seed")
    assert values.tolist() == ["Horizontal", "Depth", "Measurements", OTHER, None]
    assert colors["Size"] == "#ff7f0e" and colors[OTHER] == "#9a9a9a"
    warnings = groups_warnings(store, ds, "qa_category", "seed")
    assert warnings[0].startswith("mapping 'seed' names 13 unknown categories: small_predicate")
    save_groups(store, ds, "lr", {"R": ["right"]})  # replaced
    assert get_groups(store, ds, "lr").names == ["R"]
    assert delete_groups(store, ds, "lr") and not delete_groups(store, ds, "lr")
    with pytest.raises(GroupsError, match="has no mapping 'lr'"):
        get_groups(store, ds, "lr")
    with pytest.raises(GroupsError, match="not valid"):
        save_groups(store, ds, "../evil", {"A": ["x"]})
    with pytest.raises(GroupsError, match="no column 'nope'"):
        groups_column(store, ds, "nope", "seed")


def test_resaving_a_mapping_recomputes_results_on_its_grouped_column(store):
    from latentmap.pipeline.diagnostics import centroid_map, layer_summary
    from latentmap.pipeline.groups import GROUP_SEP

    rng = np.random.default_rng(0)
    cats = ["a", "b", "c", "d"] * 10
    ds = write_dataset(
        store,
        name="g",
        vectors={"e": rng.normal(size=(40, 6)).astype(np.float32)},
        metadata=pd.DataFrame({"cat": cats}),
    )
    col = f"cat{GROUP_SEP}m"
    save_groups(store, ds, "m", {"AB": ["a", "b"], "CD": ["c", "d"]})
    first = centroid_map(store, ds, "e", "pca", None, col)
    assert first.info["classes"] == ["AB", "CD"]
    assert layer_summary(store, ds, "e", col, None)
    save_groups(store, ds, "m", {"AC": ["a", "c"], "BD": ["b", "d"]})  # same name, new groups
    again = centroid_map(store, ds, "e", "pca", None, col)
    assert again.info["classes"] == ["AC", "BD"]
    # plain columns keep their keys: no mapping in them
    plain = centroid_map(store, ds, "e", "pca", None, "cat")
    assert plain.info["classes"] == ["a", "b", "c", "d"]
