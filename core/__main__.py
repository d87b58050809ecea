"""The command line: `python -m core reproduce --dataset digits [--seeds N] [--eps LIST] [--reliable fast|standard]
[--reliable-eps LIST] [--json PATH]`,
`python -m core datasets`, `python -m core zoo [--dataset D] [--threat T]`, `python -m core cache`,
`python -m core precompute --dataset D [--models NAMES|all] [--zoo NAME ...|all] [--executor local|ray] [--dry-run]`,
`python -m core sweep --dataset D --methods M,... --train-eps E,... --seeds S,... [--students ...] [--json PATH]` and
`python -m core bundle --dataset D --out PATH`.

It calls the same functions as the app's pages. Usage errors exit with status 2 and a message;
errors found while running (missing data, unreadable files) exit with status 1 and a message.
Each subcommand imports the layers it uses when it runs, so `--help` and usage errors answer at once,
without loading torch. The command line sits on top of `core.app`, `core.study` and `core.engine`.
"""

from __future__ import annotations

import sys

from core.cli.args import check_cache_dir
from core.cli.commands import cmd_bundle, cmd_cache, cmd_datasets, cmd_precompute, cmd_reproduce, cmd_sweep, cmd_zoo
from core.cli.parser import build_parser
from core.errors import Cancelled, LogitscopeError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"reproduce": cmd_reproduce, "datasets": cmd_datasets, "zoo": cmd_zoo, "cache": cmd_cache,
               "precompute": cmd_precompute, "sweep": cmd_sweep, "bundle": cmd_bundle}[args.command]
    own = args.subparser  # usage errors print the subcommand's usage, not the top level's
    try:
        if args.command != "datasets":
            check_cache_dir(own)
        return handler(args, own)
    except LogitscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("interrupted: finished models and logits stay in the cache; run again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
