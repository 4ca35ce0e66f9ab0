"""Screenshots of the web UI's main pages, for docs/ui/ (README "See it").

    .venv/bin/python docs/ui_screenshots.py                    # outputs/taxi/replay
    .venv/bin/python docs/ui_screenshots.py --replay /tmp/ct --out docs/ui \
        --model-config-file /tmp/ct/models.config

Starts `python -m ui --replay DIR --port 0` as a user would, opens each page
in Debian's chromium (Playwright, /usr/bin/chromium) and saves a PNG per
page; a page that answers anything but 200, or logs a console error, stops
the script (exit 1). Make the replay first: `make replay ARGS='--spans 1-4'`.
"""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from project import cli  # pylint: disable=wrong-import-position

CHROMIUM = '/usr/bin/chromium'
PAGES = (('overview', '/'), ('runs', '/runs'), ('data', '/data'),
         ('models', '/models'), ('serving', '/serving'))


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                              epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--replay', default=os.path.join(REPO, 'outputs', 'taxi',
                                                       'replay'),
                      help='a replay directory (default: %(default)s)')
  parser.add_argument('--out', default=os.path.join(REPO, 'docs', 'ui'),
                      help='where the PNGs go (default: %(default)s)')
  parser.add_argument('--model-config-file', default=None,
                      help='a model config whose labels the serving page '
                      'shows (python -m delivery.versions write-config)')
  args = parser.parse_args(argv)
  if not os.path.isdir(args.replay):
    parser.error(f'--replay {args.replay}: no such directory (make replay)')
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  server = subprocess.Popen(
      [sys.executable, '-m', 'ui', '--replay', args.replay, '--port', '0',
       '--log-file', os.path.join(args.replay, 'ui.log')]
      + (['--model-config-file', args.model_config_file]
         if args.model_config_file else []),
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    first = server.stdout.readline()
    match = re.search(r'http://127\.0\.0\.1:\d+', first)
    if not match:
      print(f'the UI did not start: {first}', file=sys.stderr)
      return 1
    pages = list(PAGES)
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=CHROMIUM,
                                  args=['--no-sandbox'])
      page = browser.new_page(viewport={'width': 1280, 'height': 900})
      problems = []
      page.on('console', lambda m: problems.append(m.text)
              if m.type == 'error' else None)
      page.goto(match.group(0) + '/serving')
      served = page.query_selector('#versions tr[data-version] a')
      if served is not None:  # the newest version's lineage, drawn
        pages.append(('lineage', served.get_attribute('href')))
      for name, path in pages:
        response = page.goto(match.group(0) + path)
        if response.status != 200 or problems:
          print(f'{path}: {response.status} {problems}', file=sys.stderr)
          return 1
        target = os.path.join(args.out, f'{name}.png')
        if name == 'lineage':  # wider than the window: widen it to fit
          width = page.eval_on_selector('svg.lineage', 'e => e.scrollWidth')
          page.set_viewport_size({'width': width + 60, 'height': 900})
        page.screenshot(path=target, full_page=name != 'data')
        print(f'{path:<28} -> {os.path.relpath(target)}')
      browser.close()
  finally:
    server.terminate()
    server.wait(timeout=30)
  return 0


if __name__ == '__main__':
  sys.exit(main())
