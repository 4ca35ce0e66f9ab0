"""What a CD run changes: V served as `canary`, then promoted or rolled back.

Every change is an edit of the model config file a polling server picks up
(delivery/config_file.py: atomic replace), or delivery.versions' rollback
(V moved to <base>/.rolled-back/); the stable version is never moved.
`undo` puts the config file back as it was before an aborted run.
"""

import sys
import time
from typing import List, Optional

from delivery import config_file
from delivery import versions
from delivery import cd_run
from serving import model_config

CANARY, STABLE = cd_run.CANARY, cd_run.STABLE
InfraError = cd_run.InfraError


# --- step 2: serve V under `canary` ----------------------------------------
def start_canary(run: cd_run.Delivery) -> cd_run.Check:
  """Serves V (TF Serving labels only available versions), then labels it."""
  start = time.monotonic()
  entry = config_file.entry(config_file.read(run.config_file), run.model_name,
                            run.config_file)
  if (model_config.policy_of(entry) == 'specific' and
      run.version not in entry.model_version_policy.specific.versions):
    run.edit_config(lambda e: e.model_version_policy.specific.versions.append(
        run.version))
    run.added_to_policy = True
    run.log('cd_serve', policy='specific', config=run.config_file)
  loaded_in = run.wait_until(
      f'load version {run.version}',
      lambda: run.served_as(version=run.version) == run.version)
  run.label(CANARY)
  labelled_in = run.wait_until(
      f'serve labels/{CANARY} at version {run.version}',
      lambda: run.served_as(CANARY) == run.version)
  return cd_run.Check('canary', True,
                      f'labels/{CANARY} -> {run.version} after '
                      f'{time.monotonic() - start:.1f} s',
                      figures={'loaded_s': round(loaded_in, 2),
                               'labelled_s': round(labelled_in, 2)})


def promote(run: cd_run.Delivery, stable: Optional[int]) -> str:
  """stable -> V; canary removed; the old stable unloaded from `specific`."""
  run.label(STABLE)

  def finish(entry):
    entry.version_labels.pop(CANARY, None)
    specific = entry.model_version_policy.specific
    if (model_config.policy_of(entry) == 'specific' and stable is not None and
        stable in specific.versions and
        stable not in entry.version_labels.values()):
      specific.versions.remove(stable)
  run.edit_config(finish)
  run.log('cd_unlabel', label=CANARY, unloaded=stable)
  decision = f'PROMOTED: {STABLE} {stable} -> {run.version}, {CANARY} removed'
  try:
    run.wait_until(f'serve labels/{STABLE} at version {run.version}',
                   lambda: run.served_as(STABLE) == run.version)
  except InfraError as e:  # the config is right; the server will follow
    decision += f' (warning: {e})'
  return decision


def withdraw_canary(run: cd_run.Delivery, rejected: bool) -> None:
  """Removes the canary label, and V from a `specific` policy: always when V
  was rejected (unless another label needs it), else (an aborted run) only
  if this run added it."""
  proto = config_file.read(run.config_file)
  entry = config_file.entry(proto, run.model_name, run.config_file)
  labelled = entry.version_labels.get(CANARY) == run.version
  if labelled:
    del entry.version_labels[CANARY]
  listed = entry.model_version_policy.specific.versions
  unload = run.version in listed and (
      run.added_to_policy if not rejected else
      run.version not in entry.version_labels.values())
  if unload:
    listed.remove(run.version)
  if labelled or unload:  # else nothing to undo (infra check failed first)
    config_file.write(run.config_file, proto)
    run.remember_config()
    run.log('cd_unlabel', label=CANARY if labelled else None,
            unloaded=run.version if unload else None)


def roll_back(run: cd_run.Delivery, stable: Optional[int],
              reasons: List[str]) -> str:
  """Stable stays; V stops being served and is moved to .rolled-back."""
  withdraw_canary(run, rejected=True)
  if run.rest_url:  # let the server let go of V before its directory goes
    try:
      run.wait_until(f'drop labels/{CANARY}',
                     lambda: run.served_as(CANARY) != run.version)
    except InfraError as e:
      print(f'warning: {e}', file=sys.stderr)
  others = sorted(k for k, v in run.labels().items() if v == run.version)
  if others:
    run.log('cd_keep', reason=f'labels {others} still point at it')
    moved = f'kept on disk (labels {others} point at it)'
  else:
    versions.rollback(run.base, run.version)
    moved = f'moved to {versions.ROLLED_BACK_DIR}/'
  return (f'ROLLED BACK: {STABLE} stays {stable}, {CANARY} removed, version '
          f'{run.version} {moved}; because: {"; ".join(reasons)}')


def undo(run: cd_run.Delivery) -> None:
  """Puts the config file back as it was before the run, byte for byte;
  if someone else rewrote it meanwhile, removes only what this run added."""
  if run.written_config is None:
    return
  if run.config_is_ours():
    config_file.replace(run.config_file, run.original_config)
    run.log('cd_undo', config=run.config_file, restored=True)
  else:
    withdraw_canary(run, rejected=False)
