"""``mammolens stats ...``: statistics on any table of scores (this model's or anyone's).

Each command reads CSV or Parquet, prints a table (stderr) or JSON (``--json``, stdout),
and turns bad input into a one-line error with exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from mammolens.commands._common import cli_errors, emit_json, out

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
        _show(d, json_out, _kv_table(f"ROC AUC ({score} vs {truth}, {level} level)", {
            "AUC": res.auc, f"{100 * (1 - alpha):g}% CI low": res.ci_low, f"{100 * (1 - alpha):g}% CI high": res.ci_high,
            "SE": res.se, "positives": res.n_pos, "negatives": res.n_neg, "method": res.method,
            **({"clusters": res.n_clusters} if res.n_clusters else {}),
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
