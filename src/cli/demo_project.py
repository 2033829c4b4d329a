"""``demo-project``: write a synthetic Supervisely project (rectangles, polygons, bitmaps).

The data every test, benchmark and ``make train`` runs on: no download, the same project from the
same seed.
"""

from __future__ import annotations

import argparse

from src.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: the folder, how many images, their seed and shape."""
    demo = sub.add_parser("demo-project", help="write a synthetic Supervisely project")
    demo.add_argument("dir")
    demo.add_argument("--images", type=int, default=160)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--square", action="store_true", help="square 256 px images (default: photo-like sizes)"
    )
    demo.add_argument(
        "--real-world",
        action="store_true",
        help="the real-world-shaped project: 1080p to 2048 px, portrait, tiny, grayscale, RGBA, "
        "EXIF-rotated JPEGs, nested datasets (--images is ignored)",
    )
    demo.add_argument(
        "--large", action="store_true",
        help="4000x3000 JPEGs with 20 to 40 objects of 12 to 30 px each: for sliced training "
        "(--slice-size); use a few --images",
    )  # fmt: skip
    demo.set_defaults(func=cmd_demo_project)


def cmd_demo_project(args: argparse.Namespace) -> int:
    """Write the project; a folder already there is refused (usage error), never overwritten."""
    from src.data.demo import LARGE_OPTIONS, DemoOptions, make_demo_project, make_real_world_project

    try:
        if args.real_world:
            path = make_real_world_project(args.dir, seed=args.seed)
        elif args.large:
            options = DemoOptions(images=args.images, seed=args.seed, **LARGE_OPTIONS)
            path = make_demo_project(args.dir, options)
        else:
            options = DemoOptions(images=args.images, seed=args.seed, mixed_sizes=not args.square)
            path = make_demo_project(args.dir, options)
    except FileExistsError as exc:
        return fail(str(exc))
    print(f"demo project ready in {path}")
    return 0
