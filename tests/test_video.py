"""Video in the library: frames chosen at cuts and at most every few seconds (engine.video), each one an
embedding row of its video (indexes.video), crash-safe and incremental indexing with bad files recorded,
search returning the time range of a matching scene, the file route's range requests, clips, the CLI.
Every video is made here with PyAV (tests/videos.py): tiny, a few seconds long."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from cli_support import run_cli
from library_fixtures import tiny_bundle, write_image
from sqlalchemy import func, select
from videos import cut_short, scene_images, write_audio_only, write_video

from cliplab.app.services import clips
from cliplab.app.services import search as service
from cliplab.engine import video
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Embedding, File, open_catalog, split_vector_id
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan, skipped

ROOT = Path(__file__).resolve().parents[1]
SCENES = [("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "heart")]


@pytest.fixture(scope="module")
def pictures():
    return scene_images(SCENES)


def times(path: Path, choice: video.FrameChoice = video.FrameChoice()) -> list[float]:
    return [round(f.time, 2) for f in video.chosen_frames(str(path), 32, choice)]


@pytest.mark.parametrize("codec, ext", [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "avi"),
                                        ("mjpeg", "mkv"), ("mpeg2video", "mts"), ("libx264", "mov")])
def test_a_frame_at_each_cut_whatever_the_codec_and_container(tmp_path, pictures, codec, ext):
    red, blue, green, _ = pictures
    path = write_video(tmp_path / f"cuts.{ext}", [(red, 1.0), (blue, 0.5), (green, 0.5), (red, 1.0)], codec=codec)
    assert times(path) == [0.0, 1.0, 1.5, 2.0]  # a fast cut sequence keeps every shot


@pytest.mark.parametrize("codec, ext, reduced", [("mjpeg", "avi", 2), ("mpeg2video", "mts", 2), ("libx264", "mp4", 0)])
def test_decoders_that_can_decode_at_reduced_size_do(tmp_path, pictures, codec, ext, reduced):
    path = write_video(tmp_path / f"big.{ext}", [(pictures[0], 0.5), (pictures[1], 0.5)], codec=codec, size=(256, 192))
    info: list = []
    frames = list(video.chosen_frames(str(path), 48, info_out=info))
    assert (info[0].width, info[0].height, info[0].reduced) == (256, 192, reduced)  # 192/4 = 48: still the model's size
    assert [f.time for f in frames] == [0.0, 0.5] and all(f.image.size == (64, 48) for f in frames)


def test_at_30_fps_frames_no_frame_refers_to_are_not_decoded_and_cuts_are_still_found(tmp_path, pictures):
    red, blue, green, _ = pictures
    path = write_video(tmp_path / "fast.mp4", [(red, 1.0), (blue, 0.5), (green, 1.0)], fps=30)
    assert times(path) == [0.0, 1.0, 1.5]  # the encoder's cut frames are keyframes: never skipped
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        assert sum(1 for _ in container.decode(stream)) < 75  # the file has B-frames that the choice skips


def test_a_static_video_gives_few_frames_and_a_slow_change_one_every_max_interval(tmp_path, pictures):
    still = write_video(tmp_path / "still.mp4", [(pictures[0], 65.0)], fps=2, size=(32, 32))
    assert times(still) == [0.0, 30.0, 60.0]  # nothing moved: the still interval, not one every 4 s
    base = np.asarray(pictures[1], np.int16)
    from PIL import Image
    drift = [(Image.fromarray(np.clip(base + 6 * step, 0, 255).astype(np.uint8)), 0.5) for step in range(20)]
    slow = times(write_video(tmp_path / "drift.mp4", drift, noise=0))  # never a cut, but the picture moves
    assert slow == [0.0, 4.0, 8.0]


def test_rotation_and_capture_time_from_the_container(tmp_path):
    coded = np.zeros((48, 64, 3), np.uint8)
    coded[:, :32] = (255, 0, 0)  # left half red as coded
    from PIL import Image
    path = write_video(tmp_path / "phone.mp4", [(Image.fromarray(coded), 1.0)], rotation=90, noise=0,
                       created="2021-05-01T12:34:56.000000Z")
    info: list = []
    frame = next(video.chosen_frames(str(path), 48, info_out=info))
    assert (info[0].width, info[0].height, info[0].rotation) == (48, 64, 270)
    assert frame.image.size == (48, 64)  # displayed portrait: turned 90 degrees counter-clockwise...
    pixels = np.asarray(frame.image)
    assert pixels[-4, 24, 0] > 200 and pixels[4, 24, 0] < 60  # ...so the coded left half is at the bottom
    from datetime import UTC, datetime
    expected = datetime(2021, 5, 1, 12, 34, 56, tzinfo=UTC).astimezone().replace(tzinfo=None)
    assert info[0].captured_at == expected  # UTC in the container, local time like a photo's EXIF time


def write_library(folder: Path, pictures) -> dict[str, Path]:
    red, blue, green, yellow = pictures
    files = {
        "scenes": write_video(folder / "scenes.mp4", [(red, 2.0), (blue, 2.0), (green, 2.0)], audio=True),
        "other": write_video(folder / "other.webm", [(yellow, 1.0), (green, 1.0)], codec="libvpx-vp9"),
        "photo": write_image(folder / "photo.png", 1),
        "audio": write_audio_only(folder / "audio.m4v"),
        "empty": folder / "empty.mov",
        "corrupt": folder / "corrupt.avi",
    }
    files["empty"].write_bytes(b"")
    files["corrupt"].write_bytes(os.urandom(4000))
    mkv = write_video(folder / "tmp-unknown.mkv", [(red, 1.0)], codec="mpeg4").read_bytes()
    (folder / "tmp-unknown.mkv").unlink()
    files["unknown"] = folder / "unknown.mkv"  # a codec id FFmpeg has no decoder for
    files["unknown"].write_bytes(mkv.replace(b"V_MPEG4/ISO/ASP", b"V_QQQQQ/ISO/ASP"))
    whole = write_video(folder / "whole.mts", [(red, 1.0), (blue, 1.0), (green, 1.0)], codec="mpeg2video")
    files["truncated"] = cut_short(whole, folder / "truncated.mts", 0.6)  # a copy cut midway: what it holds
    whole.unlink()
    return files


def frames_of(catalog, path: Path) -> list[tuple[int, int]]:
    with catalog.session() as session:
        return [tuple(r) for r in session.execute(
            select(Embedding.frame, Embedding.at_ms).join(File, File.id == Embedding.file_id)
            .where(File.path == str(path)).order_by(Embedding.frame))]


def test_videos_are_indexed_frame_by_frame_and_bad_ones_recorded_with_reasons(tmp_path, pictures):
    files = write_library(tmp_path / "lib", pictures)
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    scan(catalog, [tmp_path / "lib"])
    report = index_pending(catalog, tiny_bundle(), workers=0, progress=False, video_time_limit=60)
    assert report.embedded == 4 and report.skipped == 4  # two videos, the photo, what the cut-short video holds
    assert frames_of(catalog, files["scenes"]) == [(0, 0), (1, 2000), (2, 4000)]
    assert frames_of(catalog, files["other"]) == [(0, 0), (1, 1000)]
    assert frames_of(catalog, files["truncated"]) == [(0, 0), (1, 1000)]  # the third scene was cut off
    assert frames_of(catalog, files["photo"]) == [(0, None)]
    with catalog.session() as session:
        row = session.scalar(select(File).where(File.path == str(files["scenes"])))
        assert (row.status, row.duration_ms, row.fps, row.width, row.height) == ("ok", 6000, 10.0, 64, 48)
    reasons = dict(skipped(catalog))
    assert reasons[str(files["audio"])].startswith("no video stream")
    assert reasons[str(files["empty"])].startswith("corrupt")
    assert reasons[str(files["corrupt"])].startswith("corrupt")
    assert reasons[str(files["unknown"])].startswith("unknown codec")
    again = index_pending(catalog, tiny_bundle(), workers=0, progress=False)
    assert again.embedded == again.skipped == 0  # nothing twice


def test_a_video_over_its_time_limit_is_recorded_and_the_run_goes_on(tmp_path, pictures):
    write_video(tmp_path / "lib" / "a.mp4", [(pictures[0], 1.0)])
    write_image(tmp_path / "lib" / "b.png", 2)
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    scan(catalog, [tmp_path / "lib"])
    report = index_pending(catalog, tiny_bundle(), workers=0, progress=False, video_time_limit=0.001)
    assert report.embedded == 1 and report.skipped_paths[0][1].startswith("timed out")


def test_a_moved_video_keeps_its_frames_and_an_edited_one_is_embedded_again(tmp_path, pictures):
    red, blue, green, _ = pictures
    path = write_video(tmp_path / "lib" / "a.mp4", [(red, 1.0), (blue, 1.0)])
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    scan(catalog, [tmp_path / "lib"])
    index_pending(catalog, tiny_bundle(), workers=0, progress=False)
    before = frames_of(catalog, path)
    moved = tmp_path / "lib" / "sub" / "b.mp4"
    moved.parent.mkdir()
    shutil.move(path, moved)
    assert scan(catalog, [tmp_path / "lib"]).moved == [(str(path), str(moved))]
    assert index_pending(catalog, tiny_bundle(), workers=0, progress=False).embedded == 0
    assert frames_of(catalog, moved) == before
    write_video(moved, [(green, 1.0), (red, 0.5), (blue, 0.5)])  # replaced by another video
    assert scan(catalog, [tmp_path / "lib"]).changed == [str(moved)]
    assert index_pending(catalog, tiny_bundle(), workers=0, progress=False).embedded == 1
    assert frames_of(catalog, moved) == [(0, 0), (1, 1000), (2, 1500)]


@pytest.fixture(scope="module")
def demo_library(tmp_path_factory, pictures):
    """The demo model over a folder with the scenes video, a second video and a few photos."""
    from cliplab.engine.handle import ModelBundle
    root = tmp_path_factory.mktemp("videolib")
    folder = root / "lib"
    red, blue, green, yellow = pictures
    write_video(folder / "scenes.mp4", [(red, 2.0), (blue, 2.0), (green, 2.0)], size=(96, 72))
    write_video(folder / "clips" / "other.mkv", [(yellow, 1.5), (green, 1.5)], codec="mpeg4", size=(96, 72))
    for n, picture in enumerate(pictures):
        picture.save(folder / f"photo{n}.png")
    url = f"sqlite:///{root / 'c.db'}"
    catalog = open_catalog(url)
    scan(catalog, [folder])
    bundle = ModelBundle.load("demo")
    index_pending(catalog, bundle, workers=0, progress=False)
    yield catalog, bundle, folder, url
    catalog.close()


def test_a_query_matching_a_scene_returns_the_range_that_contains_it(demo_library):
    catalog, bundle, folder, _url = demo_library
    view = service.search(catalog, bundle, [service.text_term("a blue square")], per_page=10,
                          filters=service.make_filters(types=["mp4"]))
    assert [r.path for r in view.results] == [str(folder / "scenes.mp4")]  # once, however many frames match
    best = view.results[0].ranges[0]
    assert best.start <= 2.0 + 0.25 and best.end >= 4.0 - 0.25 and best.end <= 6.0  # the blue scene: 2-4 s
    assert best.score == pytest.approx(view.results[0].score)
    everything = service.search(catalog, bundle, [service.text_term("a blue square")], per_page=10)
    paths = [r.path for r in everything.results]
    assert len(paths) == len(set(paths)) == everything.total == 6  # 2 videos + 4 photos, each once



def test_a_saved_classifier_labels_every_frame_and_a_video_is_found_by_its_frames_label(demo_library):
    """Labels are kept per embedding row: each frame of a video is labelled (equal to a direct computation on
    its stored vector), a label filter finds the video by the frame that carries it, a frame's tile is drawn
    at its time, and a person's correction of one frame is stored for that frame."""
    from cliplab.app.services import classifiers, labels, serving
    from cliplab.indexes import labels as store
    from cliplab.indexes.catalog import from_blobs, vector_id
    catalog, bundle, folder, _url = demo_library
    classes = ["a red circle", "a blue square", "a green star", "a yellow triangle"]
    classifiers.save_classifier(catalog, "scenes", classes, ["a picture of {}."])
    applied = labels.apply(catalog, bundle, "scenes")
    model_id = bundle.register(catalog)
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.frame, Embedding.vector)
                               .where(Embedding.model_id == model_id)).all()
    assert applied.total == len(rows) > 6  # every frame its own row, beside the photos
    classifier = labels.library_classifier(catalog, bundle, "scenes")
    vectors = from_blobs([r[2] for r in rows], classifier.weights.shape[1])
    logits = classifier.scale * vectors @ classifier.weights.T
    expected = {vector_id(r[0], r[1]): classes[int(i)] for r, i in zip(rows, logits.argmax(1))}
    found = store.labels_of(catalog, "scenes", model_id, list(expected))
    assert {item: found[item].top[0][0] for item in expected} == expected
    scenes = [item for item, (f, n) in ((i, split_vector_id(i)) for i in expected) if n > 0]
    assert scenes  # frames beyond the first carry labels of their own
    blue = [i for i in expected if expected[i] == "a blue square" and split_vector_id(i)[1] > 0]
    assert blue  # the blue scene (2-4 s) of scenes.mp4
    view = service.search(catalog, bundle, [service.text_term("a photo")], per_page=20,  # found by that frame's label
                          filters=service.make_filters(classifier="scenes", label="a blue square",
                                                       min_probability=0.0, catalog=catalog))
    assert str(folder / "scenes.mp4") in [r.path for r in view.results]
    frame = scenes[0]
    assert dict(serving.thumbnails(catalog, [frame]))[frame] is not None  # drawn from the video at its time
    example = labels.label_photo(catalog, bundle, "scenes", frame, "a green star", "tester")
    assert example.file_id == frame and example.label == "a green star"
    assert [e.file_id for e in labels.examples(catalog, bundle, "scenes")] == [frame]


def test_cut_off_negatives_and_more_like_this_frame(demo_library):
    catalog, bundle, folder, _url = demo_library
    view = service.search(catalog, bundle, [service.text_term("a green star")], cutoff=0.5, per_page=10)
    for result in view.results:
        assert all(r.score >= view.threshold for r in result.ranges)
    scenes = next(r for r in view.results if r.path.endswith("scenes.mp4"))
    frame = scenes.ranges[0].frame_id
    file_id, number = split_vector_id(frame)
    assert file_id == scenes.file_id and number >= 1  # the green scene is not the first frame
    like = service.search(catalog, bundle, [service.file_term(frame)], per_page=10)
    assert scenes.file_id not in [r.file_id for r in like.results]  # more like this frame, not itself
    assert like.results[0].path.endswith("photo2.png")  # the green star photo, then the other video's green star
    other = next(r for r in like.results if r.path.endswith("other.mkv"))
    assert other.ranges[0].start >= 1.25
    pushed = service.search(catalog, bundle, [service.text_term("a green star"),
                                              service.text_term("a green star", sign=-1, weight=0.5)], per_page=10)
    assert [r.path for r in pushed.results][:1] == [r.path for r in view.results][:1]


def test_cli_prints_ranges_and_clip_cuts_one(demo_library, tmp_path, capsys, monkeypatch):
    catalog, bundle, folder, url = demo_library
    monkeypatch.setenv("CLIPLAB_DATABASE_URL", url)
    code, out, _err = run_cli(capsys, "search", "a blue square", "--type", "mp4", modules=["library"])
    assert code == 0
    line = next(line for line in out.splitlines() if "00:00:0" in line)
    assert line.strip().startswith(f"{folder / 'scenes.mp4'}  00:00:02-00:00:04  0.")
    target = tmp_path / "moment.mp4"
    code, said, _err = run_cli(capsys, "clip", line.strip(), target, modules=["clip"])
    assert code == 0 and "stream-copied" in said
    with av.open(str(target)) as clip:
        assert 1.9 <= float(clip.duration / 1e6) <= 4.1  # from the keyframe at or before 2 s, up to 4 s
    precise = clips.export_clip(catalog, clips.parse_moment(f"{folder / 'scenes.mp4'}:00:00:02.5-00:00:03.5"),
                                tmp_path / "precise.mp4", precise=True)
    assert not precise.copied and precise.start == 2.5
    with av.open(precise.path) as clip:
        assert clip.streams.video[0].frames == 10  # exactly 1 s at 10 fps
    with pytest.raises(CliplabError, match="not a video of the library"):
        clips.export_clip(catalog, clips.parse_moment("/elsewhere.mp4:00:00:01-00:00:02"), tmp_path / "x.mp4")
    with pytest.raises(CliplabError, match="not a search result"):
        clips.parse_moment("scenes.mp4")


def test_the_file_route_serves_a_video_with_range_requests(demo_library):
    from test_serving import routes_client
    catalog, _bundle, folder, _url = demo_library
    client, _app = routes_client(catalog)
    with catalog.session() as session:
        file_id = session.scalar(select(File.id).where(File.path == str(folder / "scenes.mp4")))
    size = (folder / "scenes.mp4").stat().st_size
    whole = client.get(f"/photo/{file_id}")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/photo/{file_id}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == (folder / "scenes.mp4").read_bytes()[100:200]
    thumb = client.get(f"/thumb/{file_id}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    from PIL import Image

    from cliplab.app.services import serving
    poster = np.asarray(Image.open(serving.thumbnail(catalog, file_id, 160)), np.float32).mean(axis=(0, 1))
    moment = np.asarray(Image.open(serving.thumbnail(catalog, file_id, 160, at=3.0)), np.float32).mean(axis=(0, 1))
    assert not np.allclose(poster, moment, atol=8)  # a result shows its matching moment (the blue scene), not frame 0
    blue = np.asarray(Image.open(serving.thumbnail(catalog, file_id, 160, at=2.0)), np.float32).mean(axis=(0, 1))
    assert np.allclose(blue, moment, atol=8)  # the same scene at 2.0 s and 3.0 s


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, "tests")
from library_fixtures import tiny_bundle
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.indexer import index_pending
def main():
    catalog = open_catalog(sys.argv[1])
    def on_batch(n, report):
        print(f"committed {n}", flush=True)
    index_pending(catalog, tiny_bundle(), batch_size=2, workers=0, progress=False, on_batch=on_batch)
    print("finished", flush=True)
if __name__ == "__main__":
    main()
"""


@pytest.mark.slow  # a real subprocess killed mid-run: ~10 s on 2 cores
def test_kill_9_mid_video_loses_nothing_and_embeds_no_frame_twice(tmp_path, pictures):
    red, blue, green, yellow = pictures
    for n in range(4):
        write_video(tmp_path / "lib" / f"v{n}.mp4", [(red, 0.5), (blue, 0.5), (green, 0.5), (yellow, 0.5)] * 2,
                    seed=n)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    catalog = open_catalog(url)
    scan(catalog, [tmp_path / "lib"])
    (tmp_path / "run.py").write_text(KILL_SCRIPT)
    process = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), url], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))})
    for line in process.stdout:
        if line.startswith("committed 1"):
            os.kill(process.pid, signal.SIGKILL)  # while the second video's frames are being embedded
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL

    def per_video():
        with catalog.session() as session:
            return dict(session.execute(select(Embedding.file_id, func.count()).group_by(Embedding.file_id)).all())

    assert set(per_video().values()) <= {8}  # each video whole or not at all
    index_pending(catalog, tiny_bundle(), workers=0, progress=False)
    counts = per_video()
    assert len(counts) == 4 and set(counts.values()) == {8}
    with catalog.session() as session:  # no (file, frame) twice: the key forbids it, and every frame is there
        assert session.scalar(select(func.count()).select_from(Embedding)) == 32


def test_migration_0013_keeps_every_embedding_as_frame_0_and_back(tmp_path):
    import sqlalchemy as sa
    from alembic import command

    from cliplab.indexes.migrations import config, upgrade
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    upgrade(engine, "0007")  # a library from before videos
    with engine.begin() as connection:
        run = lambda sql, **values: connection.execute(sa.text(sql), values)  # noqa: E731
        run("INSERT INTO folders (id, path, volume, online) VALUES (1, '/p', '/', 1)")
        for n in (1, 2):
            run(f"INSERT INTO files (id, folder_id, path, ext, size, mtime_ns, fingerprint, status) "
                f"VALUES ({n}, 1, '/p/{n}.mp4', 'mp4', 10, 0, :fp, 'ok')", fp=f"{n}" * 32)
        run("INSERT INTO models (id, name, fingerprint, embed_dim, version) VALUES (1, 'tiny', 'm1', 2, 1)")
        run("INSERT INTO embeddings (file_id, model_id, vector, version) VALUES (1, 1, :v, 1)", v=b"\1" * 8)
    engine.dispose()
    catalog = open_catalog(url)
    with catalog.session() as session:
        assert session.execute(select(Embedding.file_id, Embedding.frame, Embedding.at_ms, Embedding.vector)).all() \
            == [(1, 0, None, b"\1" * 8)]
        session.add_all([Embedding(file_id=2, model_id=1, frame=n, at_ms=1000 * n, vector=b"\2" * 8, version=2)
                         for n in range(3)])
        session.commit()
    with catalog.engine.begin() as connection:
        cfg = config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0007")
        rows = connection.execute(sa.text("SELECT file_id, vector FROM embeddings ORDER BY file_id")).all()
    assert rows == [(1, b"\1" * 8), (2, b"\2" * 8)]  # a video keeps its first frame, the others cannot be kept
    catalog.close()
