"""Mine trees with every process of an `accelerate launch` taking a share of the files; launched by tests.

    accelerate launch --multi_gpu --num_processes 2 tests/mine_worker.py OUT_DIR TREE [TREE ...]

Writes OUT_DIR/mined-<rank>.json (what ``mine(..., across_processes=True)`` returned on that rank,
its run time left out) and OUT_DIR/read-<rank>.log (the files that rank read, one a line).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainer.data.mining as mining  # noqa: E402
from trainer.distributed import join_launch, rank  # noqa: E402
from trainer.errors import cli_main  # noqa: E402


def dump(result: mining.MiningResult) -> dict:
    """A mining result as plain data, to compare across processes and runs."""
    report = result.report.to_dict()
    report.pop("seconds")
    return {
        "documents": [[fn.path, fn.start_line, fn.name, fn.code, fn.docstring] for fn in result.documents],
        "pairs": [[p.query, p.function.path, p.function.start_line] for p in result.pairs],
        "report": report,
        "source_of": result.source_of,
    }


def main(argv: list[str] | None = None) -> int:
    out, trees = Path(sys.argv[1]), sys.argv[2:]
    join_launch()
    real = mining.read_source
    read: list[str] = []

    def logged(path, max_bytes):
        read.append(str(path))
        return real(path, max_bytes)

    mining.read_source = logged
    result = mining.mine(trees, across_processes=True)
    (out / f"read-{rank()}.log").write_text("".join(f"{p}\n" for p in read))
    (out / f"mined-{rank()}.json").write_text(json.dumps(dump(result)))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
