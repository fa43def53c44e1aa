"""The ``latentmap`` command: encode | reduce | serve | list.

Errors a user can act on print one line (``latentmap: error: ...``) and exit 2; never a
traceback (``--debug`` shows one for unexpected failures).
"""

from __future__ import annotations

import argparse
import logging
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

    s = sub.add_parser("serve", help="start the web app")
    s.add_argument("dataset", nargs="?", help="dataset id or name to open first")
    s.add_argument(
        "--demo", action="store_true", help="build (first time) and open the digits demo"
    )
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8050)")

    sub.add_parser("list", help="list cached datasets and derived results")

    x = sub.add_parser(
        "export",
        help="write a dataset as seed-002 .npz, CSV/parquet, or TensorBoard projector TSV",
    )
    x.add_argument("dataset", help="dataset id or name")
    x.add_argument("--format", required=True, choices=["npz", "csv", "parquet", "tensorboard"])
    x.add_argument(
        "--out", required=True, help="output file (npz/csv/parquet) or folder (tensorboard)"
    )
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
            "serve": cmd_serve,
            "list": cmd_list,
            "export": cmd_export,
            "report": cmd_report,
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
    )
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
    print(result.ds_id)
    return 0


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


def cmd_serve(args) -> int:
    from latentmap.settings import Settings

    settings = _settings(args, host=args.host, port=args.port)
    store = settings.store()
    ds = None
    if args.dataset:
        ds = _resolve_dataset(store, args.dataset)
    elif args.demo or not store.list_datasets(include_incomplete=False):
        ds = build_demo(store)
    settings = Settings.from_env(
        cache_dir=settings.cache_dir,
        host=settings.host,
        port=settings.port,
        dataset=ds,
        debug=settings.debug or None,
    )
    from latentmap.app import create_app

    app = create_app(settings)
    print(f"latentmap: serving on http://{settings.host}:{settings.port}/", file=sys.stderr)
    app.run(host=settings.host, port=settings.port, debug=settings.debug)
    return 0


def build_demo(store) -> str:
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
    if args.format == "npz":
        path = exports.export_npz(store, ds, layer, out)
    elif args.format == "tensorboard":
        path, _ = exports.export_tensorboard(store, ds, layer, out)
        path = path.parent
    else:
        coords = None
        if args.method:
            from latentmap.pipeline.reduce import projection

            coords = projection(store, ds, layer, args.method)["coords"]
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


if __name__ == "__main__":
    sys.exit(main())
