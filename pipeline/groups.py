"""Category groups: many categories folded into a few semantic groups for colouring.

A mapping file (YAML or JSON) names each group and its categories, optionally with a colour::

    Size: [small_predicate, big_predicate, tall_predicate]
    Depth:
      categories: [behind_predicate]
      color: "#1f77b4"

:func:`load_groups` reads one, :func:`apply_groups` folds a column (categories the mapping
does not name become ``"(other)"``; names the data does not have are reported, not fatal).
Named mappings are kept per dataset in the cache (``datasets/<id>/groups.json``) so the app
can refer to one by name in its URL: :func:`save_groups`, :func:`list_groups`,
:func:`get_groups`, :func:`delete_groups`, :func:`groups_column`.

YAML is read with PyYAML when it is installed (every scalar kept as a string); without it, a
small reader handles the shapes above (block and flow lists, quoted or plain scalars,
comments). Every user-facing failure is a :class:`GroupsError` with a one-line message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.pipeline.store import Store, file_lock, save_json

OTHER = "(other)"
OTHER_COLOR = "#9a9a9a"
# Plotly / D3 qualitative colours (the app's palette starts with the same ones).
DEFAULT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
)
GROUPS_FILE = "groups.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_COLOR_RE = re.compile(
    r"^(#[0-9a-fA-F]{3}|#[0-9a-fA-F]{4}|#[0-9a-fA-F]{6}|#[0-9a-fA-F]{8}"
    r"|rgba?\(\s*[0-9.%]+\s*(,\s*[0-9.%]+\s*){2,3}\)|[a-zA-Z]{3,30})$"
)
_MAX_LISTED = 10


class GroupsError(ValueError):
    """A mapping file or a stored mapping cannot be used; the message says why."""


@dataclass(frozen=True)
class Groups:
    """Ordered group -> categories, plus the colours the mapping gives (group -> colour)."""

    groups: dict[str, tuple[str, ...]]
    colors: dict[str, str] = field(default_factory=dict)
    source: str = "mapping"

    @property
    def names(self) -> list[str]:
        return list(self.groups)

    def group_of(self) -> dict[str, str]:
        """category -> group."""
        return {c: g for g, cats in self.groups.items() for c in cats}

    def color_map(self) -> dict[str, str]:
        """A colour for every group (the mapping's own, else the default palette) and
        ``(other)``."""
        out: dict[str, str] = {}
        spare = [c for c in DEFAULT_COLORS if c not in set(self.colors.values())]
        i = 0
        for g in self.groups:
            if g in self.colors:
                out[g] = self.colors[g]
            else:
                out[g] = spare[i % len(spare)] if spare else DEFAULT_COLORS[i % len(DEFAULT_COLORS)]
                i += 1
        out.setdefault(OTHER, OTHER_COLOR)
        return out

    def to_json(self) -> dict[str, Any]:
        """The file shape: {group: {"categories": [...], "color": ...}} (colour when given)."""
        out: dict[str, Any] = {}
        for g, cats in self.groups.items():
            entry: dict[str, Any] = {"categories": list(cats)}
            if g in self.colors:
                entry["color"] = self.colors[g]
            out[g] = entry
        return out

    def key(self) -> dict[str, list[str]]:
        """What a computation depends on (colours left out): for cache keys."""
        return {g: list(cats) for g, cats in self.groups.items()}


# --------------------------------------------------------------------------- parsing


def _scalar_text(v: Any, where: str) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, (dict, list)):
        raise GroupsError(f"{where}: expected a category name, got {json.dumps(v)}")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    text = str(v).strip()
    if not text:
        raise GroupsError(f"{where}: empty category name")
    return text


def parse_groups(obj: Any, source: str = "mapping") -> Groups:
    """Groups from a parsed mapping: {group: [categories]} or {group: {"categories": [...],
    "color": "#hex"}} (the two shapes may be mixed)."""
    if not isinstance(obj, Mapping):
        kind = "a list" if isinstance(obj, list) else type(obj).__name__
        raise GroupsError(
            f"{source}: expected group names mapped to lists of categories, got {kind}"
        )
    if not obj:
        raise GroupsError(f"{source} defines no groups")
    groups: dict[str, tuple[str, ...]] = {}
    colors: dict[str, str] = {}
    owner: dict[str, str] = {}
    for raw_name, spec in obj.items():
        name = str(raw_name).strip()
        if not name:
            raise GroupsError(f"{source}: a group has an empty name")
        color = None
        if isinstance(spec, Mapping):
            unknown = sorted(set(map(str, spec)) - {"categories", "color", "colour"})
            if unknown:
                raise GroupsError(
                    f"{source}: group {name!r} has unknown key {unknown[0]!r} "
                    "(use categories and color)"
                )
            if "categories" not in spec:
                raise GroupsError(f"{source}: group {name!r} has no 'categories' list")
            cats = spec["categories"]
            color = spec.get("color", spec.get("colour"))
        else:
            cats = spec
        if isinstance(cats, str):
            cats = [cats]
        if not isinstance(cats, Sequence) or isinstance(cats, (bytes, str)):
            raise GroupsError(f"{source}: group {name!r} must list its categories")
        names = [_scalar_text(c, f"{source}: group {name!r}") for c in cats]
        if not names:
            raise GroupsError(f"{source}: group {name!r} lists no categories")
        unique = list(dict.fromkeys(names))
        for c in unique:
            if c in owner:
                raise GroupsError(
                    f"{source}: category {c!r} is in two groups: {owner[c]!r} and {name!r}"
                )
            owner[c] = name
        groups[name] = tuple(unique)
        if color is not None:
            text = str(color).strip()
            if not _COLOR_RE.match(text):
                raise GroupsError(
                    f"{source}: group {name!r} has colour {text!r}: use #rrggbb, rgb(...) or a "
                    "CSS colour name"
                )
            colors[name] = text
    return Groups(groups=groups, colors=colors, source=source)


def _yaml_load(text: str, source: str) -> Any:
    """YAML text -> Python objects, every scalar a string (PyYAML if installed)."""
    try:
        import yaml
    except ImportError:
        return parse_yaml_subset(text, source)
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds no objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise GroupsError(f"{source}{where}: invalid YAML ({problem})") from None


def parse_groups_text(text: str, source: str = "mapping", fmt: str | None = None) -> Groups:
    """Groups from the text of a mapping file; ``fmt`` "json" / "yaml" (None: JSON when the
    text starts like JSON, else YAML)."""
    fmt = (fmt or "").lower()
    if not fmt:
        fmt = "json" if text.lstrip()[:1] in ("{", "[") else "yaml"
    if fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise GroupsError(f"{source} line {e.lineno}: invalid JSON ({e.msg})") from None
    elif fmt in ("yaml", "yml"):
        obj = _yaml_load(text, source)
    else:
        raise GroupsError(f"{source}: unknown mapping format {fmt!r} (use json or yaml)")
    return parse_groups(obj, source)


def load_groups(path: str | Path) -> Groups:
    """Read a mapping file (.json, .yaml / .yml; other names: JSON if it looks like JSON)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GroupsError(f"mapping file not found: {path}")
    if not path.is_file():
        raise GroupsError(f"mapping file is not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise GroupsError(f"{path.name} is not a UTF-8 text file") from None
    except OSError as e:
        raise GroupsError(f"cannot read mapping file {path.name}: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
    return parse_groups_text(text, path.name, fmt)


# --------------------------------------------------------------------------- a tiny YAML reader


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a # inside quotes is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _unquote(text: str, source: str, lineno: int) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        if text[0] == '"':
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return inner
        return inner.replace("''", "'")
    if text and text[0] in "'\"":
        raise GroupsError(f"{source} line {lineno}: unterminated quote in {text!r}")
    return text


def _split_flow(body: str, source: str, lineno: int) -> list[str]:
    """``a, "b, c", d`` -> ["a", "b, c", "d"] (quotes respected)."""
    items, cur, quote = [], [], None
    for ch in body:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == ",":
            items.append("".join(cur))
            cur = []
        elif ch in "[]{}":
            raise GroupsError(f"{source} line {lineno}: nested brackets are not supported here")
        else:
            cur.append(ch)
    if quote:
        raise GroupsError(f"{source} line {lineno}: unterminated quote")
    items.append("".join(cur))
    out = [_unquote(t, source, lineno) for t in items]
    if out and out[-1] == "" and items[-1].strip() == "":
        out.pop()  # trailing comma
    if any(t == "" for t in out):
        raise GroupsError(f"{source} line {lineno}: empty item in a [...] list")
    return out


def _value(text: str, source: str, lineno: int) -> Any:
    text = text.strip()
    if text.startswith("["):
        if not text.endswith("]"):
            raise GroupsError(f"{source} line {lineno}: a [...] list must end on its line")
        return _split_flow(text[1:-1], source, lineno)
    if text.startswith("{"):
        raise GroupsError(f"{source} line {lineno}: {{...}} mappings are not supported here")
    return _unquote(text, source, lineno)


def _key_value(text: str, source: str, lineno: int) -> tuple[str, str] | None:
    """``key: rest`` -> (key, rest); None if the text is not a mapping entry."""
    if text and text[0] in "'\"":
        q = text[0]
        end = text.find(q, 1)
        if end < 0:
            raise GroupsError(f"{source} line {lineno}: unterminated quote")
        rest = text[end + 1 :].lstrip()
        if not rest.startswith(":"):
            return None
        return text[1:end], rest[1:]
    m = re.match(r"^([^:]+?)\s*:(\s|$)", text)
    if not m:
        return None
    return m.group(1), text[m.end(1) + 1 :]


def parse_yaml_subset(text: str, source: str = "mapping") -> Any:
    """Read the YAML a mapping file needs without PyYAML: nested block mappings, block lists
    (``- item``) and one-line flow lists (``[a, b]``) of plain or quoted scalars."""
    lines: list[tuple[int, int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise GroupsError(f"{source} line {lineno}: tabs are not allowed for indentation")
        body = _strip_comment(raw).rstrip()
        if not body.strip() or body.strip() in ("---", "..."):
            continue
        lines.append((lineno, len(body) - len(body.lstrip()), body.strip()))
    if not lines:
        return None
    pos = 0

    def block(indent: int, inline_list: bool = False) -> Any:
        """The block at ``indent``; ``inline_list``: a list written at its key's indentation
        (it ends at the next line that is not an item)."""
        nonlocal pos
        lineno, _, first = lines[pos]
        if first == "-" or first.startswith("- "):
            out_list: list[Any] = []
            while pos < len(lines) and lines[pos][1] == indent:
                ln, _, t = lines[pos]
                if not (t == "-" or t.startswith("- ")):
                    if inline_list:
                        break
                    raise GroupsError(f"{source} line {ln}: expected '- item' in a list")
                item = t[1:].strip()
                pos += 1
                if not item:
                    raise GroupsError(f"{source} line {ln}: empty list item")
                if _key_value(item, source, ln) is not None:
                    raise GroupsError(f"{source} line {ln}: lists of mappings are not supported")
                out_list.append(_value(item, source, ln))
            return out_list
        out: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][1] == indent:
            ln, _, t = lines[pos]
            kv = _key_value(t, source, ln)
            if kv is None:
                raise GroupsError(f"{source} line {ln}: expected 'name: value' or 'name:'")
            key, rest = kv
            key = key.strip()
            if key in out:
                raise GroupsError(f"{source} line {ln}: {key!r} appears twice")
            pos += 1
            if rest.strip():
                out[key] = _value(rest, source, ln)
            elif pos < len(lines) and lines[pos][1] > indent:
                out[key] = block(lines[pos][1])
            elif pos < len(lines) and lines[pos][1] == indent and lines[pos][2].startswith("-"):
                out[key] = block(indent, inline_list=True)
            else:
                out[key] = None
        return out

    result = block(lines[0][1])
    if pos < len(lines):
        ln, ind, _ = lines[pos]
        raise GroupsError(f"{source} line {ln}: unexpected indentation ({ind} spaces)")
    return result


# --------------------------------------------------------------------------- applying


def _as_text_labels(values: Any) -> np.ndarray:
    from latentmap.pipeline.diagnostics import _labels

    return _labels(values)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


def apply_groups(values: Any, groups: Groups | Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Fold a categorical column into groups: (object array of group names, warnings).

    Categories the mapping does not name become ``"(other)"``; missing values stay None.
    Names in the mapping that the data does not have are reported in the warnings.
    """
    g = groups if isinstance(groups, Groups) else parse_groups(groups)
    labels = _as_text_labels(values)
    of = g.group_of()
    uniq, inv = np.unique(labels, return_inverse=True)
    mapped = np.array(
        [None if u == "" else of.get(str(u), OTHER) for u in uniq.tolist()], dtype=object
    )
    out = mapped[inv.ravel()] if len(uniq) else np.zeros(0, dtype=object)
    present = {str(u) for u in uniq.tolist()}
    unknown = [c for cats in g.groups.values() for c in cats if c not in present]
    warnings: list[str] = []
    if unknown:
        noun = "category" if len(unknown) == 1 else "categories"
        warnings.append(
            f"{g.source} names {len(unknown)} unknown {noun}: {_listing(unknown)} — ignored"
        )
    empty = [name for name, cats in g.groups.items() if not any(c in present for c in cats)]
    if empty:
        noun = "group has" if len(empty) == 1 else "groups have"
        warnings.append(f"{len(empty)} {noun} no items: {_listing(empty)}")
    return out, warnings


# --------------------------------------------------------------------------- storage


def _groups_path(store: Store, ds_id: str) -> Path:
    return store.dataset_dir(ds_id) / GROUPS_FILE


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise GroupsError(
            f"mapping name {name!r} is not valid: use 1-64 letters, digits, '_', '-' or '.'"
        )
    return name


def _read_all(store: Store, ds_id: str) -> dict[str, Any]:
    store.manifest(ds_id)  # a clear error for an unknown dataset
    p = _groups_path(store, ds_id)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise GroupsError(f"stored mappings of dataset {ds_id} are unreadable: {e}") from None
    return data if isinstance(data, dict) else {}


def save_groups(store: Store, ds_id: str, name: str, groups: Groups | Mapping[str, Any]) -> Groups:
    """Keep ``groups`` under ``name`` for the dataset (replacing one of that name)."""
    _check_name(name)
    g = groups if isinstance(groups, Groups) else parse_groups(groups, f"mapping {name!r}")
    p = _groups_path(store, ds_id)
    with file_lock(p.with_name(".groups.lock")):
        data = _read_all(store, ds_id)
        data[name] = g.to_json()
        save_json(p, data)
    return Groups(groups=dict(g.groups), colors=dict(g.colors), source=f"mapping {name!r}")


def list_groups(store: Store, ds_id: str) -> list[str]:
    """Names of the dataset's stored mappings, in the order they were first saved."""
    return list(_read_all(store, ds_id))


def get_groups(store: Store, ds_id: str, name: str) -> Groups:
    """The stored mapping ``name`` of the dataset."""
    data = _read_all(store, ds_id)
    if name not in data:
        have = ", ".join(data) or "none"
        raise GroupsError(f"dataset {ds_id} has no mapping {name!r} (it has: {have})")
    return parse_groups(data[name], f"mapping {name!r}")


def delete_groups(store: Store, ds_id: str, name: str) -> bool:
    """Forget the stored mapping ``name``; False when there was none."""
    p = _groups_path(store, ds_id)
    with file_lock(p.with_name(".groups.lock")):
        data = _read_all(store, ds_id)
        if name not in data:
            return False
        del data[name]
        save_json(p, data)
    return True


def resolve_groups(
    store: Store, ds_id: str, groups: Groups | Mapping[str, Any] | str | None
) -> Groups | None:
    """A Groups from a Groups, a mapping dict, or the name of a stored mapping (None: None)."""
    if groups is None or isinstance(groups, Groups):
        return groups
    if isinstance(groups, str):
        return get_groups(store, ds_id, groups)
    return parse_groups(groups)


def groups_column(
    store: Store, ds_id: str, column: str, name: str | Groups | Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, str]]:
    """The dataset's ``column`` folded by a mapping (a stored name, or the mapping itself):
    ((N,) object array of group names, None where the value is missing; colour per group,
    ``(other)`` included)."""
    values, _, colors = _grouped(store, ds_id, column, name)
    return values, colors


def groups_warnings(
    store: Store, ds_id: str, column: str, name: str | Groups | Mapping[str, Any]
) -> list[str]:
    """What applying the mapping to the dataset's ``column`` reports (unknown categories,
    groups without items): for the app to show next to the colouring."""
    return _grouped(store, ds_id, column, name)[1]


def _grouped(
    store: Store, ds_id: str, column: str, name: str | Groups | Mapping[str, Any]
) -> tuple[np.ndarray, list[str], dict[str, str]]:
    g = resolve_groups(store, ds_id, name)
    if g is None:
        raise GroupsError("no mapping given: name a stored mapping or pass one")
    meta = store.metadata(ds_id)
    if column not in meta.columns:
        raise GroupsError(
            f"dataset {ds_id} has no column {column!r}; it has: {_listing(list(meta.columns))}"
        )
    values, warnings = apply_groups(meta[column], g)
    return values, warnings, g.color_map()


# --------------------------------------------------------------------------- grouped columns

GROUP_SEP = " ▸ "


def grouped_key(store: Store, ds_id: str, *columns: str | None) -> dict[str, Any]:
    """Cache-key part for results computed on grouped columns (``<column> ▸ <mapping>``): the
    mapping's groups, so re-saving a mapping under the same name recomputes them. Empty for
    plain columns (their keys stay as they were)."""
    out: dict[str, Any] = {}
    for col in columns:
        if not col or GROUP_SEP not in str(col):
            continue
        name = str(col).split(GROUP_SEP, 1)[1]
        try:
            out[str(col)] = get_groups(store, ds_id, name).key()
        except GroupsError:
            out[str(col)] = None
    return {"mappings": out} if out else {}


def metadata_with_groups(store: Store, ds_id: str, meta=None):
    """The dataset's metadata plus one column per saved mapping and categorical column it
    applies to, named ``<column> ▸ <mapping>`` (group names; ``(other)`` for the rest), so a
    grouped column can be used wherever a column is (colour, centroids, confusion, channels)."""
    from latentmap.pipeline.diagnostics import _labels

    meta = store.metadata(ds_id) if meta is None else meta
    names = list_groups(store, ds_id)
    if not names:
        return meta
    meta = meta.copy()
    for name in names:
        groups = get_groups(store, ds_id, name)
        wanted = set(groups.group_of())
        for col in list(meta.columns):
            if GROUP_SEP in str(col):
                continue
            values = meta[col]
            if values.dtype.kind == "f" and not np.all(
                np.isnan(values) | (values == np.round(values))
            ):
                continue  # a continuous column
            if not wanted & set(_labels(values)):
                continue
            grouped, _ = apply_groups(values, groups)
            meta[f"{col}{GROUP_SEP}{name}"] = grouped
    return meta
