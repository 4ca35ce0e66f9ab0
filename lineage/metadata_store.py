"""ML Metadata access: which store, how to connect, how to read a property.

The one `StoreConfig` (and its flags) the runners write with and every tool
reads with, the connection (with its password kept out of logs and errors),
and a property's Python value. The walks of the event graph are
lineage/graph.py's. Uses `ml_metadata` directly (no tfx import), so lineage
tools stay light (serving/ imports this module: keep it free of tfx).
"""

import argparse
import dataclasses
import os
import re
import socket
import sys
import tempfile
from typing import Optional, Tuple

from google.protobuf import json_format
from google.protobuf import text_format
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from lineage import secrets
from project import cli
from project import paths

# The password of a MySQL store is deliberately no field (so no flag: a
# command line shows in `ps`); it comes from the file or variable below.
MYSQL_PASSWORD_ENV = 'MLMD_MYSQL_PASSWORD'
FLAGS_HELP = (
    'SQLite at --metadata-path unless --metadata-config or a MySQL host is '
    'given. Precedence: --metadata-config FILE (any ml_metadata backend, used '
    'as is) > MySQL (--mysql-host or $MLMD_MYSQL_HOST) > SQLite. Each '
    '--mysql-* flag overrides its $MLMD_MYSQL_* variable. The MySQL password '
    'is never a flag: it is read from --mysql-password-file (or '
    f'$MLMD_MYSQL_PASSWORD_FILE), else ${MYSQL_PASSWORD_ENV}; it also fills '
    'a --metadata-config MySQL config that has none. It is never printed or '
    'logged.')


@dataclasses.dataclass
class StoreConfig:
  """Which ML Metadata store: the runners write it, every tool reads it.

  The pipeline's config (pipeline/configs.py) extends it, so a run and the
  lineage tools take the same flags and open the same store. The problem
  picks the default store: outputs/<problem>/pipeline/metadata.sqlite.
  """
  problem: str = cli.field(
      paths.DEFAULT_PROBLEM, 'the problem (a folder of models/ with a '
      'problem.py): its data, schema, model and the paths below follow it')
  metadata_path: Optional[str] = cli.field(
      None, 'SQLite ML Metadata file',
      derived='<pipeline root>/metadata.sqlite, the pipeline root being '
      'outputs/<problem>/pipeline')
  metadata_config: Optional[str] = cli.field(
      None, 'text-format ml_metadata ConnectionConfig file (e.g. MySQL); '
      'overrides --metadata-path')
  mysql_host: Optional[str] = cli.field(
      None, 'MySQL/MariaDB host for ML Metadata; setting it selects MySQL '
      'instead of SQLite', env='MLMD_MYSQL_HOST')
  mysql_port: Optional[int] = cli.field(None, 'MySQL port',
                                        env='MLMD_MYSQL_PORT', fallback=3306)
  mysql_database: Optional[str] = cli.field(
      None, 'MySQL database (created if missing and the user may)',
      env='MLMD_MYSQL_DATABASE', fallback='mlmd')
  mysql_user: Optional[str] = cli.field(None, 'MySQL user',
                                        env='MLMD_MYSQL_USER')
  mysql_password_file: Optional[str] = cli.field(
      None, f'file holding the MySQL password (else ${MYSQL_PASSWORD_ENV})',
      env='MLMD_MYSQL_PASSWORD_FILE')

  def __post_init__(self):
    cli.apply_env(self)
    if self.metadata_path is None:
      self.metadata_path = paths.metadata_path(
          getattr(self, 'pipeline_root', None) or
          paths.pipeline_root(self.problem))


# The store's own fields (the problem only picks their defaults).
FIELDS = tuple(f.name for f in dataclasses.fields(StoreConfig)
               if f.name != 'problem')


@dataclasses.dataclass
class ServedConfig(StoreConfig):
  """A problem's store and where its models are served: the flags of the
  tools that read what runs recorded (lineage, the web UI, the replay)."""
  serving_dir: str = cli.field(
      paths.SERVING_DIR,
      'TF Serving model base path root: pushes go to <dir>/<model>/<version>/')
  model_name: Optional[str] = cli.field(
      None, 'model name under the serving dir', derived="the problem's name")
  pipeline_name: Optional[str] = cli.field(
      None, 'TFX pipeline name', derived="the problem's name")

  def __post_init__(self):
    self.model_name = self.model_name or self.problem
    self.pipeline_name = self.pipeline_name or self.problem
    super().__post_init__()

  @property
  def serving_model_dir(self) -> str:
    """The TF Serving model base path: <serving_dir>/<model_name>."""
    return os.path.join(self.serving_dir, self.model_name)


SERVED_FIELDS = tuple(f.name for f in dataclasses.fields(ServedConfig))


class _RefusePassword(argparse.Action):
  """`--mysql-password`: refused, and taken before argparse would read it as
  an abbreviation of --mysql-password-file."""

  def __call__(self, parser, namespace, values, option_string=None):
    parser.error(f'{option_string} is not accepted (a command line shows in '
                 f'`ps`): put the password in ${MYSQL_PASSWORD_ENV} or in a '
                 'file named by --mysql-password-file')


def add_flags(parser: argparse.ArgumentParser, config_class=StoreConfig,
              fields=None) -> None:
  """The store's flags, in one group whose description says which wins;
  the other fields of `config_class` (or those in `fields`) as flags too."""
  group = parser.add_argument_group('ML Metadata store', FLAGS_HELP)
  group.add_argument('--mysql-password', nargs='?', action=_RefusePassword,
                     help=argparse.SUPPRESS)
  cli.add_flags(parser, config_class, fields=fields,
                groups={name: group for name in FIELDS})


def from_flags(args: argparse.Namespace) -> StoreConfig:
  return cli.from_flags(args, StoreConfig)


def sqlite_config(path: str) -> metadata_store_pb2.ConnectionConfig:
  """SQLite MLMD at `path` (created on first use, parent dirs included)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = path
  config.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
  return config


def connection_config(metadata_path: str,
                      config_file: Optional[str] = None
                     ) -> metadata_store_pb2.ConnectionConfig:
  """The store to use: a ConnectionConfig text proto if given, else SQLite.

  A config file can name any backend ml_metadata supports, e.g.
    mysql { host: "127.0.0.1" port: 3306 database: "mlmd" user: "tfx" }
  """
  if not config_file:
    return sqlite_config(metadata_path)
  with open(config_file) as f:
    return text_format.Parse(f.read(), metadata_store_pb2.ConnectionConfig())


def mysql_password(password_file: Optional[str]) -> str:
  """The MySQL password: the file's first line if a file is named, else
  $MLMD_MYSQL_PASSWORD ('' if neither). Never a flag: `ps` shows flags."""
  if not password_file:
    return os.environ.get(MYSQL_PASSWORD_ENV, '')
  try:
    with open(password_file) as f:
      return f.readline().rstrip('\r\n')
  except OSError as e:
    raise SystemExit(f'Cannot read the MySQL password file {password_file}: '
                     f'{e.strerror}') from None


def store_config(cfg: StoreConfig) -> metadata_store_pb2.ConnectionConfig:
  """The store a run writes and the lineage tools read, from the config.

  Precedence (FLAGS_HELP): a --metadata-config file, else MySQL
  when a host is set (flag, else $MLMD_MYSQL_HOST), else SQLite. A MySQL
  config without a password gets it from `mysql_password`; from here on the
  password is kept out of the logs (`secrets.hide_secret`), whichever runner
  gets the config.
  """
  if cfg.metadata_config:
    config = connection_config(cfg.metadata_path, cfg.metadata_config)
  elif cfg.mysql_host:
    if not cfg.mysql_user:
      raise SystemExit(
          f'ML Metadata on MySQL at {cfg.mysql_host}:{cfg.mysql_port}/'
          f'{cfg.mysql_database} needs a user: --mysql-user or '
          '$MLMD_MYSQL_USER')
    config = metadata_store_pb2.ConnectionConfig()
    config.mysql.host = cfg.mysql_host
    config.mysql.port = cfg.mysql_port
    config.mysql.database = cfg.mysql_database
    config.mysql.user = cfg.mysql_user
  else:
    return sqlite_config(cfg.metadata_path)
  if config.HasField('mysql'):
    if not config.mysql.password:
      config.mysql.password = mysql_password(cfg.mysql_password_file)
    secrets.hide_secret(config.mysql.password)
  return config


def _mysql_address(m: metadata_store_pb2.MySQLDatabaseConfig) -> str:
  return f'{m.host or m.socket}:{m.port or 3306}/{m.database}'


def describe(config: metadata_store_pb2.ConnectionConfig) -> str:
  """Where the store is, for humans; never includes a password."""
  kind = config.WhichOneof('config')
  if kind == 'sqlite':
    return f'{config.sqlite.filename_uri} (SQLite)'
  if kind == 'mysql':
    return f'{config.mysql.user}@{_mysql_address(config.mysql)} (MySQL)'
  return kind or 'unknown'


def open_store(config: metadata_store_pb2.ConnectionConfig
              ) -> mlmd.MetadataStore:
  """Connects, or exits with one line naming the store, never the password.

  A MySQL password is also handed to `secrets.hide_secret`, because TFX logs
  the whole connection config when a run starts.
  """
  if config.HasField('mysql'):
    secrets.hide_secret(config.mysql.password)
  store, error, native_log = _connect(config)
  if error is not None:
    raise SystemExit(_connection_error(config, error)) from None
  if native_log:  # not an error: let it through where ml_metadata wrote it
    os.write(2, native_log)
  return store


def _connect(config: metadata_store_pb2.ConnectionConfig
            ) -> Tuple[Optional[mlmd.MetadataStore], Optional[Exception],
                       bytes]:
  """mlmd.MetadataStore(config), or the error, and what C++ wrote to stderr.

  On a refused MySQL connection ml_metadata's C++ code logs a line to file
  descriptor 2 blaming MySQL 8 authentication plugins whatever the cause;
  it is held back so that the caller can say what really went wrong.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      store, error = mlmd.MetadataStore(config), None
    except Exception as e:  # pylint: disable=broad-except
      store, error = None, e
    finally:
      os.dup2(saved, 2)
      os.close(saved)
    held.seek(0)
    return store, error, held.read()


def _connection_error(config: metadata_store_pb2.ConnectionConfig,
                      error: Exception) -> str:
  """Why the store did not open: unreachable, refused, or ml_metadata's word."""
  detail = secrets.redact(str(error).strip())
  if not config.HasField('mysql'):
    return f'Cannot open ML Metadata at {describe(config)}: {detail}'
  m = config.mysql
  where = f'MySQL at {_mysql_address(m)}'
  if m.host:
    try:
      socket.create_connection((m.host, m.port or 3306), timeout=5).close()
    except OSError as e:
      return (f'Cannot reach {where} for ML Metadata: '
              f'{e.strerror or type(e).__name__}. Is the server running and '
              'are --mysql-host / --mysql-port right?')
  password = ('a password was given' if m.password else
              'no password was given: set --mysql-password-file or '
              f'${MYSQL_PASSWORD_ENV}')
  # 'mysql_real_connect failed: errno: , error: ' carries no information.
  said = '' if re.search(r'error:\s*$', detail) else (
      f' ml_metadata says: {detail}')
  return (f'{where} refused ML Metadata as user {m.user!r} ({password}): '
          f'wrong user or password, or no rights on database '
          f'{m.database!r}.{said}')


def custom_property(entity, key: str, default=None):
  """A custom property of an MLMD artifact/execution as a Python value."""
  if key not in entity.custom_properties:
    return default
  value = entity.custom_properties[key]
  kind = value.WhichOneof('value')
  if kind == 'struct_value':  # JSON custom properties, e.g. {split: 0|1}
    return json_format.MessageToDict(value.struct_value)
  return getattr(value, kind) if kind else default


def property_value(entity, key: str):
  """A property or custom property (TFX puts `span`, and the pre-IR
  launcher exec properties such as `input_base`, in either)."""
  if key in entity.properties:
    value = entity.properties[key]
    return getattr(value, value.WhichOneof('value'))
  return custom_property(entity, key)
