"""``mammolens cv``: patient-level k-fold cross-validation through train and predict."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import (
    cli_errors,
    config_option,
    console,
    device_option,
    emit_json,
    json_option,
    model_option,
    quiet_option,
    set_option,
)


def cv(
    manifest: Path = typer.Argument(..., help="Manifest with a 0/1 label for every image (its split column is ignored)."),
    cache: Path = typer.Option(..., "--cache", "-c", help="Cache folder written by `mammolens preprocess`, holding every image."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: folds, runs, predictions, oof_seed<S>.csv, cv.json (resumed if it exists)."),
    config: str = config_option("mias"),
    folds: int = typer.Option(5, "--folds", "-k", help="Number of patient-level, stratified folds."),
    seeds: str = typer.Option("0", "--seeds", help="Fold-assignment seeds, comma-separated: 0,1,2."),
    val: float = typer.Option(0.15, "--val", help="Share of each fold's training patients used for validation (early stopping)."),
    model: str = model_option(),
    set_: list[str] = set_option(),
    no_heatmaps: bool = typer.Option(False, "--no-heatmaps", help="Do not write heatmaps (no localisation hit rates)."),
    device: str = device_option(),
    json_out: bool = json_option("cv.json"),
    quiet: bool = quiet_option(),
) -> None:
    """Cross-validate a configuration: train each fold, predict its held-out women, pool.

    Each fold is trained with `mammolens train` and scored with `mammolens predict`; the
    pooled out-of-fold table DIR/oof_seed<S>.csv is read by `mammolens evaluate`. The
    leakage check runs before every fold; finished folds are skipped on a rerun.

    Example:

        mammolens cv mias.csv --cache cache_1024x832 --config mias --folds 5 --seeds 0,1,2 --out cv_mias
    """
    from mammolens.cv import cross_validate

    with cli_errors():
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise typer.BadParameter(f"--seeds must be integers separated by commas, got {seeds!r}") from None

        def on_fold(rec: dict) -> None:
            if json_out:
                return
            t = rec.get("test") or {}
            auc = "n/a" if t.get("auc") is None else f"{t['auc']:.3f}"
            tag = " (done before)" if rec.get("resumed") else f" in {rec.get('seconds', 0):.0f} s"
            console.print(f"cv: seed {rec['seed']} fold {rec['fold']}: test AUC {auc} on {rec['n_test']} image(s){tag}")

        res = cross_validate(
            manifest, cache, out=out, config=config, folds=folds, seeds=seed_list, val=val,
            overrides=list(set_), model=model or None, heatmaps=not no_heatmaps, device=device,
            progress=not quiet and not json_out, on_fold=on_fold,
        )
    d = res.to_dict()
    if json_out:
        emit_json(d)
        return
    for s, v in d["per_seed"].items():
        p = v["pooled"]
        auc = "n/a" if p.get("auc") is None else f"{p['auc']:.3f} (95% CI {p['ci_low']:.3f}-{p['ci_high']:.3f}, patient-clustered DeLong)"
        loc = (v.get("localization") or {}).get("malignant_images") or {}
        hit = f"; malignant images localised {loc['hits']}/{loc['n']}" if loc.get("n") else ""
        gone = (v.get("localization") or {}).get("heatmaps_missing") or []
        if gone:
            hit += f"; [yellow]{len(gone)} annotated image(s) without a readable heatmap, not counted ({', '.join(gone[:5])})[/]"
        fm = v.get("fold_auc_mean")
        folds_txt = "" if fm is None else f"; mean of the folds' AUCs {fm:.3f}" + ("" if v.get("fold_auc_sd") is None else f" (SD {v['fold_auc_sd']:.3f})")
        console.print(f"cv: seed {s}: pooled out-of-fold AUC {auc} on {p['n']} image(s){folds_txt}{hit}\n  {v['oof']}")
    console.print(f"cv: {out / 'cv.json'}")


def cv_compare(
    a: Path = typer.Argument(..., help="A `mammolens cv` output folder."),
    b: Path = typer.Argument(..., help="Another one (or the same folder, with --score-b naming another column)."),
    score_a: str = typer.Option("score", "--score-a", help="Score column of A's oof_seed<S>.csv."),
    score_b: str = typer.Option("score", "--score-b", help="Score column of B's oof_seed<S>.csv."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the comparison as JSON to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON to stdout."),
) -> None:
    """Paired DeLong test of two cross-validations on the same out-of-fold images, per seed.

    Example:

        mammolens cv-compare cv_mias cv_mias_random --out imagenet_vs_random.json
    """
    from mammolens.cv import compare_cv
    from mammolens.jsonio import write_json

    with cli_errors():
        res = compare_cv(a, b, score_a=score_a, score_b=score_b)
        if out is not None:
            write_json(out, res)
    if json_out:
        emit_json(res)
        return
    for seed, r in res["seeds"].items():
        console.print(
            f"seed {seed}: AUC {r['auc_a']:.3f} vs {r['auc_b']:.3f} on {r['n']} images: difference "
            f"{r['difference']:+.3f} (95% CI {r['diff_ci'][0]:+.3f} to {r['diff_ci'][1]:+.3f}), p = {r['p_value']:.3g}"
        )
