"""The ``latentmap`` command: encode | reduce | serve | list.

Errors a user can act on print one line (``latentmap: error: ...``) and exit 2; never a
traceback (``--debug`` shows one for unexpected failures).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("latentmap")

EXAMPLES_ENCODE = """
examples:
  latentmap encode ./images --model pixels
  latentmap encode ./tiles --model my_models.py:Encoder --checkpoint enc.pt \\
      --model-kwargs '{"dim": 512}' --layer backbone --layer head --pool p90 --labels labels.csv
  latentmap encode ./scripted_model_inputs --model model.ts
  latentmap encode embeddings.npz            # precomputed vectors (+ metadata, thumbnails)
  latentmap encode cache.npz --reduction all  # a seed-002 cache, with PCA, t-SNE and UMAP maps
  latentmap encode ./images --labels boxes.csv --draw-bboxes --save-cache out.npz
"""


EXAMPLES_SAMPLE = """
examples:
  latentmap sample digits-demo --n 20 --out samples.html
  latentmap sample digits-demo --layer encoder --dist gmm --k 5 --seed 3 --out samples.png
  latentmap sample digits-demo --region label=3 --decoder decoder.pt --out threes.html
  latentmap sample ID --decoder my_models.py:Decoder --decoder-checkpoint dec.pt --out s.html
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return vals


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentmap", description="Explore the latent spaces of neural networks."
    )
    p.add_argument("--cache-dir", help="cache directory (default: $LATENTMAP_CACHE_DIR or ./cache)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser(
        "encode",
        help="encode an image folder or import an embeddings file",
        description="Run SOURCE through a model into the cache and print the dataset id.",
        epilog=EXAMPLES_ENCODE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "source", help="image folder (PNG/JPEG/TIFF), or .npy/.npz/.parquet/.csv embeddings"
    )
    e.add_argument(
        "--model",
        default="pixels",
        help="pixels | demo-cnn | model.pt (TorchScript) | file.py:Class | package.module:Class",
    )
    e.add_argument("--checkpoint", help="state-dict checkpoint for file.py:Class models")
    e.add_argument("--model-kwargs", default=None, help="JSON object of constructor arguments")
    e.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a fully pickled checkpoint (runs code from the file: only for files you trust)",
    )
    e.add_argument(
        "--layer",
        action="append",
        default=[],
        dest="layers",
        metavar="NAME",
        help="named module to capture (repeatable; default: the model's output)",
    )
    e.add_argument(
        "--pool", default="mean", help="pooling of spatial outputs: mean | max | pNN | flatten"
    )
    e.add_argument(
        "--labels", help="CSV/parquet metadata keyed by file name (any number of columns)"
    )
    e.add_argument(
        "--predictions", metavar="LAYER", help="layer whose argmax is stored as column 'pred'"
    )
    e.add_argument("--batch-size", type=_positive, default=64)
    e.add_argument("--num-samples", type=_positive, help="encode a seeded random subset of N items")
    e.add_argument("--image-size", type=_positive, help="resize every image to N x N pixels")
    e.add_argument("--bands", type=_ints, help="bands fed to the model, e.g. 0,1,2,3,4")
    e.add_argument("--mean", type=_floats, help="per-band mean subtracted after scaling to [0, 1]")
    e.add_argument("--std", type=_floats, help="per-band std divided by after --mean")
    e.add_argument(
        "--rgb", type=_ints, default=(0, 1, 2), help="bands shown in thumbnails (default 0,1,2)"
    )
    e.add_argument("--thumbnail-size", type=_positive, default=96, help="thumbnail size in pixels")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    e.add_argument("--workers", type=int, help="DataLoader workers (default: auto)")
    e.add_argument("--name", help="display name of the dataset")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--draw-bboxes",
        action="store_true",
        help="draw the metadata's bounding boxes on the images before encoding (thumbnails "
        "show the boxes either way)",
    )
    e.add_argument(
        "--save-cache", metavar="PATH", help="also write the dataset as a seed-002 .npz cache"
    )
    e.add_argument(
        "--group-captures",
        action="store_true",
        help="single-band files of one capture (IMG_0424_1.tif ... IMG_0424_5.tif) become one "
        "multi-band item",
    )
    e.add_argument(
        "--channel-analysis",
        metavar="DIR",
        help="after encoding, write per-category channel means / stds / spatial maps of every "
        "layer as HTML into DIR",
    )
    e.add_argument(
        "--channel-column", default="label", help="categories for --channel-analysis (label)"
    )
    e.add_argument(
        "--groups",
        metavar="FILE",
        help="category-group mapping (YAML/JSON: group -> categories) saved with the dataset "
        "for colouring, and used by --channel-analysis",
    )
    e.add_argument(
        "--reduction",
        choices=["pca", "tsne", "umap", "all"],
        help="precompute these 2-D maps after encoding",
    )

    r = sub.add_parser("reduce", help="precompute 2-D projections of a dataset")
    r.add_argument("dataset", help="dataset id or name (see `latentmap list`)")
    r.add_argument("--method", default="all", choices=["pca", "tsne", "umap", "all"])
    r.add_argument(
        "--layer",
        action="append",
        dest="layers",
        metavar="NAME",
        help="layer (repeatable; default: all layers)",
    )
    r.add_argument("--perplexity", type=float, help="t-SNE perplexity (default 30)")
    r.add_argument("--n-neighbors", type=int, help="UMAP n_neighbors (default 15)")
    r.add_argument("--min-dist", type=float, help="UMAP min_dist (default 0.1)")
    r.add_argument("--metric", choices=["cosine", "euclidean"], help="UMAP metric (default cosine)")
    r.add_argument("--seed", type=int, default=0)

    pc = sub.add_parser(
        "precompute",
        help="build a dataset's search indexes and default t-SNE / UMAP maps",
        description=(
            "What the app starts in the background after an encode: the nearest-neighbour "
            "index of every layer of 200,000 rows or more, then the default layer's UMAP and "
            "t-SNE maps (default parameters). Cached steps are skipped."
        ),
    )
    pc.add_argument("dataset", help="dataset id or name (see `latentmap list`)")
    pc.add_argument(
        "--steps",
        default="index,umap,tsne",
        help="comma-separated subset of index,umap,tsne (default: all three)",
    )

    s = sub.add_parser("serve", help="start the web app")
    s.add_argument("dataset", nargs="?", help="dataset id or name to open first")
    s.add_argument(
        "--demo", action="store_true", help="build (first time) and open the digits demo"
    )
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8050)")
    s.add_argument(
        "--auth-file",
        metavar="FILE",
        default=None,
        help="user:password lines; required (or LATENTMAP_USERS) to serve beyond 127.0.0.1",
    )
    s.add_argument(
        "--load-cache",
        metavar="PATH",
        help="import a seed-002 .npz cache (once: the same file gives the same dataset) and open it",
    )

    sub.add_parser("list", help="list cached datasets and derived results")

    x = sub.add_parser(
        "export",
        help="write a dataset as seed-002 .npz, CSV/parquet, TensorBoard projector TSV, or its "
        "maps as PNG/HTML",
    )
    x.add_argument("dataset", help="dataset id or name")
    x.add_argument(
        "--format", required=True, choices=["npz", "csv", "parquet", "tensorboard", "png", "html"]
    )
    x.add_argument(
        "--out",
        required=True,
        help="output file (npz/csv/parquet/png/html) or folder (tensorboard)",
    )
    x.add_argument(
        "--reduction",
        choices=["pca", "tsne", "umap", "all"],
        help="png/html: the map(s) drawn, all = PCA, t-SNE and UMAP side by side (default "
        "umap); csv/parquet: add this map's coordinates",
    )
    x.add_argument(
        "--color", metavar="COL", help="png/html: colour by this column (default: label)"
    )
    x.add_argument("--seed", type=int, default=0, help="png/html: seed of the maps (default 0)")
    x.add_argument("--layer", help="layer (default: the dataset's default layer)")
    x.add_argument(
        "--method",
        choices=["pca", "tsne", "umap"],
        help="add the 2-D coordinates of this projection (csv/parquet)",
    )
    x.add_argument("--vectors", action="store_true", help="include latent vectors (csv/parquet)")

    rp = sub.add_parser(
        "report",
        help="write static PNG plots and one interactive HTML report of a dataset",
        description=(
            "Per layer the maps side by side with class centroids, a grid of all maps, the "
            "confusion matrix, confusion rate vs centroid distance per layer, and report.html."
        ),
    )
    rp.add_argument("dataset", help="dataset id or name (see `latentmap list`)")
    rp.add_argument("--out", required=True, help="output folder (created)")
    rp.add_argument("--layers", metavar="A,B", help="comma-separated layers (default: all layers)")
    rp.add_argument("--methods", default="tsne,umap", metavar="M,N", help="any of pca,tsne,umap")
    rp.add_argument("--true", dest="true_col", metavar="COL", help="label column (default: label)")
    rp.add_argument(
        "--pred", dest="pred_col", metavar="COL", help="predictions column (default: pred)"
    )

    sm = sub.add_parser(
        "sample",
        help="draw random latents, show the nearest real items (and decoded images)",
        description=(
            "Draw N random latents from a distribution fitted to a layer (or to a region of "
            "it), find the real item nearest to each by cosine similarity, and write a gallery "
            "with what the hits reveal next to N truly random items."
        ),
        epilog=EXAMPLES_SAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sm.add_argument("dataset", help="dataset id or name (see `latentmap list`)")
    sm.add_argument("--n", default="20", metavar="N", help="number of samples (default 20)")
    sm.add_argument("--layer", help="layer (default: the dataset's default layer)")
    sm.add_argument(
        "--dist", default="full", metavar="full|diag|gmm", help="distribution (default full)"
    )
    sm.add_argument("--k", default="3", metavar="K", help="mixture components for gmm (default 3)")
    sm.add_argument(
        "--region", metavar="COL=VALUE", help="fit to the items whose COL is VALUE, e.g. label=3"
    )
    sm.add_argument("--seed", default="0", metavar="S", help="random seed (default 0)")
    sm.add_argument(
        "--map",
        default="pca",
        metavar="pca|tsne|umap|none",
        help="map the samples are drawn on in the HTML gallery (default pca)",
    )
    sm.add_argument("--decoder", metavar="SPEC", help="decoder.pt (TorchScript) or file.py:Class")
    sm.add_argument(
        "--decoder-checkpoint", metavar="PATH", help="state dict for a file.py:Class decoder"
    )
    sm.add_argument("--device", default="cpu", help="decoder device: cpu | cuda | auto")
    sm.add_argument("--out", required=True, help="FILE.html (interactive) or FILE.png")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        build_parser().print_help()
        return 2
    try:
        commands = {
            "encode": cmd_encode,
            "reduce": cmd_reduce,
            "precompute": cmd_precompute,
            "serve": cmd_serve,
            "list": cmd_list,
            "export": cmd_export,
            "report": cmd_report,
            "sample": cmd_sample,
        }
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(
            "\nlatentmap: interrupted; finished batches are kept: run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's one place that turns errors into messages
        if args.debug or not _is_user_error(e):
            if args.debug:
                raise
            print(
                f"latentmap: unexpected error: {type(e).__name__}: {e} (rerun with --debug)",
                file=sys.stderr,
            )
            return 1
        print(f"latentmap: error: {e}", file=sys.stderr)
        return 2


def _is_user_error(e: Exception) -> bool:
    from latentmap.pipeline.store import StoreError

    return isinstance(e, (ValueError, StoreError, FileNotFoundError, PermissionError))


def _settings(args, **over):
    from latentmap.settings import Settings

    return Settings.from_env(cache_dir=args.cache_dir, debug=args.debug or None, **over)


def _resolve_dataset(store, name: str) -> str:
    from latentmap.pipeline.store import DatasetNotFound

    ds = store.find_by_name(name)
    if ds is None:
        known = ", ".join(f"{i.name} ({i.id})" for i in store.list_datasets(False)) or "none"
        raise DatasetNotFound(f"no dataset {name!r} in {store.root}; cached datasets: {known}")
    return ds


def cmd_encode(args) -> int:
    from latentmap.pipeline.jobs import EncodeRequest, encode
    from tqdm import tqdm

    settings = _settings(args)
    store = settings.store()
    req = EncodeRequest(
        source=args.source,
        model=args.model,
        checkpoint=args.checkpoint,
        model_kwargs=args.model_kwargs,
        layers=args.layers,
        pool=args.pool,
        labels=args.labels,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        device=args.device,
        name=args.name,
        image_size=args.image_size,
        bands=args.bands,
        mean=args.mean,
        std=args.std,
        predictions=args.predictions,
        trust_checkpoint=args.trust_checkpoint,
        workers=args.workers,
        thumb_size=args.thumbnail_size,
        rgb=tuple(args.rgb),
        seed=args.seed,
        max_spatial_bytes=settings.max_spatial_bytes,
        draw_bboxes=args.draw_bboxes,
        group_captures=args.group_captures,
    )
    if args.groups:
        from latentmap.pipeline.groups import load_groups

        load_groups(args.groups)  # a bad mapping file fails before the encode, not after
    if args.save_cache and Path(args.save_cache).suffix.lower() != ".npz":
        raise ValueError(f"--save-cache must name a .npz file, got {args.save_cache}")
    bar = None

    def progress(done: int, total: int, message: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="img", desc="encode", file=sys.stderr, disable=None)
            print(message, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        result = encode(store, req, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    for item, reason in result.skipped:
        print(f"skipped {item}: {reason}")
    for note in result.notices:
        print(f"note: {note}")
    verb = "reused" if result.reused else "encoded"
    print(
        f"{verb} {result.n_encoded} items, skipped {len(result.skipped)}"
        + (f", in {result.seconds:.1f} s" if not result.reused else "")
        + f": dataset {result.ds_id}"
    )
    _precompute(store, result.ds_id, ("index",))
    if args.reduction:
        precompute_maps(store, result.ds_id, args.reduction, seed=args.seed)
    groups = None
    if args.groups:
        from latentmap.pipeline.groups import load_groups, save_groups

        groups = load_groups(args.groups)
        name = Path(args.groups).stem
        save_groups(store, result.ds_id, name, groups)
        print(f"saved category groups {name!r} ({len(groups.names)} groups)")
        from latentmap.pipeline.groups import apply_groups

        meta = store.metadata(result.ds_id)
        applied = []
        for col in meta.columns:
            grouped, warn = apply_groups(meta[col], groups)
            if any(v not in (None, "(other)") for v in grouped):
                applied.append(str(col))
                for w in warn:
                    print(f"note: {col}: {w}")
        if not applied:
            print("note: none of the mapping's categories occur in the dataset's columns")
    if args.channel_analysis:
        from latentmap.components.channel_figures import write_channel_analysis

        for layer in store.layers(result.ds_id):
            if "@" in layer:
                continue
            out = Path(args.channel_analysis) / layer
            for path in write_channel_analysis(
                store, result.ds_id, layer, args.channel_column, out, groups=groups
            ):
                print(f"wrote {path}")
    if args.save_cache:
        from latentmap.pipeline.exports import export_npz_layers

        for path, layer in export_npz_layers(store, result.ds_id, Path(args.save_cache)):
            print(f"wrote {path} ({layer})")
    print(result.ds_id)
    return 0


def precompute_maps(store, ds_id: str, reduction: str, *, seed: int = 0) -> list[tuple[str, str]]:
    """Compute (or find cached) the ``reduction`` maps (pca | tsne | umap | all) of every layer
    of a dataset, with a progress bar; returns the (method, layer) pairs."""
    import time

    from latentmap.pipeline.reduce import _LABELS, METHODS, projection
    from tqdm import tqdm

    methods = METHODS if reduction == "all" else (reduction,)
    layers = [
        name
        for name, info in store.manifest(ds_id).get("layers", {}).items()
        if not info.get("variant_of")
    ]
    done = []
    for method in methods:
        for layer in layers:
            t0 = time.perf_counter()
            label = f"{_LABELS[method]} of {layer}"
            with tqdm(total=100, desc=label, unit="%", file=sys.stderr, disable=None) as bar:

                def progress(frac: float, msg: str, bar=bar) -> None:
                    bar.update(max(0, int(frac * 100) - bar.n))
                    bar.set_postfix_str(msg[:50])

                entry = projection(store, ds_id, layer, method, seed=seed, progress=progress)
            for note in entry.info.get("notices", []):
                print(f"note: {label}: {note}")
            print(f"{method:5s} {layer}: {time.perf_counter() - t0:.1f} s")
            done.append((method, layer))
    return done


def load_cache(store, path, *, max_spatial_bytes: int | None = None) -> str:
    """Import a seed-002 ``.npz`` cache into the store and return its dataset id. Importing
    is done once: the same content (even in another file) gives the same id again."""
    from latentmap.pipeline.jobs import EncodeRequest, encode

    p = Path(path).expanduser()
    if p.suffix.lower() != ".npz":
        raise ValueError(f"--load-cache takes a seed-002 .npz cache, got {p.name}")
    extra = {} if max_spatial_bytes is None else {"max_spatial_bytes": int(max_spatial_bytes)}
    result = encode(store, EncodeRequest(source=str(p), **extra))
    for note in [] if result.reused else result.notices:
        print(f"note: {note}", file=sys.stderr)
    verb = "already imported" if result.reused else f"imported {result.n_encoded} items"
    print(f"{p.name}: {verb}: dataset {result.ds_id}", file=sys.stderr)
    return result.ds_id


def cmd_reduce(args) -> int:
    import time

    from latentmap.pipeline.reduce import METHODS, projection

    store = _settings(args).store()
    ds = _resolve_dataset(store, args.dataset)
    layers = args.layers or store.layers(ds)
    for layer in layers:
        if layer not in store.layers(ds):
            raise ValueError(
                f"dataset {ds} has no layer {layer!r}; it has: {', '.join(store.layers(ds))}"
            )
    methods = METHODS if args.method == "all" else (args.method,)
    for method in methods:
        params = {}
        if method == "tsne" and args.perplexity is not None:
            params["perplexity"] = args.perplexity
        if method == "umap":
            for k in ("n_neighbors", "min_dist", "metric"):
                if getattr(args, k) is not None:
                    params[k] = getattr(args, k)
        for layer in layers:
            t0 = time.perf_counter()
            entry = projection(store, ds, layer, method, params, seed=args.seed)
            for note in entry.info.get("notices", []):
                print(f"note: {note}")
            print(f"{method:5s} {layer}: {time.perf_counter() - t0:.1f} s")
    return 0


def _precompute(store, ds_id: str, steps: tuple[str, ...]) -> list[dict]:
    """Run ``pipeline.precompute`` steps with a progress bar; print what ran."""
    from latentmap.pipeline.precompute import _LABEL, plan, run
    from tqdm import tqdm

    if not plan(store, ds_id, steps):
        return []
    with tqdm(total=100, desc="precompute", unit="%", file=sys.stderr, disable=None) as bar:

        def progress(frac: float, msg: str) -> None:
            bar.update(max(0, int(frac * 100) - bar.n))
            bar.set_postfix_str(msg[:50])

        done = run(store, ds_id, steps, progress=progress)
    for t in done:
        what = f"{_LABEL[t['step']]} of {t['layer']}"
        print(f"{what}: {t['error']}" if "error" in t else f"{what}: {t['seconds']:.1f} s")
    return done


def cmd_precompute(args) -> int:
    store = _settings(args).store()
    ds = _resolve_dataset(store, args.dataset)
    steps = tuple(x.strip() for x in str(args.steps).split(",") if x.strip())
    done = _precompute(store, ds, steps)  # unknown steps: ValueError naming them
    if not done:
        print(f"dataset {ds}: nothing to precompute (all cached)")
    return 1 if any("error" in t for t in done) else 0


def cmd_serve(args) -> int:
    from latentmap.auth import check_access
    from latentmap.settings import Settings

    settings = _settings(args, host=args.host, port=args.port, auth_file=args.auth_file)
    check_access(settings)  # before any slow work: no open server beyond this machine
    from latentmap.callbacks.manager import check_redis

    # Redis configured but unreachable: say so now, not on the first job (or, with
    # LATENTMAP_REDIS_FALLBACK, fall back to embedded jobs); asked once
    redis_url = check_redis(settings).redis_url
    store = settings.store()
    ds = None
    if args.load_cache and (args.dataset or args.demo):
        other = "a dataset" if args.dataset else "--demo"
        raise ValueError(f"give either --load-cache or {other}, not both")
    if args.load_cache:
        ds = load_cache(store, args.load_cache, max_spatial_bytes=settings.max_spatial_bytes)
    elif args.dataset:
        ds = _resolve_dataset(store, args.dataset)
    elif args.demo or not store.list_datasets(include_incomplete=False):
        ds = build_demo(store)
    settings = Settings.from_env(
        cache_dir=settings.cache_dir,
        host=settings.host,
        port=settings.port,
        dataset=ds,
        debug=settings.debug or None,
        auth_file=settings.auth_file,
    )
    if settings.redis_url != redis_url:
        import dataclasses

        settings = dataclasses.replace(settings, redis_url=redis_url)
    from latentmap.pipeline import localworker, warmup

    n_workers = localworker.workers_from_env()
    if settings.debug and os.environ.get("WERKZEUG_RUN_MAIN") != "true":
        n_workers = 0  # the reloader's watcher process serves nothing: its child starts them
    if not settings.redis_url and n_workers:
        # spawned UMAP workers that compile numba once now; the jobs forked from this
        # process hand their UMAPs to them (pipeline/localworker.py)
        import atexit
        import signal

        atexit.register(localworker.Pool(n_workers, warm=warmup.enabled()).start().stop)
        # a SIGTERM'd server exits through atexit (the workers also end with their parent)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    elif not settings.redis_url and warmup.enabled():
        warmup.start_warmup()  # numba's compile cache for UMAP, filled in a spawned child meanwhile
    from latentmap.app import create_app

    app = create_app(settings)
    print(f"latentmap: serving on http://{settings.host}:{settings.port}/", file=sys.stderr)
    app.run(host=settings.host, port=settings.port, debug=settings.debug)
    return 0


def build_demo(store) -> str:
    """Build (or find) the demo. Training runs in a spawned child process so that the serving
    process never starts torch's OpenMP thread pool: background jobs are forked from it, and
    a fork after OpenMP started can hang the job (seen as jobs that never finish)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_build_demo_child, (str(store.root),))


def _build_demo_child(root: str) -> str:
    from latentmap.pipeline.store import Store

    return _build_demo_here(Store(root))


def _build_demo_here(store) -> str:
    from latentmap.pipeline.demo import ensure_demo
    from tqdm import tqdm

    with tqdm(total=100, desc="demo", unit="%", file=sys.stderr, disable=None) as bar:
        last = ""

        def progress(frac: float, msg: str) -> None:
            nonlocal last
            bar.update(int(frac * 100) - bar.n)
            if msg != last:
                bar.set_postfix_str(msg[:60])
                last = msg

        return ensure_demo(store, progress=progress)


def cmd_list(args) -> int:
    store = _settings(args).store()
    infos = store.list_datasets()
    if not infos:
        print(
            f"no datasets in {store.root} (try `latentmap encode FOLDER` or `latentmap serve --demo`)"
        )
        return 0
    derived = store.derived_entries()
    print(f"cache: {store.root}")
    print(f"{'id':16}  {'name':20}  {'status':10}  {'items':>7}  {'projections':>11}  layers")
    for i in infos:
        n_proj = sum(
            1
            for d in derived
            if d["key"].get("kind") == "projection" and d["key"].get("dataset") == i.id
        )
        status = i.status if i.status != "encoding" else "partial (rerun encode to resume)"
        print(
            f"{i.id:16}  {i.name[:20]:20}  {status:10}  {i.n:7d}  {n_proj:11d}  {', '.join(i.layers)}"
        )
    return 0


def cmd_export(args) -> int:
    from latentmap.pipeline import exports

    store = _settings(args).store()
    ds = _resolve_dataset(store, args.dataset)
    m = store.manifest(ds)
    layer = args.layer or m.get("default_layer") or store.layers(ds)[-1]
    if layer not in m["layers"]:
        raise ValueError(f"dataset {ds} has no layer {layer!r}; it has: {', '.join(m['layers'])}")
    out = Path(args.out)
    if args.reduction and args.format in ("npz", "tensorboard"):
        raise ValueError(f"--reduction does not apply to --format {args.format}")
    if args.color and args.format not in exports.MAP_FORMATS:
        raise ValueError("--color applies to --format png or html")
    if args.format == "npz":
        path = exports.export_npz(store, ds, layer, out)
    elif args.format == "tensorboard":
        path, _ = exports.export_tensorboard(store, ds, layer, out)
        path = path.parent
    elif args.format in exports.MAP_FORMATS:
        from latentmap.pipeline.reduce import METHODS
        from tqdm import tqdm

        reduction = args.reduction or args.method or "umap"
        methods = METHODS if reduction == "all" else (reduction,)
        if out.suffix.lower() != f".{args.format}":
            out = out.with_suffix(f".{args.format}")
        with tqdm(total=100, desc="export", unit="%", file=sys.stderr, disable=None) as bar:

            def progress(frac: float, msg: str) -> None:
                bar.update(max(0, int(frac * 100) - bar.n))
                bar.set_postfix_str(msg[:50])

            path, notes = exports.export_maps(
                store, ds, layer, methods, out, color=args.color, seed=args.seed, progress=progress
            )
        for note in notes:
            print(f"note: {note}")
    else:
        coords = None
        if args.reduction == "all":
            raise ValueError(
                f"--reduction all applies to --format png or html; for {args.format} pick one "
                "of pca, tsne, umap"
            )
        if args.method and args.reduction and args.method != args.reduction:
            raise ValueError(
                f"--method {args.method} and --reduction {args.reduction} disagree: give one"
            )
        method = args.method or args.reduction
        if method:
            from latentmap.pipeline.reduce import projection

            coords = projection(store, ds, layer, method)["coords"]
        if out.suffix != f".{args.format}":
            out = out.with_suffix(f".{args.format}")
        path = exports.export_table(
            store, ds, out, layer=layer, coords=coords, include_vectors=args.vectors
        )
    print(f"wrote {path}")
    return 0


def _comma_list(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError(f"--{what} needs at least one name, got {text!r}")
    return items


def cmd_report(args) -> int:
    from latentmap.pipeline.reduce import _check_method
    from latentmap.report import write_report
    from tqdm import tqdm

    store = _settings(args).store()
    ds = _resolve_dataset(store, args.dataset)
    layers = _comma_list(args.layers, "layers")
    known = store.layers(ds)
    for layer in layers or []:
        if layer not in known:
            raise ValueError(f"dataset {ds} has no layer {layer!r}; it has: {', '.join(known)}")
    methods = [_check_method(m) for m in _comma_list(args.methods, "methods") or []]
    columns = list(store.metadata(ds).columns)
    for flag, col in (("--true", args.true_col), ("--pred", args.pred_col)):
        if col is not None and col not in columns:
            raise ValueError(
                f"{flag} {col!r}: dataset {ds} has no such column; columns: "
                f"{', '.join(map(str, columns))}"
            )
    import time

    with tqdm(total=100, desc="report", unit="%", file=sys.stderr, disable=None) as bar:
        last = ""
        said = 0.0

        def progress(frac: float, msg: str) -> None:
            nonlocal last, said
            if bar.disable:  # not a terminal (a log, a pipe): a line now and then
                now = time.monotonic()
                milestone = msg.startswith(("computing", "writing", "report written"))
                if msg != last and (milestone or now - said >= 2.0):
                    print(f"report {frac:4.0%}: {msg}", file=sys.stderr)
                    said = now
            else:
                bar.update(max(0, int(frac * 100) - bar.n))
                if msg != last:
                    bar.set_postfix_str(msg[:60])
            last = msg

        result = write_report(
            store,
            ds,
            Path(args.out),
            layers=layers,
            methods=methods,
            true_col=args.true_col or "label",
            pred_col=args.pred_col or "pred",
            progress=progress,
        )
    for path in result.files:
        print(f"wrote {path}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _int_option(flag: str, text: str, lo: int) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag} must be a whole number, got {text!r}") from None
    if v < lo:
        raise ValueError(f"{flag} must be at least {lo}, got {v}")
    return v


def cmd_sample(args) -> int:
    from latentmap.pipeline import sampling

    store = _settings(args).store()
    n = _int_option("--n", args.n, 1)
    k = _int_option("--k", args.k, 1)
    seed = _int_option("--seed", args.seed, 0)
    out = Path(args.out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("html", "htm", "png"):
        raise ValueError(f"--out must end in .html or .png, got {args.out!r}")
    if args.dist not in sampling.DISTRIBUTIONS:
        raise ValueError(f"--dist {args.dist!r}: use one of {', '.join(sampling.DISTRIBUTIONS)}")
    method = args.map.strip().lower()
    if method not in ("pca", "tsne", "umap", "none"):
        raise ValueError(f"--map {args.map!r}: use pca, tsne, umap or none")
    if args.decoder_checkpoint and not args.decoder:
        raise ValueError("--decoder-checkpoint needs --decoder file.py:Class")
    ds = _resolve_dataset(store, args.dataset)
    m = store.manifest(ds)
    layers = list(m.get("layers", {}))
    layer = args.layer or m.get("default_layer") or layers[-1]
    if layer not in layers:
        raise ValueError(f"dataset {ds} has no layer {layer!r}; it has: {', '.join(layers)}")
    region = None
    if args.region is not None:
        col, eq, value = args.region.partition("=")
        if not eq or not col.strip():
            raise ValueError(f"--region must be COL=VALUE (e.g. label=3), got {args.region!r}")
        region = {"column": col.strip(), "value": value.strip()}
    dim = int(m["layers"][layer]["dim"])
    decoder = None
    if args.decoder:
        from latentmap.pipeline.decoders import check_decoder, load_decoder

        decoder = load_decoder(args.decoder, args.decoder_checkpoint, device=args.device)
        check_decoder(decoder, dim, layer=layer)  # before sampling: a mismatch fails fast
    entry = sampling.sample_latents(
        store, ds, layer, n=n, dist=args.dist, k=k, seed=seed, region=region
    )
    decoded = None
    if decoder is not None:
        from latentmap.pipeline.decoders import decode_images

        decoded = decode_images(decoder, entry["latents"])
    cards = sampling.gallery_items(store, ds, entry, decoded)
    page = _SamplePage(store, ds, m, layer, entry, cards, decoder_spec=args.decoder)
    if fmt == "png":
        path = page.write_png(out)
    else:
        xy = coords = None
        if method != "none":
            from latentmap.pipeline.reduce import projection

            coords = projection(store, ds, layer, method)["coords"]
            xy = sampling.place_on_map(store, ds, layer, method, None, entry["latents"])
        path = page.write_html(out, method, coords, xy)
    info = entry.info
    s, b = info["summary"], info["baseline"]
    print(
        f"{info['n']} samples of layer {layer} ({info['dist']}, seed {info['seed']}, fitted to "
        f"{info['fit_rows']} items) hit {s['distinct']} distinct items, mean similarity "
        f"{s['mean_similarity']:.3f}; {info['n']} random items: {b['distinct']} distinct, "
        f"mean similarity to their nearest other item {b['mean_similarity']:.3f}"
    )
    if s["hubs"]:
        hubs = ", ".join(f"row {r} x{c}" for r, c in s["hubs"][:5])
        print(f"hubs (nearest to several samples): {hubs}")
    for note in info.get("notes", []):
        print(f"note: {note}")
    print(f"wrote {path}")
    return 0


_SAMPLE_CSS = """
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px; text-align: center;
        font-size: 12px; background: #fff; }
.card.flash { outline: 3px solid #f08c00; }
.card .imgs { display: flex; gap: 4px; justify-content: center; }
.card img { width: 96px; height: 96px; image-rendering: pixelated; display: block;
            background: #eee; }
.card .cap { color: #666; font-size: 11px; }
.card .num { font-weight: 600; }
.hubs img { width: 64px; height: 64px; }
.noimg { width: 96px; height: 96px; background: #eee; color: #999; font-size: 11px;
         display: flex; align-items: center; justify-content: center; }
"""

_MAX_PNG_CARDS = 100


def _data_uri(png: bytes | None) -> str:
    import base64

    if not png:
        return ""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img_html(png: bytes | None, alt: str) -> str:
    if not png:
        return '<div class="noimg">no image</div>'
    return f'<img src="{_data_uri(png)}" alt="{alt}">'


class _SamplePage:
    """The gallery of a `sample_latents` entry as a standalone HTML page or a PNG."""

    def __init__(self, store, ds, manifest, layer, entry, cards, *, decoder_spec=None):
        self.store, self.ds, self.m, self.layer = store, ds, manifest, layer
        self.entry, self.info, self.cards = entry, entry.info, cards
        self.decoder_spec = decoder_spec
        from latentmap.pipeline.sampling import _labels_of

        self.labels = _labels_of(store, ds)

    # ----- shared text
    def title(self) -> str:
        return f"Latent samples: {self.m.get('name', self.ds)} / {self.layer}"

    def params_text(self) -> str:
        i = self.info
        region = i["region"]
        where = "the whole layer"
        if region and "column" in region:
            where = f"{region['column']} = {region['value']}"
        elif region:
            where = f"a selection of {len(region['rows'])} items"
        dist = {"full": "Gaussian, full covariance", "diag": "Gaussian, diagonal"}.get(
            i["dist"], f"mixture of {i['components']} Gaussians"
        )
        shrink = f", Ledoit-Wolf shrinkage {i['shrinkage']:.3g}" if i.get("shrinkage") else ""
        return (
            f"{i['n']} random latents of layer {self.layer} ({i['dim']}-d) from a {dist}{shrink} "
            f"fitted to {i['fit_rows']} items of {where}; seed {i['seed']}. Each is shown with "
            "the real item nearest to it by cosine similarity."
        )

    def label_of(self, row: int) -> str:
        return "" if self.labels is None else str(self.labels[int(row)])

    # ----- HTML
    def _card_html(self, c: dict) -> str:
        import html

        imgs = []
        if self.decoder_spec:
            imgs.append(
                f'<div>{_img_html(c["decoded"], "decoded")}<div class="cap">decoded</div></div>'
            )
        nearest = _img_html(c["thumbnail"], "row {}".format(c["row"]))
        imgs.append(f'<div>{nearest}<div class="cap">nearest</div></div>')
        label = f" &middot; {html.escape(c['label'])}" if c["label"] is not None else ""
        return (
            f'<div class="card" id="sample-{c["sample"]}"><div class="num">#{c["sample"]}</div>'
            f'<div class="imgs">{"".join(imgs)}</div>'
            f"<div>sim {c['similarity']:.3f}{label}</div>"
            f'<div class="cap">row {c["row"]}</div></div>'
        )

    def _baseline_html(self) -> str:
        import html

        from latentmap.pipeline.sampling import thumbnail_bytes

        b = self.info["baseline"]
        parts = []
        for j, (r, s) in enumerate(zip(b["rows"], b["nearest_other_sims"], strict=True)):
            lab = self.label_of(r)
            sim = f"nn sim {s:.3f}" if s is not None and s == s else ""
            parts.append(
                f'<div class="card"><div class="num">random {j + 1}</div>'
                f"{_img_html(thumbnail_bytes(self.store, self.ds, r), f'row {r}')}"
                f"<div>{html.escape(lab)}</div><div class='cap'>row {r} {sim}</div></div>"
            )
        return '<div class="cards">' + "".join(parts) + "</div>"

    def _summary_html(self) -> str:
        import html

        from latentmap.pipeline.sampling import thumbnail_bytes

        s, b = self.info["summary"], self.info["baseline"]
        rows = [
            ("items", s["n_samples"], b["n_samples"]),
            ("distinct items hit", s["distinct"], b["distinct"]),
            ("items nearest to 2+ samples (hubs)", len(s["hubs"]), len(b["hubs"])),
            ("samples landing on a hub", s["hub_hits"], b["hub_hits"]),
            (
                "mean cosine similarity",
                f"{s['mean_similarity']:.3f} (sample to nearest item)",
                f"{b['mean_similarity']:.3f} (item to nearest other item)",
            ),
        ]
        out = [
            "<h2>What the samples reveal</h2>",
            "<table><tr><th></th><th>samples</th><th>random items (baseline)</th></tr>",
        ]
        out += [f"<tr><td>{a}</td><td>{x}</td><td>{y}</td></tr>" for a, x, y in rows]
        out.append("</table>")
        if s["hubs"]:
            out.append("<p>Hubs: items nearest to several samples.</p><div class='cards hubs'>")
            for r, cnt in s["hubs"]:
                img = _img_html(thumbnail_bytes(self.store, self.ds, r), f"row {r}")
                out.append(
                    f'<div class="card">{img}<div>x{cnt}</div>'
                    f"<div class='cap'>row {r} {html.escape(self.label_of(r))}</div></div>"
                )
            out.append("</div>")
        if "labels" in s:
            out.append(
                "<table><tr><th>label</th><th>hits by samples</th><th>share</th>"
                "<th>random items</th><th>share of the data</th></tr>"
            )
            for c, v in s["labels"].items():
                bv = b.get("labels", {}).get(c, {"hits": 0})
                out.append(
                    f"<tr><td>{html.escape(c)}</td><td>{v['hits']}</td>"
                    f"<td>{v['hit_share']:.0%}</td><td>{bv['hits']}</td>"
                    f"<td>{v['data_share']:.0%}</td></tr>"
                )
            out.append("</table>")
        return "\n".join(out)

    def write_html(self, path: Path, method: str, coords, xy) -> Path:
        import html

        from latentmap.components.diagnostic_figures import save_file, write_html

        parts = [f"<style>{_SAMPLE_CSS}</style>", f"<p>{html.escape(self.params_text())}</p>"]
        parts += [f'<div class="note">{html.escape(n)}</div>' for n in self.info["notes"]]
        if not self.decoder_spec:
            parts.append(
                '<div class="note">No decoder given, so no sample is shown as an image of its '
                "own: pass --decoder decoder.pt (TorchScript) or --decoder file.py:Class "
                f"--decoder-checkpoint weights.pt, a model mapping a {self.info['dim']}-d "
                f"latent of layer {html.escape(self.layer)} to an image.</div>"
            )
        parts.append(self._summary_html())
        parts.append("<h2>Samples and their nearest real items</h2>")
        parts.append('<div class="cards">' + "".join(map(self._card_html, self.cards)) + "</div>")
        parts.append("<h2>Baseline: the same number of truly random items</h2>")
        parts.append(self._baseline_html())
        figs = []
        if coords is not None:
            figs.append((f"The samples on the {method.upper()} map", self.map_figure(coords, xy)))
        write_html(figs, path, title=self.title(), intro_html="\n".join(parts))
        if figs:  # clicking a sample on the map scrolls to its card
            page = Path(path).read_text(encoding="utf-8")
            script = (
                "<script>(function(){var f=document.getElementById('fig-0');"
                "if(!f||!f.on)return;f.on('plotly_click',function(d){var p=d.points[0];"
                "if(!p||p.data.name!=='samples')return;"
                "var el=document.getElementById('sample-'+(p.pointIndex+1));if(!el)return;"
                "el.scrollIntoView({behavior:'smooth',block:'center'});el.classList.add('flash');"
                "setTimeout(function(){el.classList.remove('flash');},1500);});})();</script>"
            )
            page = page.replace("</body></html>", script + "</body></html>")
            save_file(path, page.encode("utf-8"))
        return Path(path)

    def map_figure(self, coords, xy) -> dict:
        import numpy as np
        from latentmap.components.figures import scatter_figure, trace_groups
        from latentmap.pipeline.sampling import label_column

        meta = self.store.metadata(self.ds)
        col = label_column(self.store, self.ds, meta)
        ok = np.isfinite(coords).all(axis=1)
        groups = trace_groups(meta, ok, color=col)
        hover = [
            f"sample {c['sample']}: nearest row {c['row']}"
            + (f" ({c['label']})" if c["label"] is not None else "")
            + f", sim {c['similarity']:.3f}"
            for c in self.cards
        ]
        base = np.asarray(self.info["baseline"]["rows"], dtype=np.int64)
        overlays = [
            {
                "type": "scatter",
                "mode": "markers",
                "name": "random items",
                "x": coords[base, 0].tolist(),
                "y": coords[base, 1].tolist(),
                "marker": {"symbol": "diamond-open", "size": 11, "color": "#555"},
                "visible": "legendonly",
                "hoverinfo": "skip",
            },
            {
                "type": "scatter",
                "mode": "markers+text",
                "name": "samples",
                "x": xy[:, 0].tolist(),
                "y": xy[:, 1].tolist(),
                "text": [str(c["sample"]) for c in self.cards],
                "textposition": "top center",
                "textfont": {"size": 10},
                "hovertext": hover,
                "hoverinfo": "text",
                "marker": {
                    "symbol": "x",
                    "size": 12,
                    "color": "#111111",
                    "line": {"width": 1.5, "color": "#ffffff"},
                },
            },
        ]
        fig = scatter_figure(coords, groups, meta, color=col, overlays=overlays)
        fig["layout"]["height"] = 640
        return fig

    # ----- PNG
    def png_figure(self) -> tuple[dict, int, int]:
        """The gallery as one plotly figure drawn in pixel coordinates (images as layout
        images, text as annotations): title, summary, sample cards, random cards."""
        from latentmap.pipeline.sampling import thumbnail_bytes

        width = 1200
        thumb, gap = 96, 12
        dec = bool(self.decoder_spec)
        card_w = (2 * thumb + 4 if dec else thumb) + gap
        cols = max(1, (width - 2 * gap) // card_w)
        card_h = thumb + 46
        images: list[dict] = []
        notes: list[dict] = []

        def text(x, y, t, size=12, color="#222", anchor="left", bold=False):
            notes.append(
                {
                    "x": x,
                    "y": y,
                    "xref": "x",
                    "yref": "y",
                    "text": f"<b>{t}</b>" if bold else t,
                    "showarrow": False,
                    "xanchor": anchor,
                    "yanchor": "top",
                    "align": anchor,
                    "font": {"size": size, "color": color},
                }
            )

        def image(x, y, png):
            if png:
                images.append(
                    {
                        "source": _data_uri(png),
                        "xref": "x",
                        "yref": "y",
                        "x": x,
                        "y": y,
                        "sizex": thumb,
                        "sizey": thumb,
                        "xanchor": "left",
                        "yanchor": "top",
                        "sizing": "stretch",
                        "layer": "above",
                    }
                )
            else:
                text(x + thumb / 2, y + thumb / 2 - 8, "no image", 10, "#999", "center")

        s, b, i = self.info["summary"], self.info["baseline"], self.info
        y = gap
        text(gap, y, self.title(), 20, bold=True)
        y += 34
        lines = [self.params_text()]
        lines.append(
            f"Samples hit {s['distinct']} distinct items (at most {s['max_distinct']}); "
            f"{len(s['hubs'])} hubs take {s['hub_hits']} samples; mean similarity to the "
            f"nearest item {s['mean_similarity']:.3f}."
        )
        lines.append(
            f"Baseline, {b['n_samples']} truly random items: {b['distinct']} distinct; mean "
            f"similarity to their nearest other item {b['mean_similarity']:.3f}."
        )
        if s["hubs"]:
            lines.append(
                "Hubs: "
                + ", ".join(
                    f"row {r}"
                    + (f" ({self.label_of(r)})" if self.labels is not None else "")
                    + f" x{c}"
                    for r, c in s["hubs"][:8]
                )
            )
        if "labels" in s:
            lines.append(
                "Labels hit (samples / random / data share): "
                + ", ".join(
                    f"{c}: {v['hits']}/{b['labels'].get(c, {'hits': 0})['hits']}/"
                    f"{v['data_share']:.0%}"
                    for c, v in list(s["labels"].items())[:20]
                )
            )
        shown = self.cards[:_MAX_PNG_CARDS]
        notes_text = list(i["notes"])
        if len(self.cards) > len(shown):
            notes_text.append(f"the first {len(shown)} of {len(self.cards)} samples are shown")
        lines += [f"note: {t}" for t in notes_text]
        wrapped = []
        for line in lines:
            wrapped += _wrap(line, 160)
        text(gap, y, "<br>".join(wrapped), 12, "#333")
        y += 17 * len(wrapped) + 16
        text(gap, y, "Samples and their nearest real items", 15, bold=True)
        y += 26
        for j, c in enumerate(shown):
            x0 = gap + (j % cols) * card_w
            y0 = y + (j // cols) * card_h
            xi = x0
            if dec:
                image(xi, y0 + 16, c["decoded"])
                xi += thumb + 4
            image(xi, y0 + 16, c["thumbnail"])
            text(x0, y0, f"#{c['sample']}" + ("  decoded | nearest" if dec else ""), 11)
            lab = f" · {c['label']}" if c["label"] is not None else ""
            text(x0, y0 + thumb + 18, f"sim {c['similarity']:.3f}{lab}", 11)
        y += ((len(shown) + cols - 1) // cols) * card_h + 10
        text(gap, y, "Baseline: truly random items", 15, bold=True)
        y += 26
        bcols = max(1, (width - 2 * gap) // (thumb + gap))
        brows = b["rows"][:_MAX_PNG_CARDS]
        for j, r in enumerate(brows):
            x0 = gap + (j % bcols) * (thumb + gap)
            y0 = y + (j // bcols) * (thumb + 30)
            image(x0, y0, thumbnail_bytes(self.store, self.ds, r))
            text(x0, y0 + thumb + 2, f"row {r} {self.label_of(r)}", 10, "#555")
        y += ((len(brows) + bcols - 1) // bcols) * (thumb + 30) + gap
        height = int(y)
        axis = {"visible": False, "fixedrange": True}
        fig = {
            "data": [
                {
                    "type": "scatter",
                    "x": [0, width],
                    "y": [0, height],
                    "mode": "markers",
                    "marker": {"opacity": 0},
                    "hoverinfo": "skip",
                    "showlegend": False,
                }
            ],
            "layout": {
                "width": width,
                "height": height,
                "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                "xaxis": {**axis, "range": [0, width]},
                "yaxis": {**axis, "range": [height, 0]},
                "images": images,
                "annotations": notes,
                "paper_bgcolor": "#ffffff",
                "plot_bgcolor": "#ffffff",
                "showlegend": False,
            },
        }
        return fig, width, height

    def write_png(self, path: Path) -> Path:
        from latentmap.components.diagnostic_figures import write_png

        fig, w, h = self.png_figure()
        return write_png(fig, path, width=w, height=h, scale=2 if h <= 3000 else 1)


def _wrap(line: str, width: int) -> list[str]:
    import html
    import textwrap

    return [html.escape(x) for x in textwrap.wrap(line, width)] or [""]


if __name__ == "__main__":
    sys.exit(main())
