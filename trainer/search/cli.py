"""``python -m trainer.search``: argument parsing, and the one place that prints.

    python -m trainer.search index SRC [SRC ...] --out INDEX [--model default] [--dim 256]
                                    [--precision float32|float16|int8|binary] [--compute auto|bf16|fp32|openvino|openvino-int8]
                                    [--exclude DIR ...]
                                    [--store chroma (--chroma-path DIR | --chroma-url URL)] [--collection NAME]
    python -m trainer.search query INDEX "where do we parse the config?" [-k 5] [--mode dense|lexical|hybrid]
                                    [--lang python ...] [--path-glob 'src/*.py'] [--full | --lines N] [--json]

``query`` exits 0 with hits, 1 when nothing matches (as grep does), 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from trainer.errors import CodetuneError, cli_main
from trainer.search.build import DEFAULT_DIM, build_index
from trainer.search.chroma import check_exportable, export_chroma
from trainer.search.dense import PRECISIONS, check_precision
from trainer.search.output import PREVIEW_LINES, print_hits
from trainer.search.query import DEFAULT_MODE, MODES, check_languages, check_mode, search
from trainer.search.store import load_index


def _parser() -> argparse.ArgumentParser:
    # Choices are checked by the library, not by argparse, so a bad value is one line naming the flag.
    parser = argparse.ArgumentParser(prog="python -m trainer.search", description="Search a codebase with a (tuned) model.")
    sub = parser.add_subparsers(dest="command", required=True)

    idx = sub.add_parser("index", help="index the functions of source trees")
    idx.add_argument("sources", nargs="+", metavar="SRC", help="folders or files to index")
    idx.add_argument("--out", required=True, metavar="INDEX", help="index folder (updated in place if it exists)")
    idx.add_argument("--model", default="default", help="default, a local folder (e.g. a run's model), or a hub name")
    idx.add_argument("--dim", type=int, help=f"Matryoshka dimension (default: {DEFAULT_DIM} or the model's, if less)")
    idx.add_argument("--precision", default="float32", help=f"vector storage: {', '.join(PRECISIONS)} (default: float32)")
    idx.add_argument("--compute", default="auto",
                     help="encoding arithmetic: auto (bf16 where the CPU/GPU has it: 2.6x fp32 on an AVX512-BF16 CPU), bf16, fp32; "
                          "or an OpenVINO graph (the openvino extra): openvino, openvino-int8 (calibrated int8)")
    idx.add_argument("--exclude", action="append", default=[], metavar="DIR", help="folder name to skip (repeatable)")
    idx.add_argument("--max-tokens", type=int, metavar="N",
                     help="cut each function at N tokens (default: the model's max_seq_length; 128 suits the default model)")
    idx.add_argument("--batch-size", type=int, default=64)
    idx.add_argument("--store", help="also write the embeddings into a vector store: chroma")
    idx.add_argument("--chroma-path", help="embedded persistent Chroma folder")
    idx.add_argument("--chroma-url", help="running Chroma server, e.g. http://localhost:8000")
    idx.add_argument("--collection", help="Chroma collection (default: from the INDEX folder name)")

    qry = sub.add_parser("query", help="search an index")
    qry.add_argument("index", metavar="INDEX")
    qry.add_argument("query")
    qry.add_argument("-k", type=int, default=5, help="hits to show (default: 5)")
    qry.add_argument("--mode", default=DEFAULT_MODE, help=f"{', '.join(MODES)} (default: {DEFAULT_MODE})")
    qry.add_argument("--lang", action="append", default=[], help="only this language (repeatable)")
    qry.add_argument("--path-glob", help="only paths matching this glob, e.g. 'src/*.py'")
    qry.add_argument("--full", action="store_true", help="print whole functions instead of a preview")
    qry.add_argument("--lines", type=int, default=PREVIEW_LINES, help=f"preview lines per hit (default: {PREVIEW_LINES})")
    qry.add_argument("--model", help="must be the index's model (default: the one in its manifest)")
    qry.add_argument("--dim", type=int, help="must be the index's dimension (default: the one in its manifest)")
    qry.add_argument("--json", action="store_true", help="print the hits as JSON: [{score, path, line, end_line, name, language, code}]")
    return parser


def _index(args) -> int:
    check_precision(args.precision, args.dim or 8)  # before a model is loaded; the default dim is a multiple of 8
    if args.store not in (None, "chroma"):
        raise CodetuneError(f"--store {args.store}: the one store is chroma")
    if args.store is None and (args.chroma_path or args.chroma_url or args.collection):
        raise CodetuneError("--chroma-path/--chroma-url/--collection: only with --store chroma")
    if args.store == "chroma":
        check_exportable(args.precision)
        if (args.chroma_path is None) == (args.chroma_url is None):
            raise CodetuneError("--store chroma: give exactly one of --chroma-path or --chroma-url")
    stats = build_index(
        args.sources,
        args.out,
        args.model,
        dim=args.dim,
        precision=args.precision,
        exclude_dirs=args.exclude,
        batch_size=args.batch_size,
        compute=args.compute,
        max_tokens=args.max_tokens,
    )
    print(f"{args.out}: {stats.summary()}")
    if args.store == "chroma":
        coll = export_chroma(load_index(args.out), path=args.chroma_path, url=args.chroma_url, collection=args.collection)
        print(f"chroma collection {coll.name}: {coll.count()} snippets")
    return 0


def _query(args, quiet) -> int:
    if args.k < 1:
        raise CodetuneError(f"-k {args.k}: must be at least 1")
    if args.lines < 1:
        raise CodetuneError(f"--lines {args.lines}: must be at least 1")
    check_mode(args.mode)
    check_languages(args.lang)
    with quiet:
        index = load_index(args.index)
        index.check_model(args.model, args.dim)
        model = None
        if args.mode != "lexical":  # BM25 alone needs no model: no seconds spent loading one
            from trainer.models.backends import load_encoder  # here: sentence-transformers and torch, seconds to import

            model = load_encoder(index.model_spec, index.compute, max_seq_length=index.max_tokens)
        hits = search(index, [args.query], model, k=args.k, mode=args.mode, languages=args.lang, path_glob=args.path_glob)[0]
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
    elif hits:
        print_hits(hits, full=args.full, lines=args.lines)
    else:
        print(f"no results for {args.query!r}", file=sys.stderr)
    return 0 if hits else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # --json: stdout is for the JSON alone; libraries print notices there (transformers prints
    # "[INFO] Running in WANDB offline mode" on import), so those go to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext()
    if args.command == "index":
        return _index(args)
    return _query(args, quiet)


if __name__ == "__main__":
    sys.exit(cli_main(main))
