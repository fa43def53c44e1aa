"""Every component id of the explorer, in one place (a test checks they are unique).

Pattern-matching ids are dicts whose "type" is one of the ``*_TYPE`` constants below.
"""

from __future__ import annotations

# ----- page and URL state
LOCATION = "url"
URL_NOTICE = "url-notice"
GLOBAL_NOTICE = "global-notice"
SPEC = "plot-spec"  # what the controls ask to show (dataset, layer, projection, colours...)
SHOWN = "shown-spec"  # what the map shows now (+ trace layout), written by the figure callback
SELECTED = "selected-row"  # clicked (query) row or None
CAMERA = "camera"  # [x0, x1, y0, y1] or None (autorange)
CAMERA_RESTORE = "camera-restore"  # camera to apply after back/forward

# ----- data pickers (header)
DATASET = "dataset-picker"
LAYER = "layer-picker"
DATASET_INFO = "dataset-info"

# ----- projection controls
METHOD = "method-picker"
PERPLEXITY = "perplexity"
N_NEIGHBORS = "n-neighbors"
MIN_DIST = "min-dist"
TSNE_PARAMS = "tsne-params"
UMAP_PARAMS = "umap-params"

# ----- appearance controls
COLOR = "color-by"
SYMBOL = "symbol-by"
FILTER_COL = "filter-column"
FILTER_VALUES = "filter-values"
FILTER_MODE = "filter-mode"
HOVER_COLS = "hover-columns"
K = "k-neighbors"

# ----- map
GRAPH = "scatter"
TOOLTIP = "hover-tooltip"
MAP_NOTICE = "map-notice"
MAP_STATUS = "map-status"

# ----- background reduction
REDUCE_REQUEST = "reduce-request"
REDUCE_DONE = "reduce-done"
REDUCE_BOX = "reduce-box"
REDUCE_PROGRESS = "reduce-progress"
REDUCE_LABEL = "reduce-label"
REDUCE_CANCEL = "reduce-cancel"

# ----- gallery (right panel)
NEIGHBORS = "neighbors"  # {"dataset", "layer", "rows": [query, n1, ...]}
GALLERY_TITLE = "gallery-title"
GALLERY = "gallery"
GALLERY_NOTICE = "gallery-notice"
SELECTION_TITLE = "selection-title"
SELECTION = "selection-gallery"
SELECTION_EXPORT = "selection-export"  # the selection's download buttons (shown with it)
SELECTION_CSV = "selection-csv"
SELECTION_PARQUET = "selection-parquet"
SELECTION_VECTORS = "selection-vectors"
SELECTION_DOWNLOAD = "selection-download"
SELECTION_EXPORT_NOTICE = "selection-export-notice"
CARD_TYPE = "gallery-card"

# ----- datasets and encode panel
DATASETS_VERSION = "datasets-version"
DATASETS_TABLE = "datasets-table"
DATASETS_REFRESH = "datasets-refresh"
ENCODE_SOURCE = "encode-source"
ENCODE_MODEL = "encode-model"
ENCODE_CHECKPOINT = "encode-checkpoint"
ENCODE_LAYERS = "encode-layers"
ENCODE_POOL = "encode-pool"
ENCODE_LABELS = "encode-labels"
ENCODE_NAME = "encode-name"
ENCODE_START = "encode-start"
ENCODE_CANCEL = "encode-cancel"
ENCODE_BOX = "encode-box"
ENCODE_PROGRESS = "encode-progress"
ENCODE_LABEL = "encode-label"
ENCODE_NOTICE = "encode-notice"


# ----- main tabs, overlays, background diagnostics tasks
TAB = "main-tab"
MAP_PANEL = "map-panel"
LAYERS_PANEL = "layers-panel"
DIAG_PANEL = "diag-panel"
OVERLAYS = "overlays"
DIAG_SPEC = "diag-spec"  # what the layers / diagnostics tabs draw (written by the URL callback)
TASKS_REQUEST = "tasks-request"
TASKS_DONE = "tasks-done"
TASKS_BOX = "tasks-box"
TASKS_PROGRESS = "tasks-progress"
TASKS_LABEL = "tasks-label"
TASKS_CANCEL = "tasks-cancel"

# ----- layers side by side
LAYERS_PICK = "layers-pick"
ALIGN = "layers-align"
COMPARE = "layers-compare"
LAYERS_NOTICE = "layers-notice"
LAYERS_GRID = "layers-grid"
LAYER_GRAPH_TYPE = "layer-graph"

# ----- diagnostics tab
TRUE_COL = "true-column"
PRED_COL = "pred-column"
CNORM = "confusion-normalize"
DMETRIC = "distance-metric"
DIAG_NOTICE = "diag-notice"
DIAG_TABLE = "diag-table"
CONF_GRAPH = "confusion-graph"
CVD_GRAPH = "confusion-distance-graph"
CELL = "confusion-cell"  # [true, pred] or None
CELL_CLEAR = "confusion-cell-clear"
CELL_TITLE = "cell-title"
CELL_HEADER = "cell-header"
CELL_GALLERY = "cell-gallery"
REPORT_BUTTON = "report-button"
REPORT_STATUS = "report-status"


# ----- sampling the latent space
SAMPLE_ON = "sample-on"
SAMPLE_N = "sample-n"
SAMPLE_DIST = "sample-dist"
SAMPLE_K = "sample-k"
SAMPLE_SEED = "sample-seed"
SAMPLE_REROLL = "sample-reroll"
SAMPLE_REGION = "sample-region"
SAMPLE_VALUE = "sample-value"
SAMPLE_ROWS = "sample-rows"  # rows of the selection region
SAMPLE_USE_SELECTION = "sample-use-selection"
SAMPLE_BASE = "sample-baseline"
INTERP_A = "interp-a"
INTERP_B = "interp-b"
INTERP_SET_A = "interp-set-a"
INTERP_SET_B = "interp-set-b"
INTERP_CLEAR = "interp-clear"
INTERP_STEPS = "interp-steps"
INTERP_HOW = "interp-how"
INTERP_INFO = "interp-info"
DECODER = "decoder"
DECODER_CKPT = "decoder-checkpoint"
SAMPLE_HEADER = "sample-header"
SAMPLE_TITLE = "sample-title"
SAMPLE_NOTICE = "sample-notice"
SAMPLE_SUMMARY = "sample-summary"
SAMPLE_GALLERY = "sample-gallery"
PATH_GALLERY = "path-gallery"
SAMPLE_FOCUS = "sample-focus"  # index of the sample whose top-k is shown


# ----- spatial pooling and channel analysis
POOL = "pool"
POOL_CHANS = "pool-channels"
POOL_BOX = "pool-box"
CHAN_PANEL = "chan-panel"
CHAN_COL = "chan-column"
CHAN_STAT = "chan-stat"
CHAN_GROUPS = "chan-groups"
CHAN = "chan-selected"  # channel colouring the map, or None
CHAN_CLEAR = "chan-clear"
CHAN_NOTICE = "chan-notice"
CHAN_GRAPH = "chan-graph"
GROUPS_NAME = "groups-name"
GROUPS_TEXT = "groups-text"
GROUPS_SAVE = "groups-save"
GROUPS_NOTICE = "groups-notice"
GROUPS_VERSION = "groups-version"


def all_ids() -> list[str]:
    """Every plain string id defined here (pattern types excluded)."""
    return [
        v
        for k, v in globals().items()
        if k.isupper() and isinstance(v, str) and not k.endswith("_TYPE")
    ]


# thumbnail bands (multispectral previews): red / green / blue band, stretch percentiles
BAND_R = "band-r"
BAND_G = "band-g"
BAND_B = "band-b"
STRETCH = "stretch"
BANDS_BOX = "bands-box"
BANDS_NOTE = "bands-note"
THUMBS = "thumbs-spec"  # the band choice the cards show (written by the URL callback)
