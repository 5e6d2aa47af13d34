"""The settings a person changes in the app's Settings tab, kept in one JSON file in the data folder
($CLIPLAB_HOME/settings.json) and read by every front end: the CLI applies them before each command,
the app at start and whenever they are saved.

- `search_mode`: the inference mode for indexing and search ("auto", the fastest safe mode measured for
  this machine and model, or a named mode). A library keeps the mode it was indexed in; the setting
  decides how new libraries (and re-indexed ones) are embedded. Results meant to be reproduced
  (classifications, audits, evaluations) always run in the exact mode.
- `max_image_pixels`: the pixel limit for a photo (Pillow's ~89.5 MP by default, a guard against
  decompression bombs; a JPEG counts at the reduced scale it is decoded at); raise it for trusted very large
  photos. The engine owns it (`engine.images.max_pixels` / `set_max_pixels`, kept in this same file and read
  on every image, so decode workers and a running app follow a change at once; CLIPLAB_MAX_PIXELS wins).
- `app_password`: the login for `cliplab app --listen` (user "cliplab"); CLIPLAB_APP_PASSWORD, when set,
  wins. The file is readable by its owner only (mode 0600) because it may hold this password.

Other modules read the settings through `load()`; only this module and `engine.images.set_max_pixels` write
the file, each keeping the other's keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cliplab.app.services.loading import MODE_NAMES
from cliplab.engine import images
from cliplab.engine.errors import CliplabError
from cliplab.engine.paths import data_dir

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "MODE_NAMES", "Settings", "apply", "load", "save",
           "settings_file", "update"]

SETTINGS_FILE = "settings.json"
DEFAULT_MAX_IMAGE_PIXELS = images.DEFAULT_MAX_PIXELS  # as the engine ships it (Pillow's own default)
MAX_PIXEL_LIMIT = 2_000_000_000  # 2 gigapixels: a header beyond this is a bomb whatever the person trusts
MIN_PASSWORD = 8


@dataclass
class Settings:
    search_mode: str = "auto"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    app_password: str | None = None

    def check(self) -> Settings:
        """The settings, or a sentence naming the one that is wrong."""
        if self.search_mode not in MODE_NAMES:
            raise CliplabError(f"The inference mode {self.search_mode!r} is not one cliplab knows: choose one of "
                               f"{', '.join(MODE_NAMES)}.")
        limit = self.max_image_pixels
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1_000_000 <= limit <= MAX_PIXEL_LIMIT:
            raise CliplabError(f"The pixel limit must be a whole number of pixels between 1 and "
                               f"{MAX_PIXEL_LIMIT // 1_000_000:,} megapixels, not {limit!r}.")
        if self.app_password is not None and len(self.app_password) < MIN_PASSWORD:
            raise CliplabError(f"The app password must have at least {MIN_PASSWORD} characters.")
        return self


def settings_file() -> Path:
    return data_dir() / SETTINGS_FILE


def load() -> Settings:
    """The saved settings (the defaults when none were saved)."""
    path = settings_file()
    if not path.is_file():
        return Settings()
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CliplabError(f"The settings file {path} cannot be read ({type(error).__name__}); fix it, or delete it "
                           "to go back to the defaults.") from None
    if not isinstance(stored, dict):
        raise CliplabError(f"The settings file {path} does not hold settings; delete it to go back to the defaults.")
    known = {f.name for f in fields(Settings)} - {"max_image_pixels"}  # the engine's, read through it
    try:
        return Settings(**{k: v for k, v in stored.items() if k in known}, max_image_pixels=images.max_pixels()).check()
    except CliplabError as error:
        raise CliplabError(f"{error} (in {path}; fix it, or delete the file to go back to the defaults)") from None


def save(settings: Settings) -> Path:
    """Write the settings (checked) atomically, readable by their owner only."""
    settings.check()
    path = settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = settings.max_image_pixels
    images.set_max_pixels(None if limit == DEFAULT_MAX_IMAGE_PIXELS else limit)  # the engine's key in this file
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    stored.update({k: v for k, v in asdict(settings).items() if k != "max_image_pixels"})
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(stored, out, indent=1)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def update(search_mode: str | None = None, pixel_limit_megapixels: float | None = None,
           password: str | None = None, clear_password: bool = False) -> Settings:
    """Change the given settings (None leaves one as it is), save them and return them all."""
    current = load()
    if search_mode is not None:
        current.search_mode = search_mode
    if pixel_limit_megapixels is not None:
        try:
            current.max_image_pixels = round(float(pixel_limit_megapixels) * 1_000_000)
        except (TypeError, ValueError, OverflowError):
            raise CliplabError(f"The pixel limit is a number of megapixels, not {pixel_limit_megapixels!r}.") from None
    if clear_password:
        current.app_password = None
    elif password:
        current.app_password = password
    save(current)
    return current


def apply(state, settings: Settings | None = None) -> Settings:
    """The settings in the running app (state: its AppState): the inference mode of indexing and search
    (the next search or indexing job uses it). The pixel limit needs nothing: the engine reads it per image."""
    settings = settings or load()
    state.set_search_mode(settings.search_mode)
    return settings


def app_password() -> str | None:
    """The login password for --listen the Settings tab saved (CLIPLAB_APP_PASSWORD wins over it)."""
    return load().app_password


def overview() -> dict:
    """What the Settings tab shows beside the fields: where the data lives (not the catalog's URL, which may
    hold a database password), the saved values, and whether a password is saved or the environment's wins."""
    saved = load()
    return {"data_folder": str(data_dir()), "settings_file": str(settings_file()),
            "search_mode": saved.search_mode,
            "pixel_limit_megapixels": saved.max_image_pixels / 1_000_000,
            "password_saved": saved.app_password is not None,
            "password_from_environment": bool(os.environ.get("CLIPLAB_APP_PASSWORD"))}
