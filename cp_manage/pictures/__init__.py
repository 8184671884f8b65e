"""Pictures of a model's versions: the self-contained HTML report and its inline SVG charts.

Pure rendering: ``cp_manage.manage.history`` reads what to draw from git; these modules turn
it into text (no network, no script, no file outside the one written). ``page`` assembles the
document, ``chart`` draws a series across versions, ``timeline`` draws the stage history, and
``svg`` holds what they share (styles, markers, ticks, label thinning).
"""
