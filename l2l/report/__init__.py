"""Every report l2l writes, in one package: the cells and JSON every table shares
(:mod:`~l2l.report.cells`), the figures (:mod:`~l2l.report.figures`), an evaluation's
``report.md``/``summary.json`` (:mod:`~l2l.report.evaluation`), the generalization study's
outputs (:mod:`~l2l.report.study`) and a sweep's aggregate (:mod:`~l2l.report.sweep`).
Nothing here needs wandb (:mod:`l2l.tracking` logs the same records there).
"""

from l2l.report.cells import (
    DASH,
    cell,
    dumps,
    finite,
    fmt,
    jsonable,
    mean_ci,
    sort_entries,
    verdict_line,
    verdict_text,
)
from l2l.report.evaluation import (
    entries_verdict,
    markdown_report,
    markdown_table,
    table_with_verdict,
    write_report,
)
from l2l.report.figures import (
    new_figure,
    palette,
    plot_curves,
    plot_meta_training,
    plot_tuning,
    save,
)

__all__ = ["DASH", "cell", "dumps", "entries_verdict", "finite",
           "fmt", "jsonable", "markdown_report", "markdown_table", "mean_ci", "new_figure",
           "palette", "plot_curves", "plot_meta_training", "plot_tuning", "save",
           "sort_entries", "table_with_verdict", "verdict_line", "verdict_text", "write_report"]
