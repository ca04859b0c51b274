"""Where a run's files live: a local path, or a `gs://` URL.

A workdir (Orbax checkpoints, TensorBoard, results.json, exports) and the
pre-training data directories may be `gs://BUCKET/...` URLs. The libraries
made for it do the work:

  * Orbax writes and reads checkpoints through tensorstore's GCS driver
    (arrays) and etils' `epath` (directories, JSON items);
  * `epath`, and this module's listing, copies and uploads, go through
    `gcsfs` (fsspec). `epath` would pick TensorFlow's `tf.io.gfile` when
    TensorFlow is installed, which cannot be pointed at an emulator;
    `configure` sets `EPATH_USE_TF=false` so that production and the tests
    use the same client;
  * TensorBoard event files go through tensorboardX's own GCS writer
    (google-cloud-storage).

`STORAGE_EMULATOR_HOST` (what Google's client libraries read: gcsfs,
google-cloud-storage) redirects all of it to a GCS emulator such as
fake-gcs-server: `configure` hands the same address to tensorstore
(`TENSORSTORE_GCS_HTTP_URL`) and turns off gcsfs's bucket-layout probe
(a control-plane API that emulators do not serve).

ArrayRecord, which the input pipeline reads by random access, opens local
files only, and one request per record over the network would be far too
slow (see the README's measurement): `cached_copy` downloads a data
directory once to a local cache (`$BERT_JAX_CACHE_DIR`, default
`~/.cache/bert_jax`), verified by each object's size and generation, and
the pipeline reads that. Libraries that write only to local paths
(transformers' `save_pretrained`, the predictions writers) write into a
`Staging` directory that is uploaded to the workdir afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

SCHEME = "gs://"
_CACHE_INDEX = ".bert_jax_cache.json"
_lock = threading.Lock()


def is_remote(path: str | os.PathLike | None) -> bool:
  return bool(path) and os.fspath(path).startswith(SCHEME)


def configure() -> None:
  """Points every GCS client at the same place.

  Sets defaults only (a variable already in the environment wins); called
  before every use of a gs:// path, so it follows STORAGE_EMULATOR_HOST
  as it is then. (gcsfs reads its own variable when first imported.)
  """
  with _lock:
    if "EPATH_USE_TF" not in os.environ:
      os.environ["EPATH_USE_TF"] = "false"
      # epath caches whether to use TensorFlow at its first use of any
      # path (a local one, say, earlier in this process): ask again.
      gpath = sys.modules.get("etils.epath.gpath")
      if gpath is not None and hasattr(gpath, "_is_tf_installed"):
        gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if emulator:
      if "://" not in emulator:
        emulator = "http://" + emulator
      os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator.rstrip("/"))
      os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def filesystem():
  """The gcsfs filesystem (after `configure`)."""
  configure()
  import gcsfs  # pylint: disable=g-import-not-at-top
  return gcsfs.GCSFileSystem()


def abspath(path: str) -> str:
  """A local path made absolute; a gs:// URL as it is (and `configure`d)."""
  if is_remote(path):
    configure()
    return path.rstrip("/")
  return os.path.abspath(path)


def exists(path: str) -> bool:
  """Whether `path` exists now (a URL is asked again, not from gcsfs's
  listing cache: another process may have just written it)."""
  if is_remote(path):
    fs = filesystem()
    fs.invalidate_cache(path.rstrip("/"))
    return fs.exists(path)
  return os.path.exists(path)


def makedirs(path: str) -> None:
  """A local directory (GCS has no directories: nothing to make)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def write_text(path: str, text: str) -> None:
  """Writes a file whole. Locally through a rename, so never half-written;
  a GCS object only appears once its upload completes."""
  if is_remote(path):
    filesystem().pipe_file(path, text.encode())
    return
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def read_text(path: str) -> str:
  if is_remote(path):
    return filesystem().cat_file(path).decode()
  with open(path) as f:
    return f.read()


def remove(path: str) -> None:
  if is_remote(path):
    filesystem().rm_file(path)
  else:
    os.remove(path)


def copy_file(src: str, dst: str) -> None:
  """A local file to a local path or a gs:// URL."""
  if is_remote(dst):
    filesystem().put_file(src, dst)
  else:
    shutil.copy(src, dst)


def upload_tree(local_dir: str, url: str) -> None:
  """Every file under `local_dir` to the same relative names under `url`."""
  fs = filesystem()
  pairs = [(os.path.join(root, name),
            f"{url.rstrip('/')}/{os.path.relpath(os.path.join(root, name), local_dir)}")
           for root, _, files in os.walk(local_dir) for name in files]
  if pairs:
    fs.put([p for p, _ in pairs], [u for _, u in pairs])


def cache_root() -> str:
  return os.environ.get("BERT_JAX_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "bert_jax")


def cached_copy(url: str, cache_dir: str | None = None,
                skip: Callable[[str], bool] | None = None) -> str:
  """A local copy of the directory `url`, downloaded once; its path.

  `skip(relative_name)` leaves objects out of the copy. An object is fetched again only when its size or generation changed (a
  rewritten object has a new generation); local files the directory no
  longer holds are removed. Each file is written under a temporary name
  and renamed, so an interrupted download never leaves a file that looks
  complete.
  """
  fs = filesystem()
  url = url.rstrip("/")
  local = cache_dir or os.path.join(cache_root(), "gcs", url[len(SCHEME):])
  os.makedirs(local, exist_ok=True)
  listing = fs.find(url, detail=True)
  if not listing:
    raise FileNotFoundError(f"{url}: no such directory (no objects under it)")
  prefix = url[len(SCHEME):] + "/"
  remote = {info["name"][len(prefix):]: _identity(info)
            for info in listing.values() if info["type"] == "file"}
  if skip is not None:
    remote = {rel: ident for rel, ident in remote.items() if not skip(rel)}
  index_path = os.path.join(local, _CACHE_INDEX)
  try:
    with open(index_path) as f:
      have = json.load(f)
  except (FileNotFoundError, ValueError):
    have = {}
  todo = [rel for rel, ident in remote.items()
          if have.get(rel) != ident
          or not os.path.exists(os.path.join(local, rel))]
  for rel in set(have) - set(remote):
    try:
      os.remove(os.path.join(local, rel))
    except FileNotFoundError:
      pass
  if todo:
    tmp = [os.path.join(local, f"{rel}.part.{os.getpid()}") for rel in todo]
    for t in tmp:
      os.makedirs(os.path.dirname(t), exist_ok=True)
    fs.get([f"{SCHEME}{prefix}{rel}" for rel in todo], tmp)
    for rel, t in zip(todo, tmp):
      os.replace(t, os.path.join(local, rel))
  write_text(index_path, json.dumps(remote, indent=1, sort_keys=True))
  return local


def glob_files(pattern: str) -> list[str]:
  """The files (not directories) a gs:// glob matches, as URLs, sorted."""
  fs = filesystem()
  fs.invalidate_cache()
  return sorted(SCHEME + p for p in fs.glob(pattern.rstrip("/"))
                if fs.isfile(SCHEME + p))


def local_files(paths: list[str]) -> list[str]:
  """`paths` with each gs:// file replaced by a verified local copy (one
  cached_copy per directory, holding just the files asked for there)."""
  wanted: dict[str, set[str]] = {}
  for p in paths:
    if is_remote(p):
      parent, name = p.rstrip("/").rsplit("/", 1)
      wanted.setdefault(parent, set()).add(name)
  local = {parent: cached_copy(parent, skip=lambda rel, n=names: rel not in n)
           for parent, names in wanted.items()}
  return [os.path.join(local[p.rstrip("/").rsplit("/", 1)[0]],
                       p.rstrip("/").rsplit("/", 1)[1])
          if is_remote(p) else p for p in paths]


def local_path(path: str, with_directory: bool = True) -> str:
  """Where to read the input `path`: itself, or a verified local copy.

  A gs:// directory is `cached_copy`'d (a training workdir without its
  TensorBoard logs, exports and all but its newest committed checkpoint:
  what `pretrained.load_workdir` reads; `WORKDIR/checkpoints/<step>`: the
  workdir with that step's checkpoint alone). A gs:// file, or a TF1
  checkpoint prefix (`URL.index` exists), comes with its whole directory,
  where its config and vocabulary live (`with_directory=False`: the file
  alone). A URL with nothing there is a FileNotFoundError naming it.
  """
  if not is_remote(path):
    return path
  fs = filesystem()
  url = path.rstrip("/")
  workdir, sep, step = url.rpartition("/checkpoints/")
  if (sep and step.isdigit() and fs.isdir(url)
      and fs.isfile(f"{workdir}/bert_config.json")):
    # One step of a training run (WORKDIR/checkpoints/<step>): the run's
    # files with that step's checkpoint alone.
    keep = f"checkpoints/{step}/"
    local = cached_copy(workdir, skip=lambda rel: rel.startswith(
        ("tensorboard/", "export/")) or (rel.startswith("checkpoints/")
                                         and not rel.startswith(keep)))
    return os.path.join(local, "checkpoints", step)
  if fs.isdir(url):
    return cached_copy(url, skip=_workdir_skip(fs, url))
  if fs.isfile(url) or fs.exists(url + ".index"):
    parent, name = url.rsplit("/", 1)
    skip = None if with_directory else (lambda rel: rel != name)
    return os.path.join(cached_copy(parent, skip=skip), name)
  raise FileNotFoundError(f"{url}: no such file or directory")


def _workdir_skip(fs, url: str) -> Callable[[str], bool] | None:
  """For a training workdir: what loading its newest checkpoint needs not."""
  if not (fs.isfile(f"{url}/bert_config.json")
          and fs.isdir(f"{url}/checkpoints")):
    return None
  steps = [p.split("/")[-2] for p in fs.glob(
      f"{url}/checkpoints/*/commit_success.txt")]
  steps = [int(s) for s in steps if s.isdigit()]
  if not steps:
    return None  # let the loader say what is wrong with the checkpoints
  keep = f"checkpoints/{max(steps)}/"

  def skip(rel: str) -> bool:
    if rel.startswith(("tensorboard/", "export/")):
      return True
    parts = rel.split("/")
    return (len(parts) > 2 and parts[0] == "checkpoints"
            and parts[1].isdigit() and not rel.startswith(keep))
  return skip


def _identity(info: dict[str, Any]) -> str:
  return f"{info.get('size')}:{info.get('generation')}:{info.get('crc32c')}"


class Output:
  """A local path to write `path` at; `publish` puts it there.

  For a gs:// `path` (a file, a directory, or a TF1 checkpoint prefix) the
  local path lies in a `Staging` directory for the URL's parent, and
  `publish` uploads everything written beside it (a prefix's files, a
  vocabulary). Refuses to replace what exists at a URL.
  """

  def __init__(self, path: str):
    self.path = path
    self._stage = None
    self.local = path
    if is_remote(path):
      url = path.rstrip("/")
      if exists(url) or exists(url + ".index"):
        raise FileExistsError(f"{url} exists; refusing to overwrite")
      parent, name = url.rsplit("/", 1)
      self._stage = Staging(parent)
      self.local = os.path.join(self._stage.local, name)

  def publish(self) -> None:
    if self._stage is not None:
      self._stage.publish(None)

  def __enter__(self) -> "Output":
    return self

  def __exit__(self, *exc) -> None:
    if self._stage is not None:
      self._stage.close()


class Staging:
  """A local directory standing for `workdir` for local-only writers.

  For a local workdir it is the workdir itself. For a gs:// one, a
  temporary directory: `publish` replaces each top-level entry written
  there (e.g. `export/`) under the workdir with it, and maps the local
  paths in a result to their URLs.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.remote = is_remote(workdir)
    self.local = (tempfile.mkdtemp(prefix="bert_jax_staging_")
                  if self.remote else workdir)

  def publish(self, result: Any) -> Any:
    if not self.remote:
      return result
    fs = filesystem()
    for entry in sorted(os.listdir(self.local)):
      dest = f"{self.workdir}/{entry}"
      src = os.path.join(self.local, entry)
      if os.path.isdir(src):
        if fs.exists(dest):
          fs.rm(dest, recursive=True)
        upload_tree(src, dest)
      else:
        fs.put_file(src, dest)
    return self._to_urls(result)

  def _to_urls(self, x: Any) -> Any:
    if isinstance(x, dict):
      return {k: self._to_urls(v) for k, v in x.items()}
    if isinstance(x, list):
      return [self._to_urls(v) for v in x]
    if isinstance(x, str) and (x == self.local
                               or x.startswith(self.local + os.sep)):
      return self.workdir + x[len(self.local):]
    return x

  def close(self) -> None:
    if self.remote:
      shutil.rmtree(self.local, ignore_errors=True)

  def __enter__(self) -> "Staging":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
