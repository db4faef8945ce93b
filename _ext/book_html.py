"""Small fixes to the HTML so that every page loads with no JavaScript error and no request off the machine.

* Sphinx 7.4 emits an inline script twice when an extension adds it after the builder started
  (sphinx-thebe's `const THEBE_JS_URL = ...`, sphinx-togglebutton's selector): the second copy is a
  SyntaxError in the browser. Drop exact duplicates from each page's script list.
* matplotlib's kernel-free players (``pclib.plotting.player``) link Font Awesome 4 from a CDN for their
  button icons; the theme already ships Font Awesome, so the book drops that link and works offline.
  (In Jupyter and on Colab the notebook output keeps it.)

The browser test (browser_tests/test_html.py) fails if either comes back.
"""

from __future__ import annotations

import re

FONT_AWESOME_CDN = re.compile(r'<link[^>]+href="https://maxcdn\.bootstrapcdn\.com/font-awesome/[^"]*"[^>]*>\s*')


def _tidy(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for js in scripts:
            key = (getattr(js, "filename", None) or "", tuple(sorted((getattr(js, "attributes", {}) or {}).items())))
            if key not in seen:
                seen.add(key)
                unique.append(js)
        scripts[:] = unique
    if "body" in context:
        context["body"] = FONT_AWESOME_CDN.sub("", context["body"])


def setup(app):
    app.connect("html-page-context", _tidy, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
