"""`cliplab clip RESULT OUT.mp4`: cut a video search result's moment into a file of its own.

    cliplab search "a dog jumps into the lake"
    cliplab clip '/videos/lake.mp4  00:01:23-00:01:31' lake-jump.mp4
    cliplab clip @12:00:01:23-00:01:31 lake-jump.mp4 --precise
"""

from __future__ import annotations

import argparse

from cliplab.app.services import clips
from cliplab.app.services.library import open_catalog, printable


def clip_main(args: argparse.Namespace) -> int:
    moment = clips.parse_moment(args.result)
    catalog = open_catalog()
    try:
        clip = clips.export_clip(catalog, moment, args.output, precise=args.precise)
    finally:
        catalog.close()
    how = "re-encoded from the exact start" if not clip.copied else "stream-copied from the keyframe at or before the start"
    print(f"wrote {printable(clip.path)}: {clip.start:.2f}-{clip.end:.2f} s of {printable(moment.what)} ({how})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("clip", help="cut a video search result's time range into a file",
                              description="RESULT: a range line as `cliplab search` prints it ('PATH  00:01:23-00:01:31  "
                                          "SCORE'), or PATH:00:01:23-00:01:31, or @ID:00:01:23-00:01:31.")
    p.add_argument("result", help="the video and its range (see above)")
    p.add_argument("output", help="the clip to write (.mp4, .mkv, .mov, .webm)")
    p.add_argument("--precise", action="store_true",
                   help="re-encode the video so the clip starts exactly at the range's start (no sound); by default "
                        "the streams are copied from the keyframe at or before it")
    p.set_defaults(func=clip_main)
