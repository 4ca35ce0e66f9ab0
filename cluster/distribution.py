"""What a local Flink cluster runs from, fetched once into a cache.

Two pieces, each from an ordinary registry client, each pinned:

* **Flink 1.16.3's jars** (`flink-dist`, log4j, ...): Maven Central does not
  serve `org.apache.flink:flink-dist` here, but PyPI's
  `apache-flink-libraries` sdist carries Flink's `lib/` (the jars of the
  official binary distribution). `pip download` fetches it, checked against
  its sha256; only `deps/lib/*.jar` and `deps/bin/bash-java-utils.jar`
  (Flink's memory calculator, what its start scripts call) are kept.
* **Beam's Flink runner with its job server** for the Beam the lock pins
  (2.59.0): `mvn dependency:copy-dependencies` on `cluster/pom.xml`. Beam
  publishes one shaded `beam-runners-flink-<v>-job-server` jar, which Maven
  Central does not serve here; the unshaded runner and its dependencies are
  served, and the job server's main class is in the runner jar itself.

Why Flink 1.16: the Flink runner must be built for the cluster's Flink
minor version, and for Beam 2.59 the only Flink runner served here is
`beam-runners-flink-1.16` (1.17, 1.18 at 2.59: 404; 1.19 only at 2.62).

Each piece is unpacked into a temporary folder beside its final place and
renamed into place when complete, so an interrupted fetch leaves nothing
that looks usable, and the next fetch starts over.
"""

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
POM = os.path.join(HERE, 'pom.xml')
NO_STAGING_SOURCE = os.path.join(HERE, 'java', 'NoStagingDetectorFactory.java')
NO_STAGING_JAR = 'tfx-reference-no-staging.jar'
NO_STAGING_CLASS = 'tfxreference.flink.NoStagingDetectorFactory'

FLINK_VERSION = '1.16.3'
FLINK_SDIST = f'apache-flink-libraries-{FLINK_VERSION}.tar.gz'
FLINK_SDIST_SHA256 = (
    'd15df4185e9c507836b031879b64e18f68955dd7e90cd7d39b450513ed64ebbe')
# The Beam Python SDK the lock pins; the runner jars must be the same
# release (cluster/pom.xml names it too: tests check the two agree).
BEAM_VERSION = '2.59.0'
JOB_SERVER_MAIN = 'org.apache.beam.runners.flink.FlinkJobServerDriver'


class FetchError(SystemExit):
  """A missing tool or a failed download, said in one line."""


def cache_root() -> str:
  """$TFX_REFERENCE_CACHE, else $XDG_CACHE_HOME/tfx-reference (~/.cache)."""
  if os.environ.get('TFX_REFERENCE_CACHE'):
    return os.environ['TFX_REFERENCE_CACHE']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'tfx-reference')


def flink_home(root: str = '') -> str:
  """Holds lib/*.jar and bin/bash-java-utils.jar."""
  return os.path.join(root or cache_root(), f'flink-{FLINK_VERSION}')


def job_server_home(root: str = '') -> str:
  """Holds lib/*.jar (the runner and its dependencies) and job-server.jar."""
  return os.path.join(root or cache_root(),
                      f'beam-flink-1.16-job-server-{BEAM_VERSION}')


def job_server_jar(root: str = '') -> str:
  """A jar whose manifest names the main class and every jar in lib/: what
  Beam's `--flink_job_server_jar` expects (it runs `java -jar` on it)."""
  return os.path.join(job_server_home(root), 'job-server.jar')


def _flink_dist(root: str = '', staged_root: str = '') -> str:
  home = staged_root or flink_home(root)
  return os.path.join(home, 'lib', f'flink-dist-{FLINK_VERSION}.jar')


def flink_classpath(root: str = '') -> str:
  return os.path.join(flink_home(root), 'lib', '*')


def job_server_classpath(root: str = '') -> str:
  return os.path.join(job_server_home(root), 'lib', '*')


def missing(root: str = '') -> List[str]:
  """What is not fetched yet, as one line each (empty: ready)."""
  out = []
  if not os.path.isfile(_flink_dist(root)):
    out.append(f'Flink {FLINK_VERSION} jars ({flink_home(root)})')
  if not _job_server_complete(root):
    out.append(f"Beam {BEAM_VERSION}'s Flink job server "
               f'({job_server_home(root)})')
  return out


def _job_server_complete(root: str = '') -> bool:
  return (os.path.isfile(job_server_jar(root)) and os.path.isfile(
      os.path.join(job_server_home(root), 'lib', NO_STAGING_JAR)))


def check_beam_version() -> None:
  installed = importlib.metadata.version('apache-beam')
  if installed != BEAM_VERSION:
    raise FetchError(
        f'apache-beam {installed} is installed, but the Flink job server '
        f'is pinned to Beam {BEAM_VERSION} (cluster/distribution.py, '
        'cluster/pom.xml): the runner and the SDK must be the same release')


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _run(cmd: List[str], log_path: str, what: str) -> None:
  with open(log_path, 'w') as log:
    result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, check=False)
  if result.returncode != 0:
    with open(log_path) as f:
      tail = ''.join(f.readlines()[-15:])
    raise FetchError(f'{what} failed (exit {result.returncode}); the last '
                     f'lines of {log_path}:\n{tail}')


def fetch_flink(root: str = '', log=print) -> None:
  home = flink_home(root)
  if os.path.isfile(_flink_dist(root)):
    return
  os.makedirs(os.path.dirname(home), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(home),
                                   prefix='.flink-') as tmp:
    log(f'Fetching Flink {FLINK_VERSION} from PyPI '
        f'(apache-flink-libraries, ~215 MB, once) ...')
    requirement = os.path.join(tmp, 'requirements.txt')
    with open(requirement, 'w') as f:
      f.write(f'apache-flink-libraries=={FLINK_VERSION} '
              f'--hash=sha256:{FLINK_SDIST_SHA256}\n')
    _run([sys.executable, '-m', 'pip', 'download', '--no-deps',
          '--no-build-isolation', '--disable-pip-version-check',
          '--no-binary', ':all:', '-d', tmp, '-r', requirement],
         os.path.join(tmp, 'pip.log'), 'pip download apache-flink-libraries')
    sdist = os.path.join(tmp, FLINK_SDIST)
    if _sha256(sdist) != FLINK_SDIST_SHA256:  # pip checked; check what we open
      raise FetchError(f'{sdist}: sha256 differs from the pinned one')
    staged = os.path.join(tmp, 'home')
    prefix = f'apache-flink-libraries-{FLINK_VERSION}/deps/'
    with tarfile.open(sdist) as tar:
      for member in tar.getmembers():
        name = member.name[len(prefix):] if member.name.startswith(
            prefix) else ''
        keep = (name.startswith('lib/') and name.endswith('.jar') or
                name == 'bin/bash-java-utils.jar')
        if keep and member.isfile() and '..' not in name.split('/'):
          target = os.path.join(staged, name)
          os.makedirs(os.path.dirname(target), exist_ok=True)
          with tar.extractfile(member) as src, open(target, 'wb') as dst:
            shutil.copyfileobj(src, dst)
    if not os.path.isfile(_flink_dist(staged_root=staged)):
      raise FetchError(f'{sdist} has no flink-dist jar')
    os.rename(staged, home)


def write_launcher_jar(path: str, main_class: str, jars: List[str]) -> None:
  """A jar with only a manifest: Main-Class and a Class-Path of `jars`
  (relative to the jar's folder), lines folded at 72 bytes as the JAR
  specification requires."""
  def fold(line: str) -> str:
    out, rest = [], line.encode()
    out.append(rest[:72])
    rest = rest[72:]
    while rest:
      out.append(b' ' + rest[:71])
      rest = rest[71:]
    return b'\r\n'.join(out).decode() + '\r\n'

  manifest = (fold('Manifest-Version: 1.0') + fold(f'Main-Class: {main_class}')
              + fold('Class-Path: ' + ' '.join(jars)) + '\r\n')
  with zipfile.ZipFile(path, 'w') as jar:
    jar.writestr('META-INF/MANIFEST.MF', manifest)


def fetch_job_server(root: str = '', log=print) -> None:
  home = job_server_home(root)
  if _job_server_complete(root):
    return
  mvn, javac = shutil.which('mvn'), shutil.which('javac')
  if not mvn:
    raise FetchError('Maven (mvn) not found: the Flink job server comes '
                     'from Maven Central (apt-get install maven)')
  if not javac:
    raise FetchError('javac not found: cluster/java/ is compiled against '
                     "Beam's jars (apt-get install openjdk-17-jdk-headless)")
  if os.path.isdir(home):  # an older, incomplete cache
    shutil.rmtree(home)
  os.makedirs(os.path.dirname(home), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(home),
                                   prefix='.job-server-') as tmp:
    log(f"Fetching Beam {BEAM_VERSION}'s Flink runner from Maven Central "
        '(~160 MB, once; a few minutes on a fresh ~/.m2) ...')
    staged = os.path.join(tmp, 'home')
    _run([mvn, '-B', '-q', '-f', POM, 'dependency:copy-dependencies',
          f'-DoutputDirectory={os.path.join(staged, "lib")}'],
         os.path.join(tmp, 'mvn.log'), 'mvn dependency:copy-dependencies')
    lib = os.path.join(staged, 'lib')
    runner = f'beam-runners-flink-1.16-{BEAM_VERSION}.jar'
    if not os.path.isfile(os.path.join(lib, runner)):
      raise FetchError(f'Maven copied no {runner}')
    classes = os.path.join(tmp, 'classes')
    _run([javac, '--release', '11', '-cp',
          os.path.join(lib, f'beam-sdks-java-core-{BEAM_VERSION}.jar'),
          '-d', classes, NO_STAGING_SOURCE],
         os.path.join(tmp, 'javac.log'), 'javac cluster/java')
    with zipfile.ZipFile(os.path.join(lib, NO_STAGING_JAR), 'w') as jar:
      for folder, _, files in os.walk(classes):
        for name in files:
          path = os.path.join(folder, name)
          jar.write(path, os.path.relpath(path, classes))
    jars = sorted(os.listdir(lib))
    write_launcher_jar(os.path.join(staged, 'job-server.jar'),
                       JOB_SERVER_MAIN, [f'lib/{j}' for j in jars])
    os.rename(staged, home)


def fetch(root: str = '', log=print) -> None:
  """Everything `python -m cluster up` needs; a no-op once fetched."""
  check_beam_version()
  fetch_flink(root, log)
  fetch_job_server(root, log)
