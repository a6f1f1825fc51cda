"""The card templates (jinja2). A package only so that setuptools ships the .j2 files with it."""
