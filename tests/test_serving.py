"""What the app serves: indexed photos and thumbnails by catalog id, nothing else of a library folder;
the photo routes' answers (with and without a login); the login beyond loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from library_fixtures import write_image
from PIL import Image

from cliplab.app.services import serving
from cliplab.app.services.app_state import AppState
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import File, open_catalog
from cliplab.indexes.scan import scan


@pytest.fixture
def library(tmp_path):
    """A catalog with one folder: two images marked indexed, a broken one skipped, a .secret and a notes.txt."""
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a.png", 1, size=(800, 600))
    write_image(folder / "b.jpg", 2)
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / ".secret").write_text("token")
    (folder / "notes.txt").write_text("private")
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    scan(catalog, [str(folder)])
    with catalog.session() as session, session.begin():
        for row in session.query(File):
            row.status = "skipped" if row.path.endswith("broken.jpg") else "ok"
    with catalog.session() as session:
        ids = {os.path.basename(r.path): r.id for r in session.query(File)}
    yield catalog, folder, ids
    catalog.engine.dispose()


def test_indexed_photo_by_id_and_nothing_else(library):
    catalog, folder, ids = library
    assert set(ids) == {"a.png", "b.jpg", "broken.jpg"}  # hidden files and non-images never reach the catalog
    photo = serving.indexed_photo(catalog, ids["a.png"])
    assert photo.path == (folder / "a.png").resolve() and photo.media_type == "image/png"
    for bad in (ids["broken.jpg"], 999999, "abc", None, -1):
        with pytest.raises(serving.NotServable):
            serving.indexed_photo(catalog, bad)


def test_a_photo_replaced_by_a_symlink_out_of_its_folder_is_refused(library, tmp_path):
    catalog, folder, ids = library
    outside = tmp_path / "elsewhere.png"
    write_image(outside, 3)
    (folder / "b.jpg").unlink()
    (folder / "b.jpg").symlink_to(outside)
    with pytest.raises(serving.NotServable, match="no longer in its library folder"):
        serving.indexed_photo(catalog, ids["b.jpg"])
    (folder / "a.png").unlink()  # gone from disk
    with pytest.raises(serving.NotServable):
        serving.indexed_photo(catalog, ids["a.png"])


def test_thumbnails_are_small_cached_jpegs_in_the_apps_own_folder(library):
    catalog, _folder, ids = library
    path = serving.thumbnail(catalog, ids["a.png"])
    assert path.parent == serving.thumbnails_dir()
    with Image.open(path) as image:
        assert image.format == "JPEG" and max(image.size) == serving.THUMBNAIL_SIZE
        assert image.size[0] / image.size[1] == pytest.approx(800 / 600, rel=0.01)
    modified = path.stat().st_mtime_ns
    assert serving.thumbnail(catalog, ids["a.png"]) == path and path.stat().st_mtime_ns == modified  # made once
    with pytest.raises(serving.NotServable):
        serving.thumbnail(catalog, ids["a.png"], size=4000)  # sizes are the app's, not the request's
    pairs = serving.thumbnails(catalog, [ids["b.jpg"], ids["broken.jpg"]])
    assert pairs[0][1] is not None and pairs[1] == (ids["broken.jpg"], None)


def test_forgotten_thumbnails_of_removed_files(library):
    catalog, _folder, ids = library
    kept = serving.thumbnail(catalog, ids["a.png"])
    gone = serving.thumbnail(catalog, ids["b.jpg"])
    with catalog.session() as session, session.begin():
        session.delete(session.get(File, ids["b.jpg"]))
    assert serving.forget_thumbnails(catalog) == 1
    assert kept.is_file() and not gone.exists()


def test_library_file_only_inside_a_library_folder(library, tmp_path):
    catalog, folder, _ids = library
    (folder / "captions.csv").write_text("image,caption\na.png,a picture\n")
    assert serving.library_file(catalog, folder / "captions.csv") == (folder / "captions.csv").resolve()
    for outside in ("/etc/passwd", str(folder / ".." / "catalog.db"), str(tmp_path)):
        with pytest.raises(CliplabError, match="not inside one of your library folders"):
            serving.library_file(catalog, outside)
    (folder / "escape.csv").symlink_to("/etc/passwd")
    with pytest.raises(CliplabError, match="not inside"):
        serving.library_file(catalog, folder / "escape.csv")
    with pytest.raises(CliplabError, match="does not exist"):
        serving.library_file(catalog, folder / "missing.csv")


def routes_client(catalog, login: bool = False) -> tuple[TestClient, FastAPI]:
    from cliplab.app.gradio_app import add_photo_routes
    app = FastAPI()
    app.auth, app.auth_dependency = (("cliplab", "secret-password"), None) if login else (None, None)
    app.cookie_id, app.tokens = "cookie", {"good-token": "cliplab"}
    add_photo_routes(app, AppState(catalog=catalog, bundle=None))
    return TestClient(app), app


def test_photo_routes_answer_by_id(library):
    catalog, folder, ids = library
    client, _ = routes_client(catalog)
    answer = client.get(f"/photo/{ids['a.png']}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content == (folder / "a.png").read_bytes()
    thumb = client.get(f"/thumb/{ids['a.png']}?size={serving.HOVER_SIZE}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    for bad in (str(ids["broken.jpg"]), "999999", "abc", "1.0", "-1", "%2E%2E%2Fetc%2Fpasswd"):
        assert client.get(f"/photo/{bad}").status_code == 404, bad
        assert client.get(f"/thumb/{bad}").status_code == 404, bad
    assert client.get(f"/thumb/{ids['a.png']}?size=5000").status_code == 404
    assert client.get("/photo/../../etc/passwd").status_code == 404


def test_photo_routes_take_only_ascii_digits_in_range(library):
    """`²`, full-width and Arabic-Indic digits pass str.isdigit() and int(); 10**23 overflows SQLite:
    each is a 404 with a sentence, never a 500 nor another photo."""
    catalog, _folder, ids = library
    client, _ = routes_client(catalog)
    client = TestClient(client.app, raise_server_exceptions=False)
    number = ids["a.png"]
    for bad in ("99999999999999999999999", str(2**63), "²", "\uff11", "\u0661", "\u09e7", f"{number}\u00b2", "0",
                "-0", "+1", " 1", "1e3"):
        for route in ("photo", "thumb"):
            answer = client.get(f"/{route}/{bad}")
            assert answer.status_code == 404, (route, bad, answer.status_code)
    assert client.get(f"/photo/{number}").status_code == 200
    assert serving.photo_id(str(2**63 - 1)) == 2**63 - 1
    for bad in (True, 1.0, "\uff11", 0, 2**63):
        with pytest.raises(serving.NotServable):
            serving.photo_id(bad)


def test_a_photo_whose_name_is_not_utf8_is_served_from_its_stored_bytes(tmp_path):
    """The catalog shows `caf\\xe9.jpg` readably; the file is opened by the bytes it was found under."""
    folder = tmp_path / "photos"
    folder.mkdir()
    image = write_image(folder / "plain.jpg", 1, size=(300, 200)).read_bytes()
    raw = os.fsencode(folder) + b"/caf\xe9.jpg"
    with open(raw, "wb") as out:
        out.write(image)
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    scan(catalog, [str(folder)])
    with catalog.session() as session, session.begin():
        for row in session.query(File):
            row.status = "ok"
        odd = next(r for r in session.query(File) if r.raw_path is not None)
        odd_id, shown = odd.id, odd.path
    assert shown.endswith("caf\\xe9.jpg")
    assert serving.indexed_photo(catalog, odd_id).path == Path(os.path.realpath(os.fsdecode(raw)))
    client, _ = routes_client(catalog)
    answer = client.get(f"/photo/{odd_id}")
    assert answer.status_code == 200 and answer.content == image
    assert client.get(f"/thumb/{odd_id}").status_code == 200
    catalog.engine.dispose()


def test_photo_routes_need_the_login_when_there_is_one(library):
    catalog, _folder, ids = library
    client, app = routes_client(catalog, login=True)
    assert client.get(f"/photo/{ids['a.png']}").status_code == 401
    assert client.get(f"/thumb/{ids['a.png']}").status_code == 401
    client.cookies.set("access-token-cookie", "bad-token")
    assert client.get(f"/photo/{ids['a.png']}").status_code == 401
    client.cookies.set("access-token-cookie", "good-token")
    assert client.get(f"/photo/{ids['a.png']}").status_code == 200


def test_login_beyond_loopback(monkeypatch):
    from cliplab.app.gradio_app import PASSWORD_VARIABLE, exposure_note, login_for
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    assert login_for("127.0.0.1") is None
    made = login_for("0.0.0.0")
    assert made.generated and len(made.password) >= 12 and made.password != login_for("0.0.0.0").password
    note = exposure_note("0.0.0.0", 7860, made)
    assert made.password in note and "add or remove library folders" in note
    monkeypatch.setenv(PASSWORD_VARIABLE, "correct horse battery")
    chosen = login_for("192.168.1.5")
    assert chosen.password == "correct horse battery" and not chosen.generated
    assert "correct horse" not in exposure_note("192.168.1.5", None, chosen)  # a chosen password is not printed
    monkeypatch.setenv(PASSWORD_VARIABLE, "short")
    with pytest.raises(CliplabError, match="at least 8 characters"):
        login_for("0.0.0.0")


def test_the_server_is_given_no_library_folder(library):
    """Gradio's own file route serves allowed_paths: the running app gives it the thumbnail cache only,
    keeps its uploads and results in a folder under the data directory, and answers photo/ by id."""
    from browser_fixtures import free_port
    from library_fixtures import tiny_bundle

    from cliplab.app.gradio_app import launch
    catalog, folder, ids = library
    state = AppState(catalog=catalog, bundle=tiny_bundle())
    demo, url = launch(state, port=free_port(), block=False)
    try:
        assert demo.allowed_paths == [str(serving.thumbnails_dir())]
        assert os.environ["GRADIO_TEMP_DIR"].endswith(os.path.join("cache", "gradio"))
        client = TestClient(demo.server_app, base_url="http://127.0.0.1")  # a loopback name (app.services.access)
        for name in ("a.png", ".secret", "notes.txt"):
            assert client.get(f"/gradio_api/file={folder / name}").status_code == 403, name
        assert client.get(f"/photo/{ids['a.png']}").status_code == 200
    finally:
        demo.close()
