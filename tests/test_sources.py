"""Document readers: compression, globs, repair and skip accounting."""

import bz2
import gzip

import pytest

from bert_jax import sources

TEXT = ("First sentence of one.\nSecond sentence of one.\n\n\n"
        "Only sentence of two.\n\nThird document.\nIts end.\n")
DOCS = [["First sentence of one.", "Second sentence of one."],
        ["Only sentence of two."], ["Third document.", "Its end."]]


def test_plain_gzip_and_bz2_read_the_same(tmp_path):
  (tmp_path / "a.txt").write_text(TEXT)
  with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
    f.write(TEXT)
  with bz2.open(tmp_path / "c.txt.bz2", "wt") as f:
    f.write(TEXT)
  for name in ("a.txt", "b.txt.gz", "c.txt.bz2"):
    stats = sources.SourceStats()
    assert list(sources.iter_documents(str(tmp_path / name), stats)) == DOCS
    # Two blank lines in a row: one empty document, counted.
    assert stats.documents == 3 and stats.sentences == 5
    assert stats.skipped_empty_documents == 1


def test_globs_and_missing_inputs(tmp_path):
  for name in ("x1.txt", "x2.txt", "y.txt"):
    (tmp_path / name).write_text(TEXT)
  files = sources.expand_inputs(f"{tmp_path}/x*.txt, {tmp_path}/y.txt")
  assert [f.split("/")[-1] for f in files] == ["x1.txt", "x2.txt", "y.txt"]
  stats = sources.SourceStats()
  assert len(list(sources.iter_all_documents(files, stats))) == 9
  with pytest.raises(FileNotFoundError, match="no file matches"):
    sources.expand_inputs(f"{tmp_path}/none*.txt")
  with pytest.raises(FileNotFoundError, match="no input"):
    sources.expand_inputs(" , ")


def test_repair_and_skips_are_counted(tmp_path):
  path = tmp_path / "bad.txt"
  with open(path, "wb") as f:
    f.write(b"caf\xe9 au lait.\n")  # Latin-1, not UTF-8
    f.write(b"y" * (3 * 1024 * 1024))  # 3 MB with no newline...
    f.write(b"\nstill here.\n")  # ...then the file goes on
  stats = sources.SourceStats()
  docs = list(sources.iter_documents(str(path), stats))
  assert docs == [["caf\ufffd au lait.", "still here."]]
  assert stats.repaired_lines == 1 and stats.skipped_long_lines == 1
  blob = tmp_path / "blob.txt.gz"
  with gzip.open(blob, "wb") as f:
    f.write(b"\x00\x01\x02" * 1000)
  assert not list(sources.iter_documents(str(blob), stats))
  assert stats.skipped_binary_files == 1
  # A damaged archive: the text before the fault is kept, the file counted.
  whole = gzip.compress(("Kept sentence.\n" * 5000).encode())
  (tmp_path / "cut.txt.gz").write_bytes(whole[:len(whole) // 2])
  docs = list(sources.iter_documents(str(tmp_path / "cut.txt.gz"), stats))
  assert stats.truncated_files == 1
  assert len(docs) == 1 and 0 < len(docs[0]) < 5000
  with open(tmp_path / "cut.xml.bz2", "wb") as f:
    f.write(bz2.compress(b"<mediawiki><page><ns>0</ns><revision><text>"
                         b"Some text")[:60])
  assert not list(sources.iter_documents(str(tmp_path / "cut.xml.bz2"),
                                         stats))
  assert stats.truncated_files == 2
  with pytest.raises(FileNotFoundError, match="no such input file"):
    list(sources.iter_documents(str(tmp_path / "gone.txt"), stats))


def test_raw_paragraphs_are_split_into_sentences(tmp_path):
  path = tmp_path / "raw.txt"
  path.write_text("Dr. Watson arrived at 10 a.m. on Monday. He left soon! "
                  "Why?\n\nA second document. It has two.\n")
  stats = sources.SourceStats()
  docs = list(sources.iter_documents(str(path), stats, "raw"))
  assert docs == [["Dr. Watson arrived at 10 a.m. on Monday.",
                   "He left soon!", "Why?"],
                  ["A second document.", "It has two."]]


def test_wiki_markup_is_reduced_to_text():
  markup = (
      "{{Infobox person|name=X}}\n"
      "'''Ada Lovelace''' was an [[England|English]] mathematician"
      "<ref>{{cite book|title=T}}</ref> and writer.<ref name=a/>\n"
      "== Life ==\n"
      "{| class=\"wikitable\"\n| cell || cell\n|}\n"
      "She worked on the [[Analytical Engine]] of Charles Babbage.\n"
      "[[File:Ada.jpg|thumb|A portrait]]\n[[Category:Mathematicians]]\n")
  paragraphs = sources.wiki_to_paragraphs(markup)
  assert paragraphs == [
      "Ada Lovelace was an English mathematician and writer.",
      "She worked on the Analytical Engine of Charles Babbage."]


def test_a_document_the_splitter_fails_on_is_skipped_and_counted(
    tmp_path, monkeypatch):
  path = tmp_path / "raw.txt"
  path.write_text("Fine text here. And more.\n\nPOISON paragraph.\n\n"
                  "Also fine. Yes.\n")
  real = sources.split_sentences

  def fragile(paragraph):
    if "POISON" in paragraph:
      raise RecursionError("maximum recursion depth exceeded")
    return real(paragraph)

  monkeypatch.setattr(sources, "split_sentences", fragile)
  stats = sources.SourceStats()
  docs = list(sources.iter_documents(str(path), stats, "raw"))
  assert docs == [["Fine text here.", "And more."], ["Also fine.", "Yes."]]
  assert stats.unparsable_documents == 1 and stats.documents == 2
