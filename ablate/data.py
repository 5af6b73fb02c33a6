"""Where datasets live, and fetching RecBole's atomic files into that place.

A spec names a RecBole dataset (``dataset: ml-1m``) and may say which folder holds it
(``data_path``, the folder *above* ``ml-1m/``, as in RecBole). The folder is found in
this order, so that a spec works from any clone without a path in it:

1. the spec's ``data_path`` (or ``-o data_path=...``), when it holds the dataset;
2. the copy inside the recbole wheel (``recbole/dataset_example``: ml-100k);
3. the data home, when the spec gives no ``data_path``: ``$ABLATE_DATA`` if set, else
   ``$XDG_CACHE_HOME/ablate/data`` (``~/.cache/ablate/data``). Outside the clone, so
   one download serves every clone and every checkout.

``ablate data fetch NAME`` downloads RecBole's own archive of a dataset (the URL in
RecBole's ``properties/dataset/url.yaml``, or ``$ABLATE_DATA_URL_<NAME>``) into the data
home with RecBole's own download code, and a dataset that is missing stops a plan with
one line saying which URL to unzip where. How a dataset is *filtered* (ratings >= 3 for
the NCL paper's ml-1m) stays RecBole's business and the spec's: ``load_col``,
``val_interval`` and ``unused_col`` in its ``base``; on a copy that was filtered before
and has no rating column, the plan leaves the filter out (:func:`drop_applied_filters`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from ablate import catalog
from ablate.errors import AblateError

HOME_ENV = "ABLATE_DATA"
URL_ENV_PREFIX = "ABLATE_DATA_URL_"
BUNDLED = "dataset_example"  # the folder inside the recbole wheel that holds ml-100k/


class DataError(AblateError):
    """A dataset that cannot be found, downloaded or unpacked."""


def home() -> Path:
    """The folder that holds datasets when a spec gives no ``data_path``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser().absolute() / "ablate" / "data"


def home_origin() -> str:
    """How :func:`home` was chosen, for messages and ``ablate data where``."""
    return f"${HOME_ENV}" if os.environ.get(HOME_ENV) else f"default; set ${HOME_ENV} to move it"


def bundled() -> Path:
    """The datasets inside the recbole wheel: usable anywhere, no download."""
    return catalog.recbole_dir() / BUNDLED


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a folder we can use
        return False


def locate(name: str, data_path: str | None) -> Path | None:
    """The folder holding ``name/``, in the order of this module's docstring; None if none does."""
    if data_path:
        if _is_dir(Path(data_path) / name):
            return Path(data_path)
    if _is_dir(bundled() / name):
        return bundled()
    if not data_path and _is_dir(home() / name):
        return home()
    return None


def _url_env(name: str) -> str:
    return URL_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@lru_cache(maxsize=1)
def recbole_urls() -> dict[str, str]:
    """RecBole's own list of downloadable datasets (name -> zip URL), read as a file so
    that planning never imports RecBole."""
    import yaml

    path = catalog.recbole_dir() / "properties" / "dataset" / "url.yaml"
    try:
        return dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return {}


def url_for(name: str) -> str | None:
    """Where ``name`` is downloaded from: ``$ABLATE_DATA_URL_<NAME>`` (``ml-1m`` ->
    ``ABLATE_DATA_URL_ML_1M``; a mirror, or a local ``file://`` copy), else RecBole's URL."""
    return os.environ.get(_url_env(name)) or recbole_urls().get(name)


def _offline_hint(name: str, folder: Path, url: str | None) -> str:
    """What to put where by hand; names RecBole's own URL where a given one failed."""
    target = folder / name
    url = recbole_urls().get(name) or url
    if url is None:
        return (f"RecBole has no download for {name!r}: put its atomic files ({name}.inter, ...) in {target}/ "
                f"or point data_path (-o data_path=FOLDER) or ${HOME_ENV} at the folder that holds {name}/")
    return (f"offline, download {url} yourself and unzip it into {target}/ (so that {target / name}.inter exists), "
            f"or point data_path (-o data_path=FOLDER) or ${HOME_ENV} at a folder that already holds {name}/")


def missing_message(name: str, folder: Path) -> str:
    """One line for a dataset that is not where a plan looked: what to run, or what to
    put where when there is no internet."""
    url = url_for(name)
    text = f"dataset folder not found: {folder / name}"
    if url is None:
        return f"{text}; {_offline_hint(name, folder, url)}"
    where = "" if folder == home() else f" --data-path {folder}"
    return f"{text}; `ablate data fetch {name}{where}` downloads it (or `ablate run --fetch`); {_offline_hint(name, folder, url)}"


def inter_columns(folder: Path, name: str, separator: str = "\t") -> list[str] | None:
    """Field names in the header of ``folder/name/name.inter``; None when it cannot be read."""
    try:
        with open(folder / name / f"{name}.inter", encoding="utf-8") as f:
            head = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return [part.split(":", 1)[0] for part in head.split(separator)] if head else None


def drop_applied_filters(config: dict, folder: Path) -> list[str]:
    """Remove the ``val_interval`` entries on columns that ``<dataset>.inter`` does not have.

    Why: one spec should run on RecBole's download of ml-1m (which has ratings, and the
    spec filters them) and on a copy that was filtered when it was made and written
    without its rating column (such as the NCL-paper ml-1m these machines keep). RecBole
    cannot apply a filter to a column that is not in the file: it stops every run with
    "Field [rating] not defined in dataset". A file without the column is taken as
    filtered already when the spec's ``load_col`` names the column (the spec expects the
    file to have it), and the filter is left out of the run's config, so also out of its
    key: the two copies are different files and their runs are different runs. A filter
    on a column that neither the file nor ``load_col`` has is a mistake (ValueError). The same
    fields leave ``unused_col``, where RecBole would warn about them in every run's log.
    Returns the fields dropped.
    """
    intervals = config.get("val_interval")
    if not isinstance(intervals, dict) or not intervals:
        return []
    sep = config.get("field_separator") or "\t"
    columns = inter_columns(folder, config["dataset"], sep if isinstance(sep, str) else "\t")
    if columns is None:
        return []
    absent = [field for field in intervals if field not in columns]
    loaded = (config.get("load_col") or {}).get("inter") if isinstance(config.get("load_col"), dict) else None
    unknown = [field for field in absent if not (isinstance(loaded, list) and field in loaded)]
    if unknown:  # a field the spec never said the file has: a mistake, not a filtered copy
        raise ValueError(f"val_interval filters on {unknown[0]!r}, which {config['dataset']}.inter does not have "
                         f"(columns: {', '.join(columns)})")
    if absent:
        kept = {k: v for k, v in intervals.items() if k not in absent}
        config["val_interval"] = kept or None
        unused = config.get("unused_col")
        if isinstance(unused, dict) and isinstance(unused.get("inter"), list):  # else a warning in every run log
            inter = [c for c in unused["inter"] if c not in absent]
            rest = {k: v for k, v in unused.items() if k != "inter"}
            config["unused_col"] = ({**rest, "inter": inter} if inter else rest) or None
    return absent


def fetch(name: str, folder: Path | str | None = None, url: str | None = None, force: bool = False) -> tuple[Path, bool]:
    """Download and unpack RecBole's archive of ``name`` into ``folder/name`` (default: the
    data home), the way RecBole's ``Dataset._download`` does (``download_url``,
    ``extract_zip``, ``rename_atomic_files``) but unasked and atomically: the files are
    unpacked in a hidden folder next to the target and moved in whole, so an interrupted
    download never leaves a half dataset that a plan would take for a whole one.

    Returns ``(folder of the dataset, whether it was downloaded now)``.
    """
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise DataError(f"not a dataset name: {name!r}")
    folder = Path(folder).expanduser().absolute() if folder else home()
    target = folder / name
    url = url or url_for(name)
    if url is None:
        raise DataError(f"no download known for dataset {name!r} (not in RecBole's url.yaml; --url or "
                        f"${_url_env(name)} gives one); {_offline_hint(name, folder, None)}")
    if (target / f"{name}.inter").is_file() and not force:
        return target, False
    if target.exists() and not force:  # never delete a folder that someone made by hand
        raise DataError(f"{target} exists but holds no {name}.inter; move it away, or fetch with --force to replace it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    except OSError as err:
        raise DataError(f"cannot write to {folder}: {err.strerror or err}; fetch with --data-path FOLDER "
                        f"or set ${HOME_ENV}") from None
    try:
        _download(name, url, work, folder)
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError as err:
            if (target / f"{name}.inter").is_file():  # a fetch running at the same time was first
                return target, False
            raise DataError(f"cannot move the unpacked files to {target}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, True


def _download(name: str, url: str, work: Path, folder: Path) -> None:
    from recbole.utils.url import download_url, extract_zip, rename_atomic_files

    try:
        archive = download_url(url, str(work))
    except (OSError, RuntimeError, TypeError, ValueError) as err:  # URLError is an OSError
        reason = getattr(err, "reason", None) or err
        raise DataError(f"cannot download {name} from {url} ({reason}); {_offline_hint(name, folder, url)}") from None
    try:
        extract_zip(archive, str(work))
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{url} is not a zip archive of atomic files ({err}); {_offline_hint(name, folder, url)}") from None
    os.unlink(archive)
    rename_atomic_files(str(work), Path(archive).stem, name)  # Amazon_Books.zip holds Amazon_Books.inter
    if not (work / f"{name}.inter").is_file():
        found = ", ".join(sorted(p.name for p in work.iterdir())[:5]) or "nothing"
        raise DataError(f"{url} unpacked to {found}, not {name}.inter at its top level as RecBole's archives are")


def fetch_missing(configs) -> list[Path]:
    """Fetch every dataset these run configs name that is not in their ``data_path`` yet
    (``ablate run --fetch``); returns the folders downloaded."""
    fetched = []
    for name, folder in sorted({(c["dataset"], c["data_path"]) for c in configs}):
        if locate(name, folder) is None:
            fetched.append(fetch(name, folder)[0])
    return fetched


def local_datasets(folder: Path) -> list[tuple[str, list[str] | None]]:
    """``(name, .inter columns)`` of each dataset folder in ``folder``."""
    if not _is_dir(folder):
        return []
    out = []
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not sub.name.startswith(".") and (sub / f"{sub.name}.inter").is_file():
            out.append((sub.name, inter_columns(folder, sub.name)))
    return out
