"""Report stage: the paper's tables and figures for one dataset (pipeline/report.py).

Writes `<home>/<dataset>/report/report.md` with its PNG figures, and `report_tables.parquet`
(every number shown, long format). Inputs: `metrics` and, when the NegGen stage wrote it,
`neggen_history` (for the gradient figure).
"""

import base64
from pathlib import Path

import dagster as dg

from assets.partitions import dataset_of, dataset_partitions
from assets.resources import NeggenResource
from pipeline import tables
from pipeline.report import build_report



def _inline_png(path: Path) -> str:
    """A data URI: the Dagster UI renders images in markdown metadata only when embedded."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dg.asset(
    name=tables.REPORT,
    partitions_def=dataset_partitions,
    group_name="report",
    kinds={"parquet", "matplotlib"},
    deps=[tables.METRICS],
    description="The paper's Tables 2, 4, 5 and the §2.1 comparison (test split, mmrec mode, mean ± std "
    "over seeds; Table 2: NegGen's paired t-test against the best other model and against every other row) "
    "and Figures 3, 6 (a point per source of negatives: uniform, each hard sampler, NegGen's), 7, as "
    "report/report.md with PNGs, and every number (Fig. 6's too) in report_tables.parquet. Variants not "
    "yet trained are left out, with a note.",
)
def report(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    dataset = dataset_of(context)
    store = neggen.store(dataset)
    history = store.read(tables.NEGGEN_HISTORY) if store.table_path(tables.NEGGEN_HISTORY).exists() else None
    result = build_report(store.read(tables.METRICS), history, store.folder(tables.REPORT), dataset)
    tables_path = store.write(tables.REPORT_TABLES, result.tables)
    images = {name: _inline_png(path) for name, path in result.figures.items()}
    # The markdown links its figures by relative path; inline them so the UI shows the whole report.
    markdown = result.markdown
    for name, path in result.figures.items():
        markdown = markdown.replace(f"]({path.name})", f"]({images[name]})")
    context.log.info(f"report for {dataset}: {result.path} ({len(result.tables)} numbers, figures: "
                     f"{', '.join(result.figures) or 'none'})")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "path": dg.MetadataValue.path(str(result.path)),
            "tables_path": dg.MetadataValue.path(str(tables_path)),
            "tables": ", ".join(sorted(result.tables.table.unique())) or "none",
            **{name: dg.MetadataValue.md(f"![{name}]({uri})") for name, uri in images.items()},
        }
    )
