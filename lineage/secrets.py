"""Secrets never reach a log, a console or a page: one registry of them.

`hide_secret` registers a secret (the MySQL password of ML Metadata, found
by lineage/metadata_store.py); from then on every log record is redacted
before any handler sees it, and `redact` cleans any text shown to a user.
Standard library and protobuf only.
"""

import json
import logging
from typing import List

# Every spelling of every secret registered with `hide_secret`, longest first.
_SECRETS: List[str] = []


def redact(text: str) -> str:
  """`text` with every secret given to `hide_secret` replaced by '***'."""
  for form in _SECRETS:
    text = text.replace(form, '***')
  return text


def hide_secret(secret: str) -> None:
  """Keeps `secret` out of every log record from now on (and out of `redact`).

  Needed because TFX's LocalDagRunner and BeamDagRunner log the whole ML
  Metadata ConnectionConfig at INFO, a MySQL password included. Escaped
  spellings count too: a proto's text format escapes quotes, backslashes and
  non-ASCII bytes, so the raw string alone would not match.
  """
  if not secret:
    return
  from google.protobuf import text_encoding  # pylint: disable=g-import-not-at-top
  forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1],
           text_encoding.CEscape(secret, as_utf8=True),
           text_encoding.CEscape(secret.encode('utf-8'), as_utf8=False)}
  if not _SECRETS:
    _redact_log_records()
  _SECRETS.extend(forms - set(_SECRETS))
  _SECRETS.sort(key=len, reverse=True)  # a longer spelling may hold a shorter


def _redact_log_records() -> None:
  """Wraps the LogRecord factory: records are redacted before any handler.

  A factory (unlike a filter) also covers handlers added later and records
  of loggers that do not propagate.
  """
  make_record = logging.getLogRecordFactory()

  def redacting_factory(*args, **kwargs) -> logging.LogRecord:
    record = make_record(*args, **kwargs)
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return record  # a malformed record; logging reports it at emit time
    clean = redact(message)
    if clean != message:
      record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
      text = logging.Formatter().formatException(record.exc_info)
      if redact(text) != text:
        record.exc_text = redact(text)
    return record

  logging.setLogRecordFactory(redacting_factory)
