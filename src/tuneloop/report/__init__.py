"""The HTML report's presentation: pure plotting functions (``plots``: plain numbers in, an
inline SVG string out) and the page (``page``: sections, tables and plots rendered with the
packaged Jinja2 template into one self-contained HTML file). Nothing here reads the store;
``tuneloop.workflows.report`` gathers a run's numbers and calls these.
"""
