"""``mammolens stats ...``: statistics on any table of scores (this model's or anyone's).

Each command reads CSV or Parquet, prints a table (stderr) or JSON (``--json``, stdout),
and turns bad input into a one-line error with exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from mammolens.commands._common import cli_errors, console, emit_json, out

app = typer.Typer(
    name="stats",
    help="Statistics for diagnostic-accuracy studies (ROC/AUC + DeLong, McNemar, thresholds, subgroups, MRMC, localisation).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

JSON_OPT = typer.Option(False, "--json", help="Print machine-readable JSON to stdout.")


def read_table(path: Path) -> Any:
    """Read a CSV or Parquet file into a DataFrame (errors name the file)."""
    import pandas as pd

    from mammolens.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"cannot read table ({type(e).__name__}: {e})") from None


def _need(df: Any, cols: list[str], path: Path) -> None:
    from mammolens.stats._validate import StatsInputError

    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise StatsInputError(f"{path}: missing column(s) {missing} (has {list(df.columns)})")


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) >= 1e-4 or x == 0 else f"{x:.2e}"
    return str(x)


def _kv_table(title: str, rows: dict[str, Any]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    for k, v in rows.items():
        t.add_row(k, _fmt(v))
    return t


def _df_table(title: str, df: Any) -> Table:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for row in df.itertuples(index=False):
        t.add_row(*[_fmt(v.item() if hasattr(v, "item") else v) for v in row])
    return t


def _show(obj: Any, json_out: bool, table: Table) -> None:
    if json_out:
        emit_json(obj)
    else:
        out.print(table)


# --------------------------------------------------------------------------- roc
@app.command("roc")
def roc(
    file: Path = typer.Argument(..., help="CSV or Parquet table with one row per case."),
    truth: str = typer.Option(..., "--truth", help="Truth column (0/1, or any two values with --positive)."),
    score: str = typer.Option(..., "--score", help="Score column (higher = more likely positive)."),
    positive: str | None = typer.Option(None, "--positive", help="Value of the truth column meaning positive."),
    ci: str = typer.Option("delong", "--ci", help="CI method: delong | delong_logit | bootstrap."),
    level: str = typer.Option("image", "--level", help="Roll images up first: image | breast | exam (max score, max truth)."),
    cluster: str | None = typer.Option(None, "--cluster", help="Cluster column (e.g. patient_id): clustered DeLong variance / cluster bootstrap."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples (--ci bootstrap)."),
    seed: int | None = typer.Option(0, "--seed", help="Bootstrap seed."),
    min_specificity: float | None = typer.Option(None, "--partial-specificity", help="Also report the partial AUC over specificity in [value, 1] (with McClish standardisation)."),
    json_out: bool = JSON_OPT,
) -> None:
    """AUC with a DeLong (or logit-DeLong, or bootstrap) confidence interval.

    Example: [bold]mammolens stats roc preds.csv --truth label --score score --level exam --cluster patient_id[/]
    """
    with cli_errors():
        from mammolens.stats import auc_ci
        from mammolens.stats._validate import check_choice, check_truth
        from mammolens.stats.levels import aggregate_scores

        check_choice(ci, ("delong", "delong_logit", "bootstrap"), name="--ci")
        check_choice(level, ("image", "breast", "exam"), name="--level")
        df = read_table(file)
        _need(df, [truth, score] + ([cluster] if cluster else []), file)
        if positive is not None:
            df = df.assign(**{truth: check_truth(df[truth], name=truth, positive=positive)})
            positive = None
        if level != "image":
            keep = [cluster] if cluster and cluster not in ("patient_id", "study_id") else []
            df = aggregate_scores(df, level=level, score=score, truth=truth, keep=keep)
        y = check_truth(df[truth], name=f"column {truth!r}")
        res = auc_ci(
            y, _scores(df, score), method=ci, alpha=alpha, n_boot=n_boot, seed=seed,
            clusters=None if cluster is None else df[cluster].to_numpy(),
        )
        d = res.to_dict() | {"level": level, "n": res.n_pos + res.n_neg}
        extra: dict[str, Any] = {}
        if min_specificity is not None:
            from mammolens.stats import partial_auc

            pa = partial_auc(y, _scores(df, score), min_specificity=min_specificity, mcclish=True)
            d |= {"partial_auc": pa.pauc, "partial_auc_mcclish": pa.standardized, "partial_auc_min_specificity": min_specificity}
            extra = {f"pAUC (spec >= {min_specificity:g})": pa.pauc, "pAUC McClish": pa.standardized}
        _show(d, json_out, _kv_table(f"ROC AUC ({score} vs {truth}, {level} level)", {
            "AUC": res.auc, f"{100 * (1 - alpha):g}% CI low": res.ci_low, f"{100 * (1 - alpha):g}% CI high": res.ci_high,
            "SE": res.se, "positives": res.n_pos, "negatives": res.n_neg, "method": res.method,
            **({"clusters": res.n_clusters} if res.n_clusters else {}), **extra,
        }))


def _scores(df: Any, col: str) -> Any:
    from mammolens.stats._validate import check_scores

    return check_scores(df[col], name=f"column {col!r}")


# --------------------------------------------------------------------------- compare
@app.command("compare")
def compare(
    file: Path = typer.Argument(..., help="CSV or Parquet table: one row per case, both scores on each row."),
    truth: str = typer.Option(..., "--truth", help="Truth column."),
    score: list[str] = typer.Option(..., "--score", help="Score column; give exactly two (A then B)."),
    positive: str | None = typer.Option(None, "--positive", help="Value of the truth column meaning positive."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level."),
    json_out: bool = JSON_OPT,
) -> None:
    """Paired DeLong test of two AUCs on the same cases (A - B).

    Example: [bold]mammolens stats compare preds.csv --truth label --score model --score baseline[/]
    """
    with cli_errors():
        from mammolens.stats import delong_test
        from mammolens.stats._validate import StatsInputError, check_truth

        if len(score) != 2:
            raise StatsInputError(f"--score must be given exactly twice (got {len(score)})")
        df = read_table(file)
        _need(df, [truth, *score], file)
        y = check_truth(df[truth], name=f"column {truth!r}", positive=positive)
        res = delong_test(y, _scores(df, score[0]), _scores(df, score[1]), alpha=alpha)
        d = res.to_dict() | {"score_a": score[0], "score_b": score[1]}
        _show(d, json_out, _kv_table(f"Paired DeLong test: {score[0]} vs {score[1]}", {
            f"AUC {score[0]}": res.auc_a, f"AUC {score[1]}": res.auc_b, "difference": res.difference,
            "CI low": res.ci_low, "CI high": res.ci_high, "SE": res.se, "z": res.z, "p-value": res.p_value,
            "positives": res.n_pos, "negatives": res.n_neg,
        }))


# --------------------------------------------------------------------------- mcnemar
@app.command("mcnemar")
def mcnemar(
    file: Path = typer.Argument(..., help="CSV or Parquet table: one row per case."),
    truth: str | None = typer.Option(None, "--truth", help="Truth column (compare correctness, or restrict with --subset)."),
    pred: list[str] = typer.Option([], "--pred", help="Binary decision column (0/1); give two."),
    score: list[str] = typer.Option([], "--score", help="Score column; give two, with two --threshold."),
    threshold: list[float] = typer.Option([], "--threshold", help="Threshold per --score (positive when score >= threshold)."),
    subset: str = typer.Option("all", "--subset", help="all | positives (sensitivity) | negatives (specificity); needs --truth."),
    method: str = typer.Option("auto", "--method", help="auto (exact when b+c < 25) | exact | chi2."),
    no_correction: bool = typer.Option(False, "--no-correction", help="Chi-square without continuity correction."),
    positive: str | None = typer.Option(None, "--positive", help="Value of the truth column meaning positive."),
    json_out: bool = JSON_OPT,
) -> None:
    """McNemar's test on paired binary decisions of A and B.

    Example: [bold]mammolens stats mcnemar preds.csv --truth label --score model --score baseline --threshold 0.5 --threshold 0.5[/]
    """
    with cli_errors():
        from mammolens.stats import apply_threshold, mcnemar_test
        from mammolens.stats._validate import StatsInputError, check_truth

        df = read_table(file)
        if pred and score:
            raise StatsInputError("give either two --pred or two --score (with --threshold), not both")
        if pred:
            if len(pred) != 2:
                raise StatsInputError(f"--pred must be given exactly twice (got {len(pred)})")
            _need(df, pred + ([truth] if truth else []), file)
            a = check_truth(df[pred[0]], name=f"column {pred[0]!r}")
            b = check_truth(df[pred[1]], name=f"column {pred[1]!r}")
            names = pred
        else:
            if len(score) != 2 or len(threshold) != 2:
                raise StatsInputError("give two --pred columns, or two --score columns and two --threshold values")
            _need(df, score + ([truth] if truth else []), file)
            a = apply_threshold(_scores(df, score[0]), threshold[0])
            b = apply_threshold(_scores(df, score[1]), threshold[1])
            names = score
        y = None if truth is None else check_truth(df[truth], name=f"column {truth!r}", positive=positive)
        res = mcnemar_test(a, b, y_true=y, subset=subset, method=method, correction=not no_correction)
        d = res.to_dict() | {"name_a": names[0], "name_b": names[1]}
        _show(d, json_out, _kv_table(f"McNemar: {names[0]} vs {names[1]} ({subset})", {
            f"b ({names[0]} only)": res.b, f"c ({names[1]} only)": res.c, "statistic": res.statistic,
            "p-value": res.p_value, "method": res.method, "cases": res.n,
        }))


# --------------------------------------------------------------------------- thresholds
@app.command("thresholds")
def thresholds(
    file: Path = typer.Argument(..., help="CSV or Parquet table: one row per case."),
    truth: str = typer.Option(..., "--truth", help="Truth column."),
    score: str = typer.Option(..., "--score", help="Score column."),
    threshold: list[float] = typer.Option([], "--threshold", help="Also report these fixed thresholds."),
    sens: str = typer.Option("0.8,0.85,0.9,0.95", "--sensitivities", help="Target sensitivities (comma-separated)."),
    spec: str = typer.Option("0.8,0.85,0.9,0.95", "--specificities", help="Target specificities (comma-separated)."),
    ci: str = typer.Option("wilson", "--ci", help="wilson | exact (Clopper-Pearson)."),
    positive: str | None = typer.Option(None, "--positive", help="Value of the truth column meaning positive."),
    out_csv: Path | None = typer.Option(None, "--out", help="Write the table to this CSV."),
    json_out: bool = JSON_OPT,
) -> None:
    """Sensitivity, specificity, accuracy, PPV, NPV (with CIs) at the Youden point, target operating points and fixed thresholds.

    Example: [bold]mammolens stats thresholds preds.csv --truth label --score score --out table1.csv[/]
    """
    with cli_errors():
        from mammolens.stats import threshold_table

        df = read_table(file)
        _need(df, [truth, score], file)
        tab = threshold_table(
            df[truth], _scores(df, score), thresholds=threshold or None,
            target_sensitivities=_floats(sens, "--sensitivities"), target_specificities=_floats(spec, "--specificities"),
            ci=ci, positive=positive,
        )
        if out_csv is not None:
            out_csv.parent.mkdir(parents=True, exist_ok=True)
            tab.to_csv(out_csv, index=False)
            console.print(f"wrote {out_csv}")
        if json_out:
            emit_json({"rows": tab.to_dict("records")})
        else:
            show = tab[["criterion", "threshold", "sensitivity", "specificity", "accuracy", "ppv", "npv"]]
            out.print(_df_table(f"Operating points ({score} vs {truth})", show))


def _floats(text: str, opt: str) -> list[float]:
    from mammolens.stats._validate import StatsInputError

    if not text.strip():
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise StatsInputError(f"{opt}: expected comma-separated numbers, got {text!r}") from None


# --------------------------------------------------------------------------- subgroups
@app.command("subgroups")
def subgroups(
    file: Path = typer.Argument(..., help="CSV or Parquet table: one row per case."),
    truth: str = typer.Option(..., "--truth", help="Truth column."),
    score: str = typer.Option(..., "--score", help="Score column."),
    by: list[str] = typer.Option(..., "--by", help="Grouping column (repeat for several analyses)."),
    bins: str | None = typer.Option(None, "--bins", help="Bin numeric --by columns at these edges, e.g. 50,60,70 (non-numeric columns are used as they are)."),
    min_n: int = typer.Option(10, "--min-n", help="Groups with fewer cases get no AUC (warning)."),
    positive: str | None = typer.Option(None, "--positive", help="Value of the truth column meaning positive."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level."),
    json_out: bool = JSON_OPT,
) -> None:
    """AUC per subgroup (DeLong CI) and Cochran's Q test of heterogeneity.

    Example: [bold]mammolens stats subgroups preds.csv --truth label --score score --by age --bins 50,60,70[/]
    """
    with cli_errors():
        from mammolens.stats import subgroup_analysis

        df = read_table(file)
        _need(df, [truth, score, *by], file)
        results = []
        import pandas as pd

        for col in by:
            numeric = pd.api.types.is_numeric_dtype(df[col])
            r = subgroup_analysis(
                df, truth=truth, score=score, by=col, bins=_floats(bins, "--bins") if bins and numeric else None,
                min_n=min_n, alpha=alpha, positive=positive,
            )
            results.append(r)
            if not json_out:
                out.print(_df_table(f"AUC by {col}", r.table.drop(columns=["se", "auc_q", "se_q"])))
                out.print(f"Cochran Q = {_fmt(r.q)}, df = {r.df}, p = {_fmt(r.p)}")
                for c in r.corrected:
                    out.print(f"  {c['group']}: in Q with a continuity correction (AUC {c['auc_used']:.4f}, SE {c['se_used']:.4f}): zero DeLong variance")
                for e in r.excluded:
                    out.print(f"  {e['group']}: not in Q ({e['reason']})")
            for w in r.warnings:
                console.print(f"[yellow]warning:[/] {w}")
        if json_out:
            emit_json(results[0].to_dict() if len(results) == 1 else {"analyses": [r.to_dict() for r in results]})


# --------------------------------------------------------------------------- mrmc
@app.command("mrmc")
def mrmc_cmd(
    file: Path = typer.Argument(..., help="Reader study in long (iMRMC) format: one row per reader x case x modality."),
    reader: str = typer.Option("reader", "--reader", help="Reader column."),
    case: str = typer.Option("case", "--case", help="Case column."),
    modality: str = typer.Option("modality", "--modality", help="Modality (treatment) column."),
    truth: str = typer.Option("truth", "--truth", help="Truth column (0/1, constant per case)."),
    score: str = typer.Option("score", "--score", help="Score / rating column."),
    method: str = typer.Option("or", "--method", help="or (Obuchowski-Rockette) | dbm (Dorfman-Berbaum-Metz)."),
    covariance: str = typer.Option("jackknife", "--covariance", help="OR covariance: jackknife | delong."),
    analysis: str = typer.Option("rrrc", "--analysis", help="rrrc | frrc | rrfc."),
    ai: Path | None = typer.Option(None, "--ai", help="Also compare a standalone AI: CSV/Parquet with the case column and an AI score column."),
    ai_score: str = typer.Option("score", "--ai-score", help="AI score column of --ai."),
    ai_modality: str | None = typer.Option(None, "--ai-modality", help="Modality whose reads the AI is compared with (default: the first)."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level."),
    json_out: bool = JSON_OPT,
) -> None:
    """Multi-reader multi-case ROC analysis (OR or DBM with Hillis ddf), optionally AI vs readers.

    Example: [bold]mammolens stats mrmc reads.csv --reader reader --case case --modality modality --truth truth --score score[/]
    """
    with cli_errors():
        from mammolens.stats import mrmc

        df = read_table(file)
        _need(df, [reader, case, modality, truth, score], file)
        res = mrmc(
            df, reader=reader, case=case, modality=modality, truth=truth, score=score,
            method=method, covariance=covariance, analysis=analysis, alpha=alpha,
        )
        avr = None
        if ai is not None:
            from mammolens.stats import ai_vs_readers

            ai_df = read_table(ai)
            _need(ai_df, [case, ai_score], ai)
            mods = sorted(df[modality].unique().tolist(), key=str)
            mval = mods[0] if ai_modality is None else _match_value(ai_modality, mods, modality)
            ai_map = ai_df[[case, ai_score]].rename(columns={ai_score: "__ai"})
            avr = ai_vs_readers(
                df, ai_map.rename(columns={"__ai": score}), reader=reader, case=case, truth=truth, score=score,
                modality=modality, modality_value=mval, covariance="delong" if covariance == "delong" else "jackknife",
                alpha=alpha,
            )
        if json_out:
            d = res.to_dict()
            if avr is not None:
                d["ai_vs_readers"] = avr.to_dict()
            emit_json(d)
            return
        wide = res.reader_aucs.pivot(index="reader", columns="modality", values="auc").reset_index()
        wide.columns = [str(c) for c in wide.columns]
        out.print(_df_table("AUC per reader", wide))
        out.print(_df_table("Reader-averaged AUC", res.modality_aucs))
        if len(res.comparisons):
            out.print(_df_table(f"Differences ({method.upper()}, {covariance}, {analysis.upper()})", res.comparisons))
            out.print(f"F = {_fmt(res.f)}, ndf = {_fmt(res.ndf, 0)}, ddf = {_fmt(res.ddf, 2)}, p = {_fmt(res.p_value)}")
        if avr is not None:
            out.print(_df_table("Each reader vs the AI (paired DeLong)", avr.per_reader))
            out.print(_kv_table("Reader average vs AI (OR, AI as a fixed reader)", {
                "AI AUC": avr.ai_auc, "reader-average AUC": avr.reader_mean_auc, "difference (readers - AI)": avr.difference,
                "CI low": avr.ci_low, "CI high": avr.ci_high, "df": avr.df, "p-value": avr.p_value,
            }))


def _match_value(text: str, values: list[Any], column: str) -> Any:
    """Map a CLI string onto a column value (``"1"`` matches the integer 1)."""
    from mammolens.stats._validate import StatsInputError

    for v in values:
        if str(v) == text:
            return v
    raise StatsInputError(f"column {column!r}: no value {text!r} (has {values})")


# --------------------------------------------------------------------------- localization
@app.command("localization")
def localization(
    predictions: Path = typer.Argument(..., help="Predictions table with image_id and a heatmap (.npz) column."),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest with lesion annotations (lesions column)."),
    kind: str = typer.Option("localization", "--kind", help="Heatmap kind: localization | attention | gradcam."),
    threshold: float = typer.Option(0.5, "--threshold", help="Binarisation threshold for Dice/IoU (heatmap >= T)."),
    tolerance: float = typer.Option(0.0, "--tolerance", min=0.0, help="Pointing game: a maximum within this many original pixels of the lesion is a hit (0 = strict; Zhang et al. use 15)."),
    heatmap_col: str = typer.Option("heatmap", "--heatmap-column", help="Column holding the .npz paths."),
    json_out: bool = JSON_OPT,
) -> None:
    """Pointing-game hit rate, Dice, IoU and FROC of heatmaps against malignant lesion annotations.

    Only malignant images with annotated lesions are scored; images whose heatmap or
    lesions cannot be read are listed and skipped (exit 3).

    Example: [bold]mammolens stats localization preds.csv --manifest manifest.csv --kind localization[/]
    """
    with cli_errors():

        from mammolens.commands._common import exit_with
        from mammolens.data.heatmap_io import heatmap_and_lesion_mask
        from mammolens.errors import EXIT_REJECTED
        from mammolens.stats import score_localization
        from mammolens.stats._validate import StatsInputError

        preds = read_table(predictions)
        man = read_table(manifest)
        _need(preds, ["image_id", heatmap_col], predictions)
        _need(man, ["image_id", "lesions", "label"], manifest)
        m = man[["image_id", "lesions", "label"]].merge(preds[["image_id", heatmap_col]], on="image_id", how="inner")
        m = m[(m["label"].astype(str).isin(["1", "1.0", "True"])) & m["lesions"].notna() & (m["lesions"].astype(str).str.strip() != "")]
        hms, masks, ids, skipped = [], [], [], []
        for r in m.itertuples(index=False):
            hp = getattr(r, heatmap_col)
            try:
                if not isinstance(hp, str) or not hp:
                    raise ValueError("no heatmap path")
                path = Path(hp)
                if not path.is_absolute():
                    path = predictions.parent / path
                hm, mask, _ = heatmap_and_lesion_mask(path, r.lesions, kind=kind, base_dir=manifest.parent)
                if mask is None:
                    continue
            except Exception as e:  # noqa: BLE001 - one bad image must not stop the others
                skipped.append({"image_id": r.image_id, "reason": f"{type(e).__name__}: {e}"})
                continue
            hms.append(hm)
            masks.append(mask)
            ids.append(r.image_id)
        if not ids:
            raise StatsInputError(f"{predictions}: no malignant image with annotated lesions and a readable heatmap")
        res = score_localization(hms, masks, threshold=threshold, tolerance=tolerance)
        hr, fr = res.hit_rate, res.froc
        rows = [{"image_id": i, **x} for i, x in zip(ids, res.per_image, strict=True)]
        d = {
            "kind": kind, "threshold": threshold, "tolerance": tolerance, "n_images": res.n_images,
            "hit_rate": hr.value, "hit_rate_ci_low": hr.ci_low, "hit_rate_ci_high": hr.ci_high,
            "dice_mean": res.dice_mean, "dice_median": res.dice_median, "iou_mean": res.iou_mean,
            "froc": {"sensitivity_at_fps": {f"{k:g}": v for k, v in fr.at_fps.items()}, "cpm": fr.cpm, "n_lesions": fr.n_lesions},
            "per_image": rows, "skipped": skipped,
        }
        if json_out:
            emit_json(d)
        else:
            out.print(_kv_table(f"Localisation ({kind} heatmaps, {len(rows)} images)", {
                "pointing hit rate": hr.value, "  95% CI low": hr.ci_low, "  95% CI high": hr.ci_high,
                f"Dice mean (T={threshold:g})": d["dice_mean"], "IoU mean": d["iou_mean"],
                **{f"FROC sens @ {k:g} FP/img": v for k, v in fr.at_fps.items()}, "FROC CPM": fr.cpm,
            }))
        for s in skipped:
            console.print(f"[yellow]skipped[/] {s['image_id']}: {s['reason']}")
        if skipped:
            exit_with(EXIT_REJECTED)
