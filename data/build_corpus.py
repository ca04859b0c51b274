"""Rebuilds data/corpus/ from its public-domain sources (run by hand).

    apt-get install bible-kjv        # the `bible` program + KJV text
    bible -l100000 "gen1:1-rev22:21" > /tmp/kjv_raw.txt
    pip download --no-deps --no-binary :all: sentencepiece==0.2.3 -d /tmp/spm
    tar xzf /tmp/spm/sentencepiece-0.2.3.tar.gz -C /tmp/spm
    python data/build_corpus.py --kjv=/tmp/kjv_raw.txt \
        --botchan=/tmp/spm/sentencepiece-0.2.3/test/botchan.txt

Writes the original BERT format (one sentence per line, a blank line between
documents), gzip-compressed: each Bible chapter and each Botchan chapter is
a document; sentences are split with pysbd (bert_jax.sources).
"""

import argparse
import gzip
import re

from bert_jax import sources


def kjv_documents(path):
  doc, chapter = [], None
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      # Verses are indented ("  3 And God said, ..."); chapter headings
      # ("Genesis 1", "1 Samuel 1") start at the margin.
      m = re.match(r"^\s+(\d+)\s+(.*)$", line.rstrip())
      if m:
        doc.extend(sources.split_sentences(m.group(2)))
      else:  # a chapter heading such as "Genesis 1"
        if doc:
          yield doc
        doc, chapter = [], line.strip()
  if doc:
    yield doc


def botchan_documents(path):
  with open(path, encoding="utf-8-sig") as f:
    text = f.read()
  start = text.index("CHAPTER I\n")
  end = text.index("End of Project Gutenberg")
  body = text[start:end]
  for chapter in re.split(r"\nCHAPTER [IVXL]+\.?\n", "\n" + body)[1:]:
    # Lines are wrapped at ~70 columns; paragraphs have no blank lines, so
    # join everything and let the sentence splitter find the boundaries.
    joined = " ".join(chapter.split())
    doc = sources.split_sentences(joined)
    if doc:
      yield doc


def write(path, docs):
  n_docs = n_sent = 0
  with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
    for doc in docs:
      f.write("\n".join(doc) + "\n\n")
      n_docs += 1
      n_sent += len(doc)
  print(f"{path}: {n_docs} documents, {n_sent} sentences")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--kjv", required=True)
  p.add_argument("--botchan", required=True)
  p.add_argument("--out", default="data/corpus")
  a = p.parse_args()
  write(f"{a.out}/kjv.txt.gz", kjv_documents(a.kjv))
  write(f"{a.out}/botchan.txt.gz", botchan_documents(a.botchan))


if __name__ == "__main__":
  main()
