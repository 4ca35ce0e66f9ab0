"""What every HTML page the project makes shares: the rule that escapes it,
and the policy that forbids it scripts.

Two roles write HTML, the web UI (ui/pages.py, served) and the model card
(components/model_card.py, a file opened from disk), and neither may import
the other (tests/test_layers.py), so the rule and the policy are here, once.
Every value on those pages comes from ML Metadata, artifacts or
configuration nobody reads before the page shows it, so:

* `autoescape`: every `.html` and `.html.j2` template is escaped (Jinja2's
  `select_autoescape(['html'])` matches the last extension only, so it
  left `model_card.html.j2` unescaped); Markdown and text templates are not.
* `CONTENT_SECURITY_POLICY`: no scripts, nothing from a network, inline
  styles only. The UI sends it as a header (ui/server.py); the card, which
  no server sends, states `META_CONTENT_SECURITY_POLICY` in a <meta>
  element: the same policy less `frame-ancestors`, which a <meta> policy
  cannot carry (browsers ignore it there with a console error).
"""

import jinja2

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
META_CONTENT_SECURITY_POLICY = '; '.join(
    d for d in CONTENT_SECURITY_POLICY.split('; ')
    if not d.startswith('frame-ancestors'))

HTML_EXTENSIONS = ('html', 'htm', 'html.j2')

autoescape = jinja2.select_autoescape(
    enabled_extensions=HTML_EXTENSIONS, disabled_extensions=(),
    default_for_string=True, default=False)
