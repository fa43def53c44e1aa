"""The page: header with data pickers, a sidebar of controls, the map, the gallery panel.

Only component trees here: option lists are filled by callbacks from the store.
"""

from __future__ import annotations

from dash import dcc, html
from latentmap.components import ids
from latentmap.components.figures import empty_figure
from latentmap.pipeline.reduce import default_params

DEFAULTS = {**default_params("tsne"), **default_params("umap")}

HIDDEN = {"display": "none"}
SHOWN_FLEX = {"display": "flex"}
SHOWN_BLOCK = {"display": "block"}

GRAPH_CONFIG = {
    "scrollZoom": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["autoScale2d", "toImage"],
    "doubleClick": "reset",
}


def _field(label: str, control, hint: str | None = None, **kw) -> html.Div:
    kids = [html.Label(label, className="field-label"), control]
    if hint:
        kids.append(html.Div(hint, className="field-hint"))
    return html.Div(kids, className="field", **kw)


def _section(title: str, *children) -> html.Section:
    return html.Section([html.H3(title), *children], className="panel-section")


def header() -> html.Header:
    return html.Header(
        [
            html.Div([html.Span("◎", className="logo-mark"), "latentmap"], className="brand"),
            html.Div(
                [
                    _field(
                        "Dataset",
                        dcc.Dropdown(id=ids.DATASET, clearable=False, placeholder="no dataset"),
                    ),
                    _field("Layer", dcc.Dropdown(id=ids.LAYER, clearable=False)),
                ],
                className="pickers",
            ),
            html.Div(id=ids.DATASET_INFO, className="dataset-info"),
        ],
        className="topbar",
    )


def pool_controls() -> html.Div:
    return html.Div(
        [
            _field(
                "Pooling of the spatial latents",
                dcc.Dropdown(
                    id=ids.POOL,
                    clearable=False,
                    value="default",
                    options=[
                        {"label": "as encoded", "value": "default"},
                        {"label": "mean", "value": "mean"},
                        {"label": "max", "value": "max"},
                        {"label": "median (p50)", "value": "p50"},
                        {"label": "90th percentile", "value": "p90"},
                        {"label": "flatten (C·H·W)", "value": "flatten"},
                    ],
                ),
            ),
            _field(
                "Channels",
                dcc.Input(
                    id=ids.POOL_CHANS,
                    type="text",
                    placeholder="all (or 0,2,5 or 0-3)",
                    debounce=True,
                ),
            ),
        ],
        id=ids.POOL_BOX,
        style=HIDDEN,
    )


def projection_controls() -> html.Section:
    return _section(
        "Projection",
        pool_controls(),
        dcc.RadioItems(
            id=ids.METHOD,
            options=[
                {"label": "PCA", "value": "pca"},
                {"label": "t-SNE", "value": "tsne"},
                {"label": "UMAP", "value": "umap"},
            ],
            value="pca",
            className="segmented",
            inputClassName="segmented-input",
            labelClassName="segmented-label",
        ),
        html.Div(
            _field(
                "Perplexity",
                dcc.Input(
                    id=ids.PERPLEXITY,
                    type="number",
                    min=1,
                    step=1,
                    debounce=True,
                    value=DEFAULTS["perplexity"],
                ),
            ),
            id=ids.TSNE_PARAMS,
            style=HIDDEN,
        ),
        html.Div(
            [
                _field(
                    "Neighbours",
                    dcc.Input(
                        id=ids.N_NEIGHBORS,
                        type="number",
                        min=2,
                        step=1,
                        debounce=True,
                        value=DEFAULTS["n_neighbors"],
                    ),
                ),
                _field(
                    "Min. distance",
                    dcc.Input(
                        id=ids.MIN_DIST,
                        type="number",
                        min=0,
                        max=1,
                        step=0.05,
                        debounce=True,
                        value=DEFAULTS["min_dist"],
                    ),
                ),
            ],
            id=ids.UMAP_PARAMS,
            className="field-row",
            style=HIDDEN,
        ),
    )


def band_controls() -> html.Div:
    """Which bands make the thumbnails' RGB, and the contrast stretch (shown for datasets
    whose thumbnails can be regenerated from their images)."""

    def band(id_: str, label: str) -> html.Label:
        return html.Label(
            [
                html.Span(label, className="band-letter"),
                dcc.Dropdown(id=id_, clearable=False, searchable=False, className="band-pick"),
            ],
            className="band-field",
        )

    return html.Div(
        [
            html.Div("Thumbnail bands (red, green, blue)", className="field-label"),
            html.Div(
                [band(ids.BAND_R, "R"), band(ids.BAND_G, "G"), band(ids.BAND_B, "B")],
                className="band-row",
            ),
            html.Div("Stretch (percentiles)", className="field-label"),
            dcc.RangeSlider(
                id=ids.STRETCH,
                min=0,
                max=100,
                step=0.5,
                value=[2, 98],
                marks={0: "0", 25: "25", 50: "50", 75: "75", 100: "100"},
                allowCross=False,
                updatemode="mouseup",
                tooltip={"placement": "bottom", "always_visible": False},
            ),
            html.Div(id=ids.BANDS_NOTE, className="field-hint"),
        ],
        id=ids.BANDS_BOX,
        style=HIDDEN,
    )


def appearance_controls() -> html.Section:
    return _section(
        "Appearance",
        _field("Colour by", dcc.Dropdown(id=ids.COLOR, placeholder="none")),
        _field("Shape by", dcc.Dropdown(id=ids.SYMBOL, placeholder="none")),
        _field("Filter by", dcc.Dropdown(id=ids.FILTER_COL, placeholder="no filter")),
        _field("Keep values", dcc.Dropdown(id=ids.FILTER_VALUES, multi=True, placeholder="all")),
        dcc.RadioItems(
            id=ids.FILTER_MODE,
            options=[
                {"label": "dim others", "value": "dim"},
                {"label": "hide others", "value": "hide"},
            ],
            value="dim",
            className="inline-radio",
        ),
        _field(
            "Hover shows",
            dcc.Dropdown(id=ids.HOVER_COLS, multi=True, placeholder="label, prediction"),
        ),
        band_controls(),
    )


def overlay_controls() -> html.Section:
    return _section(
        "Overlays",
        dcc.Checklist(
            id=ids.OVERLAYS,
            options=[
                {"label": "class centroids", "value": "centroids"},
                {"label": "spread ellipses (2σ)", "value": "ellipses"},
                {"label": "colour by projection trust", "value": "trust"},
            ],
            value=[],
            className="checklist",
        ),
        html.Div(
            "Trust: the share of each point's 10 latent neighbours that stay its neighbours "
            "on the map (k-NN recall).",
            className="field-hint",
        ),
    )


def _num_input(id_: str, value: int, lo: int, hi: int) -> dcc.Input:
    return dcc.Input(id=id_, type="number", min=lo, max=hi, step=1, value=value, debounce=True)


def sampling_controls() -> html.Section:
    return _section(
        "Sample the latent space",
        dcc.Checklist(
            id=ids.SAMPLE_ON,
            options=[{"label": "draw random latents, show nearest images", "value": "1"}],
            value=[],
            className="checklist",
        ),
        html.Div(
            [
                _field("N", _num_input(ids.SAMPLE_N, 20, 1, 1000)),
                _field(
                    "Distribution",
                    dcc.Dropdown(
                        id=ids.SAMPLE_DIST,
                        clearable=False,
                        value="full",
                        options=[
                            {"label": "Gaussian (full, shrunk)", "value": "full"},
                            {"label": "Gaussian (diagonal)", "value": "diag"},
                            {"label": "Gaussian mixture", "value": "gmm"},
                        ],
                    ),
                ),
            ],
            className="field-row",
        ),
        html.Div(
            [
                _field("Mixture K", _num_input(ids.SAMPLE_K, 3, 1, 50)),
                _field("Seed", _num_input(ids.SAMPLE_SEED, 0, 0, 2**31 - 1)),
                html.Button(
                    "🎲", id=ids.SAMPLE_REROLL, className="btn btn-small", title="new seed"
                ),
            ],
            className="field-row align-end",
        ),
        _field(
            "Fit to",
            dcc.Dropdown(id=ids.SAMPLE_REGION, placeholder="the whole layer"),
            hint="a metadata column (then pick a value) or the box/lasso selection",
        ),
        _field("Value", dcc.Dropdown(id=ids.SAMPLE_VALUE, placeholder="value")),
        html.Button(
            "Fit to the current selection", id=ids.SAMPLE_USE_SELECTION, className="btn btn-small"
        ),
        dcc.Checklist(
            id=ids.SAMPLE_BASE,
            options=[{"label": "show the random-images baseline", "value": "1"}],
            value=[],
            className="checklist",
        ),
        html.H4("Interpolate", className="sub-title"),
        html.Div(
            [
                html.Button("Start = clicked item", id=ids.INTERP_SET_A, className="btn btn-small"),
                html.Button("End = clicked item", id=ids.INTERP_SET_B, className="btn btn-small"),
                html.Button("×", id=ids.INTERP_CLEAR, className="btn-icon", title="clear path"),
            ],
            className="row-gap",
        ),
        html.Div(id=ids.INTERP_INFO, className="field-hint"),
        html.Div(
            [
                _field("Steps", _num_input(ids.INTERP_STEPS, 8, 2, 50)),
                _field(
                    "Path",
                    dcc.Dropdown(
                        id=ids.INTERP_HOW,
                        clearable=False,
                        value="slerp",
                        options=[
                            {"label": "spherical", "value": "slerp"},
                            {"label": "linear", "value": "linear"},
                        ],
                    ),
                ),
            ],
            className="field-row",
        ),
        _field(
            "Decoder (optional)",
            dcc.Input(id=ids.DECODER, type="text", placeholder="decoder.ts or file.py:Class"),
            hint="maps a latent of this layer to an image",
        ),
        _field(
            "Decoder checkpoint",
            dcc.Input(id=ids.DECODER_CKPT, type="text", placeholder="state dict (file.py:Class)"),
        ),
    )


def neighbour_controls() -> html.Section:
    return _section(
        "Nearest neighbours",
        _field(
            "k",
            dcc.Input(id=ids.K, type="number", min=1, max=200, step=1, value=12, debounce=True),
            hint="cosine similarity in the layer's latent space",
        ),
    )


def data_panel() -> html.Details:
    return html.Details(
        [
            html.Summary("Data: datasets & encode"),
            html.Div(
                [
                    html.Div(
                        [
                            html.H4("Cached datasets"),
                            html.Button(
                                "↻", id=ids.DATASETS_REFRESH, className="btn-icon", title="refresh"
                            ),
                        ],
                        className="row-between",
                    ),
                    html.Div(id=ids.DATASETS_TABLE),
                    html.H4("Encode a folder"),
                    _field(
                        "Folder or embeddings file",
                        dcc.Input(id=ids.ENCODE_SOURCE, type="text", placeholder="/data/images"),
                    ),
                    _field(
                        "Model",
                        dcc.Input(id=ids.ENCODE_MODEL, type="text", value="pixels"),
                        hint="pixels | demo-cnn | model.pt | file.py:Class",
                    ),
                    _field(
                        "Checkpoint",
                        dcc.Input(
                            id=ids.ENCODE_CHECKPOINT, type="text", placeholder="optional state dict"
                        ),
                    ),
                    _field(
                        "Layers",
                        dcc.Input(
                            id=ids.ENCODE_LAYERS,
                            type="text",
                            placeholder="comma separated; default: output",
                        ),
                    ),
                    html.Div(
                        [
                            _field(
                                "Pooling",
                                dcc.Dropdown(
                                    id=ids.ENCODE_POOL,
                                    clearable=False,
                                    value="mean",
                                    options=["mean", "max", "p90", "flatten"],
                                ),
                            ),
                            _field(
                                "Name",
                                dcc.Input(id=ids.ENCODE_NAME, type="text", placeholder="optional"),
                            ),
                        ],
                        className="field-row",
                    ),
                    _field(
                        "Labels table",
                        dcc.Input(
                            id=ids.ENCODE_LABELS,
                            type="text",
                            placeholder="optional CSV keyed by file name",
                        ),
                    ),
                    html.Div(
                        [
                            html.Button("Encode", id=ids.ENCODE_START, className="btn btn-primary"),
                            html.Button(
                                "Cancel", id=ids.ENCODE_CANCEL, className="btn", disabled=True
                            ),
                        ],
                        className="row-gap",
                    ),
                    html.Div(
                        [
                            html.Progress(id=ids.ENCODE_PROGRESS, value="0", max="100"),
                            html.Span(id=ids.ENCODE_LABEL, className="muted"),
                        ],
                        id=ids.ENCODE_BOX,
                        className="progress-box",
                        style=HIDDEN,
                    ),
                    html.Div(id=ids.ENCODE_NOTICE),
                ],
                className="data-body",
            ),
        ],
        className="data-panel",
    )


def sidebar() -> html.Aside:
    return html.Aside(
        [
            projection_controls(),
            appearance_controls(),
            overlay_controls(),
            neighbour_controls(),
            sampling_controls(),
            data_panel(),
        ],
        className="sidebar",
    )


def tabs() -> html.Div:
    return html.Div(
        [
            dcc.RadioItems(
                id=ids.TAB,
                options=[
                    {"label": "Map", "value": "map"},
                    {"label": "Layers side by side", "value": "layers"},
                    {"label": "Diagnostics", "value": "diag"},
                    {"label": "Channels", "value": "chan"},
                ],
                value="map",
                className="tabs",
                inputClassName="segmented-input",
                labelClassName="tab-label",
            ),
            html.Div(
                [
                    html.Span(id=ids.TASKS_LABEL, className="reduce-label"),
                    html.Progress(id=ids.TASKS_PROGRESS, value="0", max="100"),
                    html.Button("Cancel", id=ids.TASKS_CANCEL, className="btn btn-small"),
                ],
                id=ids.TASKS_BOX,
                className="tasks-box",
                style=HIDDEN,
            ),
        ],
        className="tabbar",
    )


def layers_panel() -> html.Div:
    return html.Div(
        [
            html.Div(
                [
                    _field(
                        "Compare",
                        dcc.RadioItems(
                            id=ids.COMPARE,
                            options=[
                                {"label": "layers", "value": "layers"},
                                {"label": "PCA / t-SNE / UMAP", "value": "methods"},
                            ],
                            value="layers",
                            className="inline-radio",
                        ),
                    ),
                    _field(
                        "Layers (2–4)",
                        dcc.Dropdown(id=ids.LAYERS_PICK, multi=True, placeholder="layers"),
                    ),
                    _field(
                        "Alignment",
                        dcc.RadioItems(
                            id=ids.ALIGN,
                            options=[
                                {
                                    "label": "rotate / scale onto the map's layer",
                                    "value": "procrustes",
                                },
                                {"label": "shared initialisation (t-SNE, UMAP)", "value": "init"},
                            ],
                            value="procrustes",
                            className="inline-radio",
                        ),
                    ),
                ],
                className="panel-controls",
            ),
            html.Div(
                "Same projection for every layer, aligned to the map's layer; hover or select "
                "in one view to highlight the same items in the others.",
                className="field-hint",
            ),
            html.Div(id=ids.LAYERS_NOTICE),
            html.Div(id=ids.LAYERS_GRID, className="layers-grid"),
        ],
        id=ids.LAYERS_PANEL,
        className="tab-panel",
        style=HIDDEN,
    )


def diag_panel() -> html.Div:
    return html.Div(
        [
            html.Div(
                [
                    _field("True labels", dcc.Dropdown(id=ids.TRUE_COL, placeholder="none")),
                    _field("Predictions", dcc.Dropdown(id=ids.PRED_COL, placeholder="none")),
                    _field(
                        "Matrix",
                        dcc.Checklist(
                            id=ids.CNORM,
                            options=[{"label": "normalise rows", "value": "1"}],
                            value=["1"],
                            className="checklist",
                        ),
                    ),
                    _field(
                        "Centroid distance",
                        dcc.RadioItems(
                            id=ids.DMETRIC,
                            options=[
                                {"label": "cosine", "value": "cosine"},
                                {"label": "euclidean", "value": "euclidean"},
                            ],
                            value="cosine",
                            className="inline-radio",
                        ),
                    ),
                    html.Div(
                        [
                            html.Button("Write report", id=ids.REPORT_BUTTON, className="btn"),
                            html.Div(id=ids.REPORT_STATUS, className="muted"),
                        ],
                        className="report-box",
                    ),
                ],
                className="panel-controls",
            ),
            html.Div(id=ids.DIAG_NOTICE),
            html.Div(id=ids.DIAG_TABLE, className="diag-table"),
            html.Div(
                [
                    dcc.Graph(
                        id=ids.CONF_GRAPH,
                        figure=empty_figure(""),
                        config={"displaylogo": False},
                        className="diag-graph",
                    ),
                    dcc.Graph(
                        id=ids.CVD_GRAPH,
                        figure=empty_figure(""),
                        config={"displaylogo": False},
                        className="diag-graph",
                    ),
                ],
                className="diag-graphs",
            ),
        ],
        id=ids.DIAG_PANEL,
        className="tab-panel",
        style=HIDDEN,
    )


def chan_panel() -> html.Div:
    return html.Div(
        [
            html.Div(
                [
                    _field("Per category of", dcc.Dropdown(id=ids.CHAN_COL, placeholder="label")),
                    _field(
                        "Show",
                        dcc.RadioItems(
                            id=ids.CHAN_STAT,
                            options=[
                                {"label": "channel means", "value": "means"},
                                {"label": "channel std", "value": "stds"},
                                {"label": "spatial mean maps", "value": "maps"},
                            ],
                            value="means",
                            className="inline-radio",
                        ),
                    ),
                    _field(
                        "Category groups",
                        dcc.Dropdown(id=ids.CHAN_GROUPS, placeholder="no grouping"),
                    ),
                    html.Button("Stop colouring by channel", id=ids.CHAN_CLEAR, className="btn"),
                ],
                className="panel-controls",
            ),
            html.Div(
                "Click a cell to colour the map by that channel's value.", className="field-hint"
            ),
            html.Div(id=ids.CHAN_NOTICE),
            dcc.Graph(
                id=ids.CHAN_GRAPH,
                figure=empty_figure(""),
                config={"displaylogo": False},
                className="diag-graph",
            ),
            html.Details(
                [
                    html.Summary("Category groups: add or edit a mapping"),
                    html.Div(
                        "YAML or JSON: group → categories, optional colour, e.g. "
                        '{"animals": ["cat", "dog"], "vehicles": {"categories": '
                        '["car"], "color": "#d62728"}}. Saved per dataset; every '
                        "categorical column it applies to gets a grouped twin (column ▸ name) "
                        "for colouring, filtering and centroids.",
                        className="field-hint",
                    ),
                    _field(
                        "Name", dcc.Input(id=ids.GROUPS_NAME, type="text", placeholder="coarse")
                    ),
                    dcc.Textarea(id=ids.GROUPS_TEXT, className="groups-text"),
                    html.Button("Save mapping", id=ids.GROUPS_SAVE, className="btn btn-primary"),
                    html.Div(id=ids.GROUPS_NOTICE),
                ],
                className="groups-editor",
            ),
        ],
        id=ids.CHAN_PANEL,
        className="tab-panel",
        style=HIDDEN,
    )


def map_view() -> html.Div:
    return html.Div(
        [
            html.Div(id=ids.MAP_NOTICE, className="map-notices"),
            html.Div(
                [
                    html.Span(id=ids.REDUCE_LABEL, className="reduce-label"),
                    html.Progress(id=ids.REDUCE_PROGRESS, value="0", max="100"),
                    html.Button("Cancel", id=ids.REDUCE_CANCEL, className="btn btn-small"),
                ],
                id=ids.REDUCE_BOX,
                className="reduce-box",
                style=HIDDEN,
            ),
            html.Div(id=ids.MAP_STATUS, className="map-status"),
            dcc.Graph(
                id=ids.GRAPH,
                figure=empty_figure(""),
                config=GRAPH_CONFIG,
                className="map-graph",
                clear_on_unhover=True,
            ),
            dcc.Tooltip(id=ids.TOOLTIP, direction="right", className="map-tooltip"),
        ],
        id=ids.MAP_PANEL,
        className="tab-panel map-view",
    )


def main_panel() -> html.Main:
    return html.Main(
        [tabs(), map_view(), layers_panel(), diag_panel(), chan_panel()],
        className="map-panel",
    )


def gallery_panel() -> html.Aside:
    return html.Aside(
        [
            html.H3("Nearest neighbours", id=ids.GALLERY_TITLE),
            html.Div(id=ids.GALLERY_NOTICE),
            html.Div(
                html.P(
                    "Click a point on the map to see its nearest neighbours in latent space.",
                    className="muted",
                ),
                id=ids.GALLERY,
                className="gallery",
            ),
            html.Div(
                [
                    html.H3("Confused items", id=ids.CELL_TITLE),
                    html.Button("×", id=ids.CELL_CLEAR, className="btn-icon", title="clear"),
                ],
                id=ids.CELL_HEADER,
                className="row-between",
                style=HIDDEN,
            ),
            html.Div(id=ids.CELL_GALLERY, className="gallery"),
            html.Div(
                [
                    html.H3("Samples", id=ids.SAMPLE_TITLE),
                    html.Div(id=ids.SAMPLE_NOTICE),
                    html.Div(id=ids.SAMPLE_SUMMARY, className="sample-summary"),
                    html.Div(id=ids.SAMPLE_GALLERY, className="gallery"),
                    html.Div(id=ids.PATH_GALLERY, className="path-gallery"),
                ],
                id=ids.SAMPLE_HEADER,
                style=HIDDEN,
            ),
            html.H3("Selection", id=ids.SELECTION_TITLE, style=HIDDEN),
            html.Div(
                [
                    html.Button("CSV", id=ids.SELECTION_CSV, className="btn btn-small"),
                    html.Button("Parquet", id=ids.SELECTION_PARQUET, className="btn btn-small"),
                    dcc.Checklist(
                        options=[{"label": " with vectors", "value": "vectors"}],
                        value=[],
                        id=ids.SELECTION_VECTORS,
                        inline=True,
                    ),
                    dcc.Download(id=ids.SELECTION_DOWNLOAD),
                    html.Div(id=ids.SELECTION_EXPORT_NOTICE),
                ],
                id=ids.SELECTION_EXPORT,
                className="row-gap",
                title="download the selected items: row, metadata, map x/y (and latent vectors)",
                style=HIDDEN,
            ),
            html.Div(id=ids.SELECTION, className="gallery"),
        ],
        className="gallery-panel",
    )


def stores() -> html.Div:
    return html.Div(
        [
            dcc.Location(id=ids.LOCATION, refresh=False),
            dcc.Store(id=ids.SPEC),
            dcc.Store(id=ids.SHOWN),
            dcc.Store(id=ids.SELECTED),
            dcc.Store(id=ids.CAMERA),
            dcc.Store(id=ids.CAMERA_RESTORE),
            dcc.Store(id=ids.NEIGHBORS),
            dcc.Store(id=ids.REDUCE_REQUEST),
            dcc.Store(id=ids.REDUCE_DONE),
            dcc.Store(id=ids.DATASETS_VERSION, data=0),
            dcc.Store(id=ids.DIAG_SPEC),
            dcc.Store(id=ids.THUMBS),
            dcc.Store(id=ids.CELL),
            dcc.Store(id=ids.SAMPLE_ROWS),
            dcc.Store(id=ids.CHAN),
            dcc.Store(id=ids.GROUPS_VERSION, data=0),
            dcc.Store(id=ids.SAMPLE_FOCUS),
            dcc.Store(id=ids.INTERP_A),
            dcc.Store(id=ids.INTERP_B),
            dcc.Store(id=ids.TASKS_REQUEST),
            dcc.Store(id=ids.TASKS_DONE),
        ]
    )


def build_layout() -> html.Div:
    return html.Div(
        [
            stores(),
            header(),
            html.Div(id=ids.URL_NOTICE, className="url-notices"),
            html.Div(id=ids.GLOBAL_NOTICE),
            html.Div([sidebar(), main_panel(), gallery_panel()], className="workspace"),
        ],
        className="app",
    )
