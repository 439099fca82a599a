"""The end-to-end demo: the whole study on a synthetic cohort, on a CPU, in minutes.

Stages (each writes a file under ``OUT``; a rerun skips the stages already finished)::

    synth      OUT/synth/manifest.csv        synthetic MG DICOM cohort + annotations
    ingest     OUT/manifest.csv              dicom adapter, annotations joined (+ QC table)
    preprocess OUT/cache/                    crop, flip, resize (+ QC table)
    split      OUT/manifest_split.csv        train / val / test by patient
    pretrain   OUT/runs/patch_backbone.pt    backbone pretrained on lesion/background patches
                                             of the training images (Shen et al. 2019)
    train      OUT/runs/{attention,baseline}/ tiny preset, CPU
    predict    OUT/predictions/{attention,baseline}.csv (+ heatmaps, overlays)
    readers    OUT/reads.csv                 simulated reader study (unaided, then aided)
    evaluate   OUT/evaluation/results.json, report.html

``OUT/demo.json`` records each finished stage with its time and output, and at the end the
headline numbers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammolens.errors import MammolensError
from mammolens.progress import callback_bar

STAGES = ("synth", "ingest", "preprocess", "split", "pretrain", "train_attention", "train_baseline", "predict", "readers", "evaluate")

#: the bar the attention model must reach on the synthetic test split (image-level AUC)
TARGET_AUC = 0.90

#: cohort settings of the demo. Measured (120 patients, seed 0, tiny preset, 256x208):
#: at the synthesiser's defaults (conspicuity 1.0, prevalence 0.3: 32 malignant training
#: images) the tiny model does not learn in the demo's budget (val AUC <= 0.54, test AUC
#: 0.53, with or without patch pretraining); with lesion contrast x2 and half the exams
#: malignant (68 malignant training images) it reaches test AUC 0.92 (image level).
DEMO_CONSPICUITY = 2.0
DEMO_PREVALENCE = 0.5
#: (val, test) fractions of patients
DEMO_SPLIT = (0.15, 0.25)


def _cpu_seconds() -> float:
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class DemoError(MammolensError):
    """A demo stage failed (the message names the stage and the reason)."""


@dataclass
class DemoResult:
    out: Path
    report: Path
    results: Path
    headline: dict[str, Any]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "report": str(self.report), "results": str(self.results),
                "headline": self.headline, "seconds": round(self.seconds, 1),
                "stage_seconds": {k: round(v, 1) for k, v in self.stage_seconds.items()}, "skipped": self.skipped}


class _State:
    """OUT/demo.json: the finished stages (name -> {seconds, output, params})."""

    def __init__(self, out: Path, params: dict[str, Any]) -> None:
        self.path = out / "demo.json"
        self.params = params
        self.data: dict[str, Any] = {"params": params, "stages": {}}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("params") == params:
                self.data = old
            # different parameters: start over (stale stage records are dropped)

    def done(self, stage: str) -> bool:
        rec = self.data["stages"].get(stage)
        return bool(rec) and all(Path(p).exists() for p in rec.get("outputs", []))

    def mark(self, stage: str, seconds: float, outputs: list[Path], **extra: Any) -> None:
        self.data["stages"][stage] = {"seconds": round(seconds, 2), "outputs": [str(p) for p in outputs], **extra}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def _reader_cases(pred_csv: Path, manifest: Path, *, split: str) -> Any:
    """Exam-level cases for the reader study: truth, AI exam score, heatmap hit (any malignant image)."""
    import pandas as pd

    from mammolens.data.manifest import read_manifest
    from mammolens.evaluate.inputs import join_predictions, level_table, load_predictions
    from mammolens.evaluate.sections.interpretability import localisation_section

    preds, src = load_predictions(pred_csv)
    base = pred_csv.resolve().parent
    for c in ("heatmap", "overlay"):
        if c in preds.columns:
            preds[c] = [p if (not isinstance(p, str) or not p or Path(p).is_absolute()) else str(base / p) for p in preds[c].astype(object).where(preds[c].notna(), "")]
    man = read_manifest(manifest)
    j, _ = join_predictions(preds, man, source=src)
    j = j[(j["split"] == split) & j["label"].notna()]
    ex = level_table(j, "exam")
    ex = ex[ex["label"].notna()]
    cases = pd.DataFrame({"case": ex["study_id"].astype(str), "truth": ex["label"].astype(int), "ai_score": ex["score"].astype(float)})
    img = j.copy()
    img["label"] = img["label"].astype(int)
    _, loc = localisation_section(img, kind=None, base_dir=manifest.resolve().parent)
    if len(loc):
        hits = img[["image_id", "study_id"]].merge(loc[["image_id", "hit"]], on="image_id").groupby("study_id")["hit"].max()
        cases["heatmap_hit"] = cases["case"].map(hits.astype(float).to_dict())
    return cases


def _train_model(kind: str, params: dict[str, Any], ov: dict[str, Any], man_split: Path, cache_dir: Path, run: Path, *,
                 config: str, progress: bool) -> tuple[list[Path], dict[str, Any]]:
    """Train (or resume) one of the demo's two models; the stage's outputs and record."""
    import shutil

    from mammolens.train.api import train

    stamp = run.parent / f"{kind}.params.json"
    want = json.dumps({**params, "overrides": ov}, sort_keys=True, default=str)
    same = stamp.exists() and stamp.read_text() == want
    resume = same and (run / "checkpoints" / "last.ckpt").exists()
    if run.exists() and not resume:
        shutil.rmtree(run)  # unfinished, or trained with other settings: start again
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want)
    res = train(man_split, cache_dir, config=config, out=run, model=kind, overrides=dict(ov),
                resume=resume, device="cpu", progress=progress)
    if res.best_checkpoint is None:
        raise DemoError(f"training the {kind} model produced no checkpoint (status {res.status})")
    return [res.best_checkpoint], {"best_val_auc": res.best_val_auc, "epochs": res.epochs_run}


def _train_child(kind: str, params: dict[str, Any], ov: dict[str, Any], manifest: str, cache: str, run: str, config: str,
                 result: str, start_method: str | None = None) -> None:
    """Entry point of the second training process: the stage's record, or the error, as JSON."""
    import multiprocessing as mp

    # a spawned process inherits "spawn" as its default start method, and the DataLoader
    # would then spawn its worker afresh every epoch (a new interpreter importing torch:
    # seconds each time); give the child the parent's default (fork on Linux) back
    if start_method:
        mp.set_start_method(start_method, force=True)
    t0 = time.perf_counter()
    try:
        outputs, extra = _train_model(kind, params, ov, Path(manifest), Path(cache), Path(run), config=config, progress=False)
        rec: dict[str, Any] = {"outputs": [str(p) for p in outputs], "extra": extra}
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which names the stage
        rec = {"error": f"{type(e).__name__}: {e}"}
    rec["cpu_seconds"] = _cpu_seconds()
    rec["seconds"] = time.perf_counter() - t0
    Path(result).write_text(json.dumps(rec, default=str))


class _TrainProcess:
    """One demo model trained in a child process (spawned: a clean torch, its own thread)."""

    def __init__(self, *, kind: str, params: dict[str, Any], overrides: dict[str, Any], manifest: Path, cache: Path,
                 run: Path, config: str) -> None:
        import multiprocessing as mp

        self.kind = kind
        self.result = run.parent / f"{kind}.result.json"
        self.result.parent.mkdir(parents=True, exist_ok=True)
        self.result.unlink(missing_ok=True)
        self.proc = mp.get_context("spawn").Process(
            target=_train_child, name=f"mammolens-demo-train-{kind}",
            args=(kind, params, overrides, str(manifest), str(cache), str(run), config, str(self.result), mp.get_start_method()))
        self.proc.start()

    def wait(self) -> tuple[list[Path], dict[str, Any]]:
        self.proc.join()
        try:
            rec = json.loads(self.result.read_text())
        except (OSError, ValueError):
            raise DemoError(f"the {self.kind} training process ended without a result (exit status {self.proc.exitcode})") from None
        finally:
            self.result.unlink(missing_ok=True)
        if "error" in rec:
            raise DemoError(f"training the {self.kind} model failed: {rec['error']}")
        # the child's own CPU time (the parent's counter does not see a running child)
        return [Path(p) for p in rec["outputs"]], {**rec["extra"], "cpu_seconds_process": round(rec["cpu_seconds"], 2),
                                                   "seconds_process": round(rec["seconds"], 1), "parallel": True}

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)


def run_demo(
    out: str | Path = "demo_out",
    *,
    patients: int = 120,
    seed: int = 0,
    size: tuple[int, int] = (256, 208),
    workers: int = 2,
    max_epochs: int | None = None,
    n_readers: int = 5,
    config: str = "tiny",
    overrides: dict[str, Any] | None = None,
    patch_pretrain: bool = False,
    patch_epochs: int = 6,
    conspicuity: float = DEMO_CONSPICUITY,
    prevalence: float = DEMO_PREVALENCE,
    split_fractions: tuple[float, float] = DEMO_SPLIT,
    parallel_train: bool = True,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoResult:
    """Run (or resume) the whole study on a synthetic cohort.

    Parameters
    ----------
    out
        Output folder; a rerun with the same parameters resumes and skips finished stages.
    patients
        Synthetic patients (one screening exam of four views each).
    seed
        Seed of the cohort, the split, training and the reader simulation.
    size
        Cache image size ``(H, W)``.
    workers
        Preprocessing processes.
    max_epochs
        Override the preset's ``train.max_epochs`` (None: the preset's).
    n_readers
        Synthetic readers in the reader study.
    config
        Training preset (``tiny`` on CPU).
    overrides
        Extra dotted training overrides (e.g. ``{"data.batch_size": 8}``).
    conspicuity, prevalence
        Lesion contrast multiplier and share of malignant exams of the synthetic cohort
        (see :func:`mammolens.data.synthetic.synthesize_cohort`).
    split_fractions
        ``(val, test)`` fractions of patients.
    parallel_train
        Train the baseline in a second process while the attention model trains (when
        the machine has two or more cores); the results are the same either way.
    patch_pretrain, patch_epochs
        Pretrain the backbone on lesion vs background patches cut from the training
        images' annotations (Shen et al. 2019, Sci Rep 9:12495) and start both models
        from it; without it a tiny model trained from scratch on a few hundred images
        learns slowly.
    log
        Where stage messages go (the CLI prints them with rich).
    progress
        Show the stages' own progress bars.

    Returns
    -------
    DemoResult
    """
    from mammolens.data.manifest import read_manifest, write_manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ov: dict[str, Any] = {"train.seed": seed, **(overrides or {})}
    if max_epochs is not None:
        ov["train.max_epochs"] = int(max_epochs)
    params = {"patients": patients, "seed": seed, "size": list(size), "config": config, "overrides": dict(ov), "n_readers": n_readers,
              "patch_pretrain": patch_pretrain, "patch_epochs": patch_epochs, "conspicuity": conspicuity,
              "prevalence": prevalence, "split": list(split_fractions)}
    state = _State(out, params)
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    skipped: list[str] = []

    synth_dir = out / "synth"
    man_ingest = out / "manifest.csv"
    cache_dir = out / "cache"
    man_split = out / "manifest_split.csv"
    man_eval = out / "manifest_eval.csv"
    runs = {"attention": out / "runs" / "attention", "baseline": out / "runs" / "baseline"}
    preds = {k: out / "predictions" / f"{k}.csv" for k in runs}
    reads_csv = out / "reads.csv"
    patch_weights = out / "runs" / "patch_backbone.pt"
    eval_dir = out / "evaluation"

    def stage(i: int, name: str, fn: Callable[[], tuple[list[Path], dict[str, Any]]]) -> None:
        if state.done(name):
            log(f"[{i}/{len(STAGES)}] {name}: done already, skipped")
            skipped.append(name)
            return
        log(f"[{i}/{len(STAGES)}] {name} ...")
        t0 = time.perf_counter()
        c0 = _cpu_seconds()
        try:
            outputs, extra = fn()
        except MammolensError as e:
            raise DemoError(f"demo stage {name!r} failed: {e}") from e
        dt = time.perf_counter() - t0
        times[name] = dt
        # CPU seconds (this process + finished workers): comparable on a shared machine, wall time is not
        state.mark(name, dt, outputs, cpu_seconds=round(_cpu_seconds() - c0, 2), **extra)
        log(f"[{i}/{len(STAGES)}] {name}: {dt:.1f} s")

    # 1. synthesise --------------------------------------------------------------------
    def do_synth() -> tuple[list[Path], dict[str, Any]]:
        from mammolens.data.synthetic import synthesize_cohort

        with callback_bar("synthesise", progress) as cb:
            synthesize_cohort(synth_dir, n_patients=patients, seed=seed, workers=workers, progress=cb,
                              conspicuity=conspicuity, prevalence=prevalence)
        return [synth_dir / "annotations.csv"], {}

    stage(1, "synth", do_synth)

    # 2. ingest --------------------------------------------------------------------------
    def do_ingest() -> tuple[list[Path], dict[str, Any]]:
        from mammolens.data.ingest import ingest

        res = ingest("dicom", synth_dir / "dicom", man_ingest, annotations=synth_dir / "annotations.csv")
        if res.manifest.empty:
            raise DemoError(f"ingest found no image in {synth_dir / 'dicom'}")
        return [res.manifest_path, res.qc_path], {"images": int(len(res.manifest)), "rejected": len(res.qc.rejected)}

    stage(2, "ingest", do_ingest)

    # 3. preprocess ----------------------------------------------------------------------
    def do_preprocess() -> tuple[list[Path], dict[str, Any]]:
        from mammolens.data.preprocess import PreprocessSettings, preprocess_manifest

        res = preprocess_manifest(read_manifest(man_ingest), cache_dir, PreprocessSettings(size=tuple(size)),
                                  workers=workers, progress=progress)
        return [res.qc_path], {"processed": res.processed, "rejected": res.rejected}

    stage(3, "preprocess", do_preprocess)

    # 4. split ---------------------------------------------------------------------------
    def do_split() -> tuple[list[Path], dict[str, Any]]:
        from mammolens.data.cache import open_cache
        from mammolens.data.split import split_manifest

        df = read_manifest(man_ingest, resolve_paths=False)
        cache = open_cache(cache_dir)
        ok = set(cache.image_ids)
        df = df[df["image_id"].isin(ok)]  # images rejected by preprocessing are left out
        df = split_manifest(df, val=split_fractions[0], test=split_fractions[1], seed=seed)
        df["dataset"] = "synthetic"  # the model card flags results on synthetic phantoms
        write_manifest(df, man_split)
        counts = {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")}
        return [man_split], {"images": counts}

    stage(4, "split", do_split)

    # 5. patch pretraining ------------------------------------------------------------------
    def do_pretrain() -> tuple[list[Path], dict[str, Any]]:
        if not patch_pretrain:
            marker = out / "runs" / "no_patch_pretrain.txt"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("patch pretraining disabled; models start from random weights\n")
            return [marker], {"skipped": True}
        from mammolens.config import load_config
        from mammolens.train.patch_stage import pretrain_patches_from_cache

        cfg = load_config(config)
        res = pretrain_patches_from_cache(
            man_split, cache_dir, patch_weights, arch=cfg.model.arch, tiny_width=cfg.model.tiny_width,
            splits=("train",), patch_size=48, per_lesion=12, background_per_image=8, classes=3,
            epochs=patch_epochs, seed=seed, device="cpu",
            progress=lambda r: log(f"    patch epoch {int(r['epoch'])}: loss {r['loss']:.3f} accuracy {r['accuracy']:.3f}"),
        )
        return [patch_weights], {"n_patches": res.n_patches, "history": res.history}

    stage(5, "pretrain", do_pretrain)
    if patch_pretrain:
        ov["model.pretrained"] = str(patch_weights)

    # 6-7. train -------------------------------------------------------------------------
    # The two trainings are independent (one torch thread each, seeded): on a machine with
    # two or more cores the baseline trains in a second process beside the attention
    # model, which takes the wall time of the longer of the two instead of their sum.
    todo = [k for k in ("attention", "baseline") if not state.done(f"train_{k}")]
    side = None
    if parallel_train and len(todo) == 2 and (os.cpu_count() or 1) >= 2:
        log(f"[7/{len(STAGES)}] train_baseline: in a second process, beside the attention model")
        side = _TrainProcess(kind="baseline", params=params, overrides=ov, manifest=man_split, cache=cache_dir,
                             run=runs["baseline"], config=config)
    try:
        stage(6, "train_attention", lambda: _train_model("attention", params, ov, man_split, cache_dir, runs["attention"],
                                                         config=config, progress=progress))
        if side is not None:
            stage(7, "train_baseline", side.wait)
        else:
            stage(7, "train_baseline", lambda: _train_model("baseline", params, ov, man_split, cache_dir, runs["baseline"],
                                                            config=config, progress=progress))
    finally:
        if side is not None:
            side.stop()

    # 8. predict -------------------------------------------------------------------------
    def do_predict() -> tuple[list[Path], dict[str, Any]]:
        import torch

        from mammolens.predict import predict

        # validation (to choose the operating point) and test images only
        df = read_manifest(man_split, resolve_paths=False)
        write_manifest(df[df["split"].isin(["val", "test"])], man_eval)
        outs = []
        # one torch thread, as in training: the scores (hence the figures) do not depend on
        # how many cores the machine has (a sum split over threads rounds differently)
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for kind, run in runs.items():
                preds[kind].parent.mkdir(parents=True, exist_ok=True)
                predict(run, man_eval, preds[kind], heatmaps_dir=out / "heatmaps" / kind, cache=cache_dir,
                        device="cpu", progress=progress)
                outs.append(preds[kind])
        finally:
            torch.set_num_threads(n_threads)
        return outs, {}

    stage(8, "predict", do_predict)

    # 9. reader study --------------------------------------------------------------------
    def do_readers() -> tuple[list[Path], dict[str, Any]]:
        from mammolens.evaluate.reader_sim import simulate_reader_study

        cases = _reader_cases(preds["attention"], man_split, split="test")
        reads = simulate_reader_study(cases, n_readers=n_readers, seed=seed)
        reads.to_csv(reads_csv, index=False)
        return [reads_csv], {"cases": int(len(cases)), "readers": n_readers}

    stage(9, "readers", do_readers)

    # 10. evaluate ------------------------------------------------------------------------
    def do_evaluate() -> tuple[list[Path], dict[str, Any]]:
        from mammolens.evaluate import evaluate

        qc = [p for p in (out / "manifest_qc.csv", cache_dir / "qc.csv") if p.exists()]
        res = evaluate(preds["attention"], man_split, eval_dir, compare=preds["baseline"], reads=reads_csv,
                       split="test", qc=qc, run=runs["attention"], seed=seed)
        return [res.results_path, res.report_path], {}

    stage(10, "evaluate", do_evaluate)

    results = json.loads((eval_dir / "results.json").read_text())
    head = headline_from_results(results)
    head["report"] = str(eval_dir / "report.html")
    total = time.perf_counter() - t_all
    state.data["headline"] = head
    state.data["last_run_seconds"] = round(total, 1)
    state.save()
    return DemoResult(out=out, report=eval_dir / "report.html", results=eval_dir / "results.json", headline=head,
                      seconds=total, stage_seconds=times, skipped=skipped)


def headline_from_results(results: dict[str, Any]) -> dict[str, Any]:
    """AUCs (image/breast/exam), baseline AUC, sensitivity/specificity, reader AUCs from results.json."""
    perf = results.get("performance", {})
    head: dict[str, Any] = {"level": results.get("primary_level", "image")}
    for lv, p in perf.items():
        head[f"auc_{lv}"] = p.get("auc")
    p = perf.get(head["level"], {})
    for k in ("sensitivity", "specificity", "accuracy"):
        head[k] = p.get("metrics", {}).get(k)
    head["threshold"] = (p.get("operating_point") or {}).get("threshold")
    head["threshold_chosen_on"] = (p.get("operating_point") or {}).get("chosen_on")
    comp = results.get("comparison")
    if comp:
        d = comp["levels"].get(head["level"], {}).get("delong", {})
        head["auc_baseline"] = d.get("auc_b")
        head["delong_p_vs_baseline"] = d.get("p_value")
    rs = results.get("reader_study")
    if rs:
        head["reader_auc_unaided"] = rs.get("reader_average", {}).get("unaided")
        head["reader_auc_aided"] = rs.get("reader_average", {}).get("aided")
        head["mrmc_p"] = (rs.get("mrmc_or") or {}).get("p_value")
    loc = (results.get("interpretability") or {}).get("localisation") or {}
    if loc.get("hit_rate"):
        head["heatmap_hit_rate"] = loc["hit_rate"]
    auc = (head.get("auc_image") or {}).get("auc")
    head["target_auc"] = TARGET_AUC
    head["meets_target"] = auc is not None and auc >= TARGET_AUC
    return head
