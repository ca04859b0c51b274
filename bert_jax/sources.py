"""Documents for pre-training, streamed from every kind of source.

A document is a list of sentences (strings). Sources:
- `sentences`: the original format, one sentence per line, a blank line
  between documents (plain, .gz or .bz2);
- `raw`: paragraphs, one per line, a blank line between documents; split
  into sentences by pysbd (rule-based, no downloaded data);
- `wiki`: a MediaWiki pages-articles XML dump (.xml or .xml.bz2), article
  pages only, markup reduced to plain text with mwparserfromhell, then split
  into sentences;
- `tfds`: a TFDS dataset already prepared on disk, named
  `tfds:NAME[/CONFIG][:VERSION][:SPLIT]` (e.g. `tfds:wikipedia/20230601.en`),
  each example's `text` a document.

Bad input never stops a run: undecodable bytes are repaired (and counted),
binary files and over-long lines are skipped (and counted), empty documents
are dropped. `SourceStats` carries the counts into the manifest.
"""

from __future__ import annotations

import bz2
import dataclasses
import glob
import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from typing import IO, Any, NamedTuple

from absl import logging

from bert_jax import storage

Document = list[str]


class RawDocument(NamedTuple):
  """A document as read, before `to_sentences`.

  kind: `sentences` (content: list of sentences, final), `paragraphs`
  (list of paragraphs to split), `wiki` (an article's wikitext) or `text`
  (newline-separated paragraphs).
  """
  kind: str
  content: Any

FORMATS = ("auto", "sentences", "raw", "wiki", "tfds")
MAX_LINE_CHARS = 100_000  # a "sentence" longer than this is not text


@dataclasses.dataclass
class SourceStats:
  files: int = 0
  documents: int = 0
  sentences: int = 0
  repaired_lines: int = 0  # invalid UTF-8, decoded with U+FFFD
  skipped_binary_files: int = 0
  skipped_long_lines: int = 0
  skipped_empty_documents: int = 0
  truncated_files: int = 0  # corrupt/truncated archive: kept up to the fault
  unparsable_documents: int = 0  # markup or splitting failed: skipped

  def add(self, other: "SourceStats") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


def expand_inputs(patterns: str, *, flag: str = "--input_file",
                  what: str = "file", tfds: bool = True) -> list[str]:
  """The files matching comma-separated globs: each pattern's, sorted.

  A gs:// glob is matched in the bucket, and its files are read from local
  copies (`storage.local_files`): the returned paths are local.

  Only files count (a directory a glob matches is not an input). A pattern
  matching no file, or no pattern at all, is a FileNotFoundError naming
  `flag` and the pattern; `what` names the kind of file in that message.
  With `tfds`, `tfds:` specs (datasets, not files) pass through.
  """
  files = []
  for pattern in (p.strip() for p in patterns.split(",")):
    if not pattern:
      continue
    if tfds and pattern.startswith("tfds:"):
      files.append(pattern)
      continue
    if storage.is_remote(pattern):
      matched = storage.glob_files(pattern)
    else:
      matched = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not matched:
      raise FileNotFoundError(f"{flag}: no {what} matches {pattern!r}")
    files.extend(matched)
  if not files:
    raise FileNotFoundError(f"{flag}: no input given")
  # gs:// inputs are read from verified local copies (downloaded once).
  return storage.local_files(files)


def detect_format(path: str) -> str:
  if path.startswith("tfds:"):
    return "tfds"
  if path.endswith((".xml", ".xml.bz2", ".xml.gz")):
    return "wiki"
  return "sentences"


def _open_binary(path: str) -> IO[bytes]:
  if path.endswith(".gz"):
    return gzip.open(path, "rb")
  if path.endswith(".bz2"):
    return bz2.open(path, "rb")
  return open(path, "rb")


def open_text(path: str) -> IO[str]:
  """Plain, .gz or .bz2 text, as UTF-8; undecodable bytes are replaced.

  Every line as it is (for readers that need one result per input line);
  `iter_lines` is the guarded reader of corpora.
  """
  return io.TextIOWrapper(_open_binary(path), encoding="utf-8",
                          errors="replace")


def _looks_binary(path: str) -> bool:
  with _open_binary(path) as f:
    try:
      head = f.read(8192)
    except OSError:
      return True  # not the archive its name says
    except EOFError:
      return False  # truncated early: the reader counts it
  return b"\x00" in head


def iter_lines(path: str, stats: SourceStats) -> Iterator[str]:
  """Decoded, stripped lines; invalid UTF-8 repaired, huge lines skipped."""
  limit = 4 * MAX_LINE_CHARS  # UTF-8 takes at most 4 bytes a character
  with _open_binary(path) as f:
    try:
      while raw := f.readline(limit + 1):
        if len(raw) > limit:
          # Read past the rest of the line in bounded pieces: a file with
          # no newline at all must not be loaded whole.
          while raw and not raw.endswith(b"\n"):
            raw = f.readline(limit + 1)
          stats.skipped_long_lines += 1
          continue
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError:
          line = raw.decode("utf-8", errors="replace")
          stats.repaired_lines += 1
        line = line.strip()
        if len(line) > MAX_LINE_CHARS:
          stats.skipped_long_lines += 1
          continue
        yield line
    except _CORRUPT as e:
      _truncated(path, e, stats)


# What a damaged .gz/.bz2 raises part-way through.
_CORRUPT = (EOFError, OSError, zlib.error)


def _truncated(path: str, error: Exception, stats: SourceStats) -> None:
  logging.warning("%s: damaged after some text (%s); kept what came before",
                  path, error)
  stats.truncated_files += 1


_SEGMENTER = None


def split_sentences(paragraph: str) -> list[str]:
  """Sentences of a paragraph, by pysbd's rule-based English segmenter."""
  global _SEGMENTER
  if _SEGMENTER is None:
    import pysbd  # pylint: disable=g-import-not-at-top
    _SEGMENTER = pysbd.Segmenter(language="en", clean=False)
  return [s.strip() for s in _SEGMENTER.segment(paragraph) if s.strip()]


def _documents_from_lines(lines: Iterator[str], raw: bool,
                          stats: SourceStats) -> Iterator[RawDocument]:
  doc: list[str] = []
  for line in lines:
    if not line:
      if doc:
        yield RawDocument("paragraphs" if raw else "sentences", doc)
      else:
        stats.skipped_empty_documents += 1
      doc = []
      continue
    doc.append(line)
  if doc:
    yield RawDocument("paragraphs" if raw else "sentences", doc)


# -- Wikipedia dumps ---------------------------------------------------------

_HEADING = re.compile(r"^=+.*=+$")
_REF_EMPTY = re.compile(r"<ref[^>]*/>", re.I)
_REF = re.compile(r"<ref[^>]*>.*?</ref\s*>", re.I | re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def wiki_to_paragraphs(markup: str) -> list[str]:
  """Plain-text paragraphs of an article's wikitext.

  Templates, tables, references, files/images and categories are dropped;
  links keep their text; headings and list markers are removed.
  """
  import mwparserfromhell  # pylint: disable=g-import-not-at-top
  # References and comments go first: unbalanced quotes around them can
  # leave them as plain text in the parse tree.
  markup = _REF_EMPTY.sub("", markup)
  markup = _REF.sub("", markup)
  markup = _COMMENT.sub("", markup)
  code = mwparserfromhell.parse(markup)
  for node in list(code.filter_templates(recursive=False)):
    _remove(code, node)
  for node in list(code.filter_tags(recursive=False)):
    if str(node.tag).lower() in ("ref", "table", "gallery", "math", "code",
                                 "pre", "references", "timeline", "div"):
      _remove(code, node)
  for node in list(code.filter_wikilinks(recursive=False)):
    target = str(node.title).strip().lower()
    if target.startswith(("file:", "image:", "category:", "media:")) or (
        ":" in target and len(target.split(":")[0]) <= 3):
      _remove(code, node)  # files, categories and interlanguage links
  for node in list(code.filter_headings(recursive=False)):
    _remove(code, node)
  text = code.strip_code(normalize=True, collapse=True)
  # Tables written as {| ... |} survive as text when malformed; drop them.
  text = re.sub(r"\{\|.*?\|\}", " ", text, flags=re.S)
  paragraphs = []
  for line in text.split("\n"):
    line = line.strip().lstrip("*#:;").strip()
    if len(line) < 20 or _HEADING.match(line) or line.startswith(("{", "|")):
      continue
    paragraphs.append(" ".join(line.split()))
  return paragraphs


def _remove(code, node) -> None:
  try:
    code.remove(node)
  except ValueError:
    pass  # already gone with a parent


def _iter_wiki_pages(path: str, stats: SourceStats) -> Iterator[str]:
  """Wikitext of article pages (namespace 0, not redirects), streamed."""
  import xml.etree.ElementTree as ET  # pylint: disable=g-import-not-at-top
  with _open_binary(path) as f:
    try:
      yield from _wiki_pages_of(ET.iterparse(f, events=("start", "end")))
    except (*_CORRUPT, ET.ParseError) as e:
      _truncated(path, e, stats)


def _wiki_pages_of(events) -> Iterator[str]:
  ns = ""
  root = None
  for event, elem in events:
    tag = elem.tag
    if event == "start":
      if root is None:
        root = elem
        if tag.endswith("mediawiki"):
          ns = tag[:-len("mediawiki")]
      continue
    if tag != f"{ns}page":
      continue
    if (elem.findtext(f"{ns}ns") == "0"
        and elem.find(f"{ns}redirect") is None):
      text = elem.findtext(f"{ns}revision/{ns}text") or ""
      if text and not text.lstrip().lower().startswith("#redirect"):
        yield text
    # Cleared pages stay attached to the root: drop them, or a dump of
    # millions of pages grows without bound.
    root.clear()


# -- TFDS --------------------------------------------------------------------

def _tfds_documents(spec: str, data_dir: str | None) -> Iterator[RawDocument]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  parts = spec[len("tfds:"):].split(":")
  name, version = parts[0], parts[1] if len(parts) > 1 and parts[1] else None
  split = parts[2] if len(parts) > 2 else "train"
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")
  base = os.path.join(data_dir, name)
  if not os.path.isdir(base):
    raise FileNotFoundError(f"{spec}: no prepared TFDS dataset at {base} "
                            "(prepare it first; nothing is downloaded here)")
  if version is None:
    versions = sorted((d for d in os.listdir(base)
                       if re.fullmatch(r"\d+\.\d+\.\d+", d)),
                      key=lambda v: tuple(map(int, v.split("."))))
    if not versions:
      raise FileNotFoundError(f"{spec}: no version directory under {base}")
    version = versions[-1]
  builder = tfds.builder_from_directory(os.path.join(base, version))
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if "text" not in builder.info.features:
    raise ValueError(f"{spec}: its examples have no 'text' feature (it has "
                     f"{sorted(builder.info.features)})")
  for example in ds.as_numpy_iterator():
    text = example["text"]
    text = text.decode("utf-8", errors="replace") if isinstance(
        text, bytes) else str(text)
    yield RawDocument("text", text)


# -- the one entry point -----------------------------------------------------

def iter_raw_documents(path: str, stats: SourceStats,
                       input_format: str = "auto",
                       tfds_data_dir: str | None = None
                       ) -> Iterator[RawDocument]:
  """Streams one input's documents before sentence splitting.

  Reading is cheap and sequential; `to_sentences` (markup removal, sentence
  splitting: ~0.2 s for a Wikipedia article) is the costly part, and can
  run in worker processes.
  """
  fmt = detect_format(path) if input_format == "auto" else input_format
  if fmt not in FORMATS:
    raise ValueError(f"--input_format={input_format!r}: expected one of "
                     f"{FORMATS}")
  stats.files += 1
  if fmt == "tfds":
    yield from _tfds_documents(path, tfds_data_dir)
    return
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such input file")
  if _looks_binary(path):
    logging.warning("%s: looks binary (NUL bytes); skipped", path)
    stats.skipped_binary_files += 1
    return
  if fmt == "wiki":
    yield from (RawDocument("wiki", page)
                for page in _iter_wiki_pages(path, stats))
  else:
    yield from _documents_from_lines(iter_lines(path, stats), fmt == "raw",
                                     stats)


def to_sentences(raw: RawDocument) -> Document | None:
  """A document's sentences (markup removed, paragraphs split).

  None when the markup parser or the sentence splitter fails on it (one
  strange page must not stop a run over millions): `counted` skips it.
  """
  if raw.kind == "sentences":
    return raw.content
  if raw.kind not in ("paragraphs", "wiki", "text"):
    raise ValueError(f"unknown document kind {raw.kind!r}")
  try:
    if raw.kind == "paragraphs":
      paragraphs = raw.content
    elif raw.kind == "wiki":
      paragraphs = wiki_to_paragraphs(raw.content)
    else:
      paragraphs = [p.strip() for p in raw.content.split("\n") if p.strip()]
    return [s for p in paragraphs for s in split_sentences(p)]
  except (RecursionError, ValueError, TypeError, IndexError, KeyError,
          AttributeError) as e:
    logging.warning("a %s document could not be converted (%s: %s); "
                    "skipped: %r", raw.kind, type(e).__name__, e,
                    str(raw.content)[:80])
    return None


def counted(doc: Document | None, stats: SourceStats) -> bool:
  """Counts a converted document; False for one to drop (empty, or None:
  unparsable)."""
  if doc is None:
    stats.unparsable_documents += 1
    return False
  if not doc:
    stats.skipped_empty_documents += 1
    return False
  stats.documents += 1
  stats.sentences += len(doc)
  return True


def iter_documents(path: str, stats: SourceStats, input_format: str = "auto",
                   tfds_data_dir: str | None = None) -> Iterator[Document]:
  """Streams the documents of one input (file or tfds: spec), in-process."""
  for raw in iter_raw_documents(path, stats, input_format, tfds_data_dir):
    doc = to_sentences(raw)
    if counted(doc, stats):
      yield doc


def iter_all_documents(paths: Sequence[str], stats: SourceStats,
                       input_format: str = "auto",
                       tfds_data_dir: str | None = None
                       ) -> Iterator[Document]:
  for path in paths:
    yield from iter_documents(path, stats, input_format, tfds_data_dir)
