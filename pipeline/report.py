"""The paper's result tables and figures for one dataset, from the `metrics` and
`neggen_history` tables (paper §4: Tables 2, 4, 5, the §2.1 comparison; Figures 3, 6, 7).

Pure functions (pandas, numpy, scipy, matplotlib's Agg canvas; no Dagster): `build_report`
writes `report.md` and the PNG figures into a folder and returns the markdown, one long
table of every number shown (`report_tables`) and the figure paths.

Every number is from the test split in one evaluation mode, stated in each caption. A cell
is the mean ± sample standard deviation (ddof=1) over the seeds of the "main" study; the
p-value is a paired t-test over the seeds both models ran with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from neggen_model.atomic import atomic_path, write_bytes
from neggen_model.config import SWEPT_PARAMETERS, VARIANTS
from neggen_model.models.neggen import GRADIENT_COLUMNS
from neggen_model.models.sampler_baselines import SAMPLER_BASELINES
from pipeline.tables import METRICS, NEGGEN_HISTORY

METRICS_COLUMNS = (
    "model", "study", "seed", "split", "mode", "metric", "k", "value", "best_epoch", *SWEPT_PARAMETERS,
)
HISTORY_COLUMNS = ("model", "study", "seed", "epoch", *GRADIENT_COLUMNS.values())

NEGGEN = "neggen"
# Every model key the NegGen stage writes; any other model is a baseline of Table 2.
NEGGEN_VARIANTS = tuple(VARIANTS)
# The baselines in the paper's Table 2 order with its names; the negative-sampling ones are LightGCN
# trained with that sampler (the paper trains them on LightGCN).
BASELINE_LABELS = {"bpr": "BPR", "lightgcn": "LightGCN", "irgan": "IRGAN", "lightgcn_mixgcf": "MixGCF",
                   "lightgcn_dens": "DENS", "lightgcn_dns": "DNS(M,N)", "lightgcn_ahns": "AHNS", "vbpr": "VBPR",
                   "mmgcn": "MMGCN", "bm3": "BM3", "freedom": "FREEDOM", "dragon": "DRAGON", "diffmm": "DiffMM",
                   "lgmrec": "LGMRec"}
# (metric key in report_tables, metric, k, column header), in the paper's column order.
COLUMNS = (("recall@10", "recall", 10, "R@10"), ("recall@20", "recall", 20, "R@20"),
           ("ndcg@10", "ndcg", 10, "N@10"), ("ndcg@20", "ndcg", 20, "N@20"))
MODE_MEANING = {
    "mmrec": "full ranking over all items with each user's training items excluded (MMRec's protocol, comparable with the paper)",
    "strict": "full ranking over all items with each user's training and validation items excluded",
}
# Fig. 6 compares sources of negatives on LightGCN: uniform, each hard sampler, and NegGen without its
# causal module (as the paper does, §4.4). IRGAN is left out: its recommender is a matrix factorisation
# and its epochs follow a BPR-MF pre-training, so neither its base nor its convergence epoch compares.
FIG6_SOURCES = (("lightgcn", "uniform (LightGCN)"), *((m, BASELINE_LABELS[m]) for m in SAMPLER_BASELINES),
                ("wo_both", "uniform (NegGen w/o both)"), ("wo_cf", "generated (NegGen w/o CF)"),
                ("direct_wo_cf", "direct (NegGen w/o CF)"))
FIG6_METRICS = (("best_epoch", "convergence_epoch"), ("value", "ndcg@20"))  # (metrics column, report_tables metric)
# (column, axis label, log x-axis) of Fig. 7's panels.
FIG7_PARAMETERS = (("score_weight", "λ (score weight)", False),
                   ("counterfactual_weight", "β (counterfactual weight)", False),
                   ("align_weight", "α (alignment weight)", True),
                   ("temperature", "τ (temperature)", False))
FIGURE_FILES = {"fig6": "fig6_convergence.png", "fig7": "fig7_sensitivity.png", "fig3": "fig3_gradients.png"}
REPORT_FILE = "report.md"
TABLE_COLUMNS = ["table", "row", "model", "metric", "mode", "mean", "std", "n",
                 "compared_to", "improvement", "p_value", "n_pairs"]


@dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    reading: str
    rows: tuple[tuple[str, str], ...]  # (model, row label) in display order
    min_rows: int  # an ablation needs two of its variants to say anything
    compare: bool = False  # add the ΔImprov. and p-value rows (NegGen vs the best other row)


class Drawing(NamedTuple):
    figure: Figure
    title: str
    reading: str


@dataclass
class Report:
    markdown: str
    tables: pd.DataFrame  # every number shown, long format (TABLE_COLUMNS)
    figures: dict[str, Path]  # figure name ("fig3", "fig6", "fig7") → PNG, for those drawn
    path: Path  # report.md


def build_report(
    metrics: pd.DataFrame, history: pd.DataFrame | None, out_dir: Path, dataset: str, mode: str = "mmrec"
) -> Report:
    """Write report.md and the figures into `out_dir`; return them with the long table."""
    _require_columns(metrics, METRICS_COLUMNS, METRICS)
    if history is not None:
        _require_columns(history, HISTORY_COLUMNS, NEGGEN_HISTORY)
    if mode not in MODE_MEANING:
        raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {sorted(MODE_MEANING)}")
    test = metrics[(metrics.split == "test") & (metrics["mode"] == mode)]
    if test.empty:
        raise ValueError(f"metrics has no test rows in mode {mode!r} (modes present: {sorted(metrics['mode'].unique())})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    main = _main_runs(test)
    models = set(main.model)
    sections, frames, notes = [], [], []
    for spec in table_specs(models):
        present = [(model, label) for model, label in spec.rows if model in models]
        if len(present) < spec.min_rows:
            notes.append(f"{spec.title} omitted: it needs at least {spec.min_rows} of "
                         f"{', '.join(m for m, _ in spec.rows)}; present: {', '.join(m for m, _ in present) or 'none'}.")
            continue
        table = summarize(main, spec, present, mode)
        frames.append(table)
        sections.append(_table_markdown(spec, table, mode))

    convergence = convergence_points(main, mode)
    if isinstance(convergence, pd.DataFrame):
        frames.append(convergence)
    drawings = {"fig6": _figure_convergence(convergence, main, mode), "fig7": _figure_sensitivity(main, test, mode),
                "fig3": _figure_gradients(history)}
    figures, figure_sections = {}, []
    for name, drawing in drawings.items():
        path = out_dir / FIGURE_FILES[name]
        if isinstance(drawing, str):
            notes.append(drawing)
            path.unlink(missing_ok=True)  # a figure from an earlier report must not outlive its inputs
            continue
        with atomic_path(path) as tmp:
            FigureCanvasAgg(drawing.figure).print_png(tmp)
        figures[name] = path
        figure_sections.append(f"### {drawing.title}\n\n![{drawing.title}]({path.name})\n\n{drawing.reading}\n")

    seeds = ", ".join(str(s) for s in sorted(main.seed.unique()))
    markdown = "\n".join([
        f"# NegGen report: {dataset}\n",
        f"Evaluation mode `{mode}`: {MODE_MEANING[mode]}. Test split, scored once at each run's best "
        f"validation epoch. Main-study seeds: {seeds}.\n",
        "Each cell is the mean ± sample standard deviation (ddof=1) over seeds; `seeds` is how many. "
        "Per column, **bold** is the best mean and <u>underlined</u> the second best.\n",
        *sections,
        *(["## Figures\n", *figure_sections] if figure_sections else []),
        *(["## Not shown\n", *(f"- {note}" for note in notes), ""] if notes else []),
    ])
    report_path = out_dir / REPORT_FILE
    write_bytes(report_path, markdown.encode())
    tables = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)
    return Report(markdown=markdown, tables=tables, figures=figures, path=report_path)


def _require_columns(frame: pd.DataFrame, required: tuple[str, ...], name: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing required column(s): {', '.join(missing)}")


def _main_runs(test: pd.DataFrame) -> pd.DataFrame:
    """The main study's test rows, one per (model, seed, metric, k); duplicates are an error
    because averaging two runs of one seed would understate the spread over seeds."""
    main = test[test.study == "main"]
    key = ["model", "seed", "metric", "k"]
    duplicated = main[main.duplicated(key, keep=False)]
    if not duplicated.empty:
        sample = duplicated[key].drop_duplicates().head(5).to_dict("records")
        raise ValueError(f"metrics has more than one main-study test row per (model, seed, metric, k): {sample}")
    return main


def table_specs(models: set[str]) -> list[TableSpec]:
    # Known baselines in the paper's order, then any other model by name.
    baselines = [m for m in BASELINE_LABELS if m in models]
    baselines += sorted(m for m in models if m not in NEGGEN_VARIANTS and m not in BASELINE_LABELS)
    return [
        TableSpec("table2", "Table 2: overall performance",
                  "NegGen against the baselines (LightGCN is its base recommender; MixGCF, DENS, DNS(M,N) and AHNS "
                  "are LightGCN trained with that negative sampler) and against NegGen as printed "
                  "(eq. 19 on a frozen base: NegGen (paper)). ΔImprov. is NegGen's relative gain over the best "
                  "other model of each column; "
                  "p-val is a paired t-test (scipy ttest_rel) of NegGen against that model over the seeds both ran, "
                  "n = number of paired seeds (n/a below 2). The table after it gives both against every other row.",
                  tuple((m, BASELINE_LABELS.get(m, m)) for m in baselines)
                  + (("neggen_paper", "NegGen (paper)"), (NEGGEN, "NegGen")),
                  min_rows=1, compare=True),
        TableSpec("table4", "Table 4: modality ablation",
                  "NegGen with visual inputs only (V), textual inputs only (T) and both (V&T); "
                  "V&T above both single modalities means NegGen uses the modalities together (§4.3).",
                  (("visual_only", "V"), ("text_only", "T"), (NEGGEN, "V&T")), min_rows=2),
        TableSpec("table5", "Table 5: module ablation",
                  "NegGen without generated negatives (a uniformly drawn other item as each item's counterfactual), "
                  "without the causal part (no counterfactual term), and without both; a drop against NegGen is what "
                  "the removed part contributes (§4.5). \"fine-tuned base\" also trains LightGCN's embeddings "
                  "(NegGen keeps them as the base run left them).",
                  (("wo_neg", "w/o NEG"), ("wo_cf", "w/o CF"), ("wo_both", "w/o both"),
                   ("finetune", "fine-tuned base"), (NEGGEN, "NegGen")),
                  min_rows=2),
        TableSpec("section2_1", "§2.1: source of negatives",
                  "LightGCN with uniformly sampled negatives, NegGen trained on negatives written in one step "
                  "(Direct Generation) and NegGen on its generated (masked, then completed) negatives; the paper "
                  "finds direct negatives no better than uniform ones.",
                  (("lightgcn", "uniform (LightGCN)"), ("direct", "direct"), (NEGGEN, "generated (NegGen)")),
                  min_rows=2),
    ]


def summarize(main: pd.DataFrame, spec: TableSpec, present: list[tuple[str, str]], mode: str) -> pd.DataFrame:
    """One row per (table row, metric): mean, sample std, seed count. In a comparing table NegGen's
    row also holds the best other model (compared_to), NegGen's relative improvement over it and the
    paired p-value; every other row holds NegGen's improvement over it and p-value against it, with
    compared_to "neggen" (improvement and p-value are always NegGen's, against the pair's other model)."""
    rows = []
    for key, metric, k, _ in COLUMNS:
        values = _metric_rows(main, metric, k)
        by_model = {model: values[values.model == model].set_index("seed").value for model, _ in present}
        best_other = _best_other(by_model) if spec.compare else None
        for model, label in present:
            seeds = by_model[model]
            row = {"table": spec.key, "row": label, "model": model, "metric": key, "mode": mode,
                   "mean": seeds.mean(), "std": seeds.std(ddof=1), "n": len(seeds),
                   "compared_to": None, "improvement": np.nan, "p_value": np.nan, "n_pairs": 0}
            if model == NEGGEN and best_other is not None:
                row.update(_compare(seeds, by_model[best_other]), compared_to=best_other)
            elif spec.compare and NEGGEN in by_model and model != NEGGEN:
                row.update(_compare(by_model[NEGGEN], seeds), compared_to=NEGGEN)
            rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _best_other(by_model: dict[str, pd.Series]) -> str | None:
    others = {m: s.mean() for m, s in by_model.items() if m != NEGGEN}
    return max(others, key=others.get) if NEGGEN in by_model and others else None


def _compare(neggen: pd.Series, other: pd.Series) -> dict:
    paired = pd.concat([neggen.rename("neggen"), other.rename("other")], axis=1, join="inner")
    p_value = stats.ttest_rel(paired.neggen, paired.other).pvalue if len(paired) >= 2 else np.nan
    return {"improvement": neggen.mean() / other.mean() - 1, "p_value": float(p_value), "n_pairs": len(paired)}


def _table_markdown(spec: TableSpec, table: pd.DataFrame, mode: str) -> str:
    headers = [header for _, _, _, header in COLUMNS]
    cells = table.pivot(index="row", columns="metric", values="mean")
    marks = {key: _rank_marks(cells[key]) for key, *_ in COLUMNS}
    labels = list(dict.fromkeys(table.row))
    seeds = table.groupby("row").n.max()
    lines = [f"## {spec.title}\n", spec.reading + "\n",
             f"*Test split, `{mode}` mode; mean ± std over seeds.*\n",
             "| Model | seeds | " + " | ".join(headers) + " |",
             "|---|---:|" + "---:|" * len(headers)]
    for label in labels:
        row = table[table.row == label].set_index("metric")
        formatted = [marks[key][label].format(_mean_std(row.at[key, "mean"], row.at[key, "std"])) for key, *_ in COLUMNS]
        lines.append(f"| {label} | {seeds[label]} | " + " | ".join(formatted) + " |")
    compared = table[(table.model == NEGGEN) & table.compared_to.notna()].set_index("metric")
    if not compared.empty:
        lines.append("| ΔImprov. | | " + " | ".join(f"{compared.at[key, 'improvement']:+.2%}" for key, *_ in COLUMNS) + " |")
        lines.append("| p-val | | " + " | ".join(
            f"{_p_value(compared.at[key, 'p_value'])} (n={compared.at[key, 'n_pairs']})" for key, *_ in COLUMNS) + " |")
        names = dict(spec.rows)
        against = [names[compared.at[key, "compared_to"]] for key, *_ in COLUMNS]
        versus = against[0] if len(set(against)) == 1 else ", ".join(f"{h}: {a}" for h, a in zip(headers, against))
        lines.append(f"\nΔImprov. and p-val: NegGen against {versus}.")
        lines += ["", "NegGen against each other row: ΔImprov. (p-val, n paired seeds).", "",
                  "| NegGen vs | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
        for label in labels:
            row = table[(table.row == label) & (table.compared_to == NEGGEN)].set_index("metric")
            if not row.empty:
                lines.append(f"| vs {label} | " + " | ".join(
                    f"{row.at[key, 'improvement']:+.2%} ({_p_value(row.at[key, 'p_value'])}, n={row.at[key, 'n_pairs']})"
                    for key, *_ in COLUMNS) + " |")
    elif spec.compare:
        lines.append("\nΔImprov. and p-val need NegGen and another model in this table.")
    return "\n".join(lines) + "\n"


def _rank_marks(means: pd.Series) -> dict[str, str]:
    """Format string per row: best mean bold, second best underlined (ties share a mark)."""
    rank = means.rank(method="dense", ascending=False)
    return {row: "**{}**" if r == 1 else "<u>{}</u>" if r == 2 else "{}" for row, r in rank.items()}


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _p_value(p: float) -> str:
    return "n/a" if np.isnan(p) else f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _metric_rows(frame: pd.DataFrame, metric: str, k: int) -> pd.DataFrame:
    return frame[(frame.metric == metric) & (frame.k == k)]


def _errorbar_spread(values: pd.Series) -> float:
    return 0.0 if len(values) < 2 else float(values.std(ddof=1))


def convergence_points(main: pd.DataFrame, mode: str) -> pd.DataFrame | str:
    """Fig. 6's numbers, as report_tables rows (table "fig6"): per source of negatives present, the
    mean ± std over seeds of its convergence epoch (best validation epoch) and of its test NDCG@20; or
    why the figure is left out."""
    ndcg = _metric_rows(main, "ndcg", 20)
    present = [(m, label) for m, label in FIG6_SOURCES if m in set(ndcg.model)]
    if len(present) < 2:
        return (f"Fig. 6 omitted: it needs at least 2 of {', '.join(m for m, _ in FIG6_SOURCES)}; "
                f"present: {', '.join(m for m, _ in present) or 'none'}.")
    rows = []
    for model, label in present:
        runs = ndcg[ndcg.model == model]
        for column, metric in FIG6_METRICS:
            rows.append({"table": "fig6", "row": label, "model": model, "metric": metric, "mode": mode,
                         "mean": runs[column].mean(), "std": _errorbar_spread(runs[column]), "n": len(runs),
                         "compared_to": None, "improvement": np.nan, "p_value": np.nan, "n_pairs": 0})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _figure_convergence(points: pd.DataFrame | str, main: pd.DataFrame, mode: str) -> Drawing | str:
    """Fig. 6: convergence epoch against test NDCG@20 per source of negatives (convergence_points)."""
    if isinstance(points, str):
        return points
    figure = Figure(figsize=(7, 5), dpi=100)
    axes = figure.add_subplot()
    # Up to eight points: a marker each, so they stay apart in print without colour.
    markers = "osD^vP*X"
    for index, (label, point) in enumerate(points.groupby("row", sort=False)):
        at = point.set_index("metric")
        axes.errorbar(at.at["convergence_epoch", "mean"], at.at["ndcg@20", "mean"],
                      xerr=at.at["convergence_epoch", "std"], yerr=at.at["ndcg@20", "std"],
                      fmt=markers[index % len(markers)], markersize=7, capsize=4, label=f"{label} (n={at.at['ndcg@20', 'n']})")
    axes.set_xlabel("convergence epoch (best validation epoch)")
    axes.set_ylabel(f"test NDCG@20 ({mode})")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    reading = ("One point per source of negatives, all on LightGCN: uniform negatives, each hard negative sampler of "
               "Table 2 present, and NegGen without its causal module (as in §4.4); error bars are one std over seeds. "
               "Up and to the left is better: higher NDCG@20 reached in fewer epochs.")
    if "irgan" in set(main.model):
        reading += (" IRGAN is not shown: its recommender is a matrix factorisation whose epochs follow a BPR-MF "
                    "pre-training, so neither compares.")
    return Drawing(figure, "Fig. 6: negative quality (convergence epoch vs NDCG@20)", reading)


def _figure_sensitivity(main: pd.DataFrame, test: pd.DataFrame, mode: str) -> Drawing | str:
    """Fig. 7: test NDCG@20 and Recall@20 against λ, α and τ, one varied at a time."""
    sweep = test[(test.study == "sensitivity") & (test.model == NEGGEN)]
    if sweep.empty:
        return "Fig. 7 omitted: no sensitivity runs (study 'sensitivity', model 'neggen') in this mode."
    anchors = main[(main.model == NEGGEN) & main.seed.isin(sweep.seed.unique())]
    if anchors.empty:
        return "Fig. 7 omitted: no main-study neggen run of the sweep's seed(s) to give the default point."
    names = [name for name, _, _ in FIG7_PARAMETERS]
    defaults = anchors[names].drop_duplicates()
    if len(defaults) != 1:
        raise ValueError(f"main-study neggen runs of the sweep seeds disagree on the defaults: {defaults.to_dict('records')}")
    default = defaults.iloc[0]
    varied = pd.DataFrame({n: ~np.isclose(sweep[n], default[n], rtol=1e-9, atol=0) for n in names}, index=sweep.index)
    figure = Figure(figsize=(4.4 * len(FIG7_PARAMETERS), 4), dpi=100)
    for index, (name, label, log_x) in enumerate(FIG7_PARAMETERS):
        # A run belongs to a panel when it varies that parameter alone; the default point is shared.
        points = pd.concat([sweep[varied[name] & (varied.sum(axis=1) == 1)], anchors])
        axes = figure.add_subplot(1, len(FIG7_PARAMETERS), index + 1)
        for metric, metric_label in (("ndcg", "NDCG@20"), ("recall", "Recall@20")):
            curve = _metric_rows(points, metric, 20).groupby(name).value.agg(["mean", "std"]).sort_index()
            axes.errorbar(curve.index, curve["mean"], yerr=curve["std"].fillna(0), marker="o", capsize=3, label=metric_label)
        axes.axvline(default[name], color="grey", linestyle=":", linewidth=1)
        if log_x and points[name].nunique() > 1 and (points[name] > 0).all():  # log needs a range above 0
            axes.set_xscale("log")
        axes.set_xlabel(label)
        axes.set_ylabel(f"test metric ({mode})")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    seeds = ", ".join(str(s) for s in sorted(sweep.seed.unique()))
    mixed = sweep[varied.sum(axis=1) > 1].groupby(names).ngroups
    reading = (f"Each panel varies one hyper-parameter with the others at the defaults "
               f"(λ={default.score_weight:g}, β={default.counterfactual_weight:g}, α={default.align_weight:g}, "
               f"τ={default.temperature:g}; dotted line: "
               f"the main run of the same seed); seed(s) {seeds}. Error bars, where shown, are one std over seeds.")
    if mixed:
        reading += f" {mixed} sensitivity setting(s) varying more than one parameter are not plotted."
    return Drawing(figure, "Fig. 7: hyper-parameter sensitivity", reading)


def _figure_gradients(history: pd.DataFrame | None) -> Drawing | str:
    """Fig. 3: gradient magnitude of the negative's modality tokens per epoch."""
    runs = None if history is None else history[(history.model == NEGGEN) & (history.study == "main")]
    gradients = [(column, modality) for modality, column in GRADIENT_COLUMNS.items()]
    if runs is None or runs.empty or runs[[c for c, _ in gradients]].isna().all().all():
        return "Fig. 3 omitted: no neggen_history with gradient magnitudes for the main neggen runs."
    per_epoch = runs.groupby("epoch")[[c for c, _ in gradients]].mean()  # mean over the seeds still training
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    for column, label in gradients:
        if per_epoch[column].notna().any():
            axes.plot(per_epoch.index, per_epoch[column], label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean L2 norm of the loss gradient per pair")
    axes.legend(title="negative's modality")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return Drawing(figure, "Fig. 3: gradient magnitude of the negatives' modalities",
            f"Mean over {runs.seed.nunique()} seed(s) of the per-pair gradient norm with respect to the negative's "
            "text and visual tokens (epochs after a run stopped average fewer seeds). The paper finds textual "
            "gradients smaller than visual ones; by its Proposition 2 a smaller gradient means a higher NDCG lower bound.")
