"""Raw feature values as drift and skew compare them, from wherever they
are: CSV rows, served instances, tf.Examples (in memory or an Examples
artifact's gzipped TFRecords). One notion of missing: None, '' or NaN,
whatever the source, is None; numbers at float32 (the precision of a
tf.Example and of the serving_raw signature); an integer category is one
label whether read as '3', 3 or 3.0. monitoring/distribution.py compares
them.
"""

import csv
import glob
import gzip
import math
import os
import struct
from typing import Dict, Iterable, Iterator, List, Mapping, Sequence

import numpy as np

from monitoring import distribution



def _value(value: object, kind: str) -> object:
  """A raw value as compared: a float (numeric) or a str (categorical), or
  None when missing: None, '' or NaN, whatever the source."""
  if isinstance(value, bytes):
    value = value.decode('utf-8', 'replace')
  if isinstance(value, str):
    value = value.strip()
  if value is None or value == '':
    return None
  if kind != distribution.TEXT:
    try:
      number = float(value)
    except ValueError:
      if kind == distribution.NUMERIC:
        raise
      return str(value)  # a category that is no number
    if math.isnan(number):
      return None
    if kind == distribution.NUMERIC:
      # At float32, the precision of a tf.Example and of serving_raw: the
      # bin edges are data values, and a CSV's 41.880994471 must fall on
      # the same side of an edge as the same trip's float32 41.880993.
      return float(np.float32(number))
    # An integer category is one label whether read as '3', 3 or 3.0.
    return str(int(number))
  return str(value)


def values_from_rows(rows: Iterable[Mapping[str, object]],
                     kinds: Mapping[str, str]) -> distribution.Values:
  """Raw values of dict rows: CSV rows (text) or served rows' features."""
  out: distribution.Values = {name: [] for name in kinds}
  for row in rows:
    for name, kind in kinds.items():
      out[name].append(_value(row.get(name), kind))
  return out


def values_from_csv(paths: Sequence[str], kinds: Mapping[str, str]) -> distribution.Values:
  """Raw values of CSV files (a span's), an empty cell being missing."""
  rows: List[Dict[str, str]] = []
  for path in paths:
    with open(path, newline='') as f:
      rows += list(csv.DictReader(f))
  return values_from_rows(rows, kinds)


def values_from_served(rows: Sequence[object],
                       kinds: Mapping[str, str]) -> distribution.Values:
  """Raw values of prediction_logs.ServedRow's (None already = missing)."""
  return values_from_rows([r.features for r in rows], kinds)


def values_from_examples(serialized: Sequence[bytes],
                         kinds: Mapping[str, str]) -> distribution.Values:
  """Raw values of serialized tf.Examples; an empty feature is missing.

  Decoded with tfx_bsl's Example decoder (what TFDV uses), which needs no
  TensorFlow import.
  """
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
  out: distribution.Values = {name: [] for name in kinds}
  if not serialized:
    return out
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(
      list(serialized))
  for name, kind in kinds.items():
    index = batch.schema.get_field_index(name)
    if index < 0:
      out[name] = [None] * batch.num_rows
      continue
    for cell in batch.column(index).to_pylist():
      out[name].append(_value(cell[0], kind) if cell else None)
  return out


def gzip_tfrecords(path: str) -> Iterator[bytes]:
  """Records of a GZIP TFRecord file, as ExampleGen writes them.

  Framing: uint64 length, uint32 masked CRC, data, uint32 masked CRC (CRCs
  not verified: the files are the pipeline's own, already validated).
  """
  with gzip.open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      f.read(4)
      yield data


def values_from_examples_dir(uri: str, split: str,
                             kinds: Mapping[str, str]) -> distribution.Values:
  """Raw values of one split of an Examples artifact (`<uri>/Split-<split>`)."""
  files = sorted(glob.glob(os.path.join(uri, f'Split-{split}', '*')))
  if not files:
    raise FileNotFoundError(f'no Split-{split} files under {uri}')
  serialized = [r for path in files for r in gzip_tfrecords(path)]
  return values_from_examples(serialized, kinds)


def concatenate(parts: Sequence[distribution.Values]) -> distribution.Values:
  """Several samples' values as one (e.g. the spans of a training window)."""
  out: distribution.Values = {}
  for part in parts:
    for name, values in part.items():
      out.setdefault(name, []).extend(values)
  return out


def size(values: distribution.Values) -> int:
  return max((len(v) for v in values.values()), default=0)
