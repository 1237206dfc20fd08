"""``hadis route``: train, apply and evaluate router scores (see ``hadis.scoring``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hadis.core.errors import DataError
from hadis.jsonsafe import json_safe

SHIPPED_MODELS = Path(__file__).resolve().parents[3] / "profiles" / "router"
DEFAULT_LIGHT = "sdxl-lightning-2step"


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _default_model_file() -> str | None:
    path = SHIPPED_MODELS / f"learned-{DEFAULT_LIGHT}.json"
    return str(path) if path.exists() else None


def _train_range(text: str) -> range:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END, got {text!r}") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"need 0 <= START < END, got {text!r}")
    return range(a, b)


def cmd_train(args: argparse.Namespace) -> int:
    from hadis.scoring.evaluate import fit_rule_model, train_for_light_model
    from hadis.scoring.model import save_model

    start = time.perf_counter()
    if args.mode == "rule":
        rule = fit_rule_model(Path(args.data_dir))
        size = save_model(rule, args.out)
        _progress(f"wrote {args.out}: {size} bytes, statistics of {rule.provenance['fit_on']}")
        return 0
    _progress(f"training the learned score for {args.light} on prompts {args.train.start}..{args.train.stop - 1}")
    model = train_for_light_model(Path(args.data_dir), args.light, args.train, progress=_progress)
    size = save_model(model, args.out)
    prov = model.provenance
    _progress(
        f"wrote {args.out}: {size / 1024:.0f} KiB, {prov['n_terms']} terms, ridge lambda {prov['ridge_lambda']:g}, "
        f"cross-validated ROC-AUC {max(prov['cv_roc_auc'].values()):.3f} ({time.perf_counter() - start:.1f}s)"
    )
    return 0


def _read_lines(stream) -> list[tuple[str, bool]]:
    """Prompts one per line from bytes; invalid UTF-8 is replaced (U+FFFD) and flagged."""
    out = []
    for raw in stream.read().split(b"\n"):
        raw = raw.removesuffix(b"\r")
        try:
            out.append((raw.decode("utf-8"), False))
        except UnicodeDecodeError:
            out.append((raw.decode("utf-8", errors="replace"), True))
    if out and out[-1] == ("", False):
        out.pop()  # the newline that ends the last line
    return out


def cmd_score(args: argparse.Namespace) -> int:
    from hadis.scoring.features import extract
    from hadis.scoring.model import load_scorer

    path = args.model_file or (_default_model_file() if args.mode == "learned" else None)
    if args.mode == "learned" and path is None:
        print("hadis route score: --mode learned needs --model-file (see 'hadis route train')", file=sys.stderr)
        return 2
    model = load_scorer(args.mode, path)
    out = sys.stdout
    for text, invalid in _read_lines(sys.stdin.buffer):
        feats = extract(text)
        line = {"score": round(model.score(text), 6), "mode": model.mode, "features": feats.as_dict()}
        if feats.truncated:
            line["truncated"] = True
        if invalid:
            line["invalid_utf8"] = True
        out.write(json.dumps(line) + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hadis.scoring.evaluate import LIGHT_MODELS, evaluate, feature_agreement
    from hadis.scoring.model import LearnedModel, load_model

    data_dir = Path(args.data_dir)
    lights = args.light or list(LIGHT_MODELS)
    learned: dict[str, LearnedModel] = {}
    for spec in args.model_file or []:
        light, _, path = spec.partition("=")
        model = load_model(path)
        if not isinstance(model, LearnedModel):
            raise DataError(path, "expected a learned model", field="mode")
        learned[light] = model
    start = time.perf_counter()
    rows = evaluate(data_dir, lights, learned=learned, progress=_progress)
    agreement = feature_agreement(data_dir) if args.features else []
    if args.json:
        doc = {"roc_auc": [r.__dict__ for r in rows], "feature_agreement": agreement}
        print(json.dumps(json_safe(doc), indent=2))
    else:
        print("ROC-AUC on prompts 3000..3999 (target: bottom 30% of the light model's mean P(real))")
        print("| light model | rule-hadis | rule | learned | random |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for light in lights:
            by_mode = {r.mode: r.roc_auc for r in rows if r.light_model == light}
            cells = [f"{by_mode[m]:.3f}" if m in by_mode else "-" for m in ("rule-hadis", "rule", "learned", "random")]
            print(f"| {light} | " + " | ".join(cells) + " |")
        if agreement:
            print("\nLive features against HADIS's precomputed spaCy features (5000 prompts)")
            print("| feature | exact | within 1 | Pearson r | mean (HADIS) | mean (live) |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for a in agreement:
                print(
                    f"| {a['feature']} | {a['exact']:.3f} | {a['within_1']:.3f} | {a['pearson_r']:.3f} | "
                    f"{a['mean_hadis']:.2f} | {a['mean_live']:.2f} |"
                )
    _progress(f"evaluated in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from hadis.sim.routing_compare import compare_routing, markdown

    rows = compare_routing(
        Path(args.data_dir),
        light=args.light,
        heavy=args.heavy,
        shares=args.share,
        model_file=args.model_file,
        progress=_progress,
    )
    if args.json:
        print(json.dumps(json_safe([r.__dict__ for r in rows]), indent=2))
    else:
        print(markdown(rows))
    return 0


def add_parser(sub: argparse._SubParsersAction, data_dir_default: str) -> None:
    r = sub.add_parser(
        "route",
        help="router scores: train, score prompts, evaluate",
        description="Prompt hardness scores for the router: HADIS's rule score and our learned score.",
    )
    rsub = r.add_subparsers(dest="route_command", required=True, metavar="{train,score,eval,compare}")

    t = rsub.add_parser(
        "train",
        help="train the learned score of one light model (or fit the rule score's statistics)",
        description="learned: ridge regression of the light model's hardness (1 - percentile of its mean "
        "P(real)) on tf-idf word and character n-grams, penalty chosen by 5-fold cross-validation on the "
        "training prompts. rule: the mean and spread of HADIS's 8 live features over every profiling prompt.",
    )
    t.add_argument("--mode", choices=["learned", "rule"], default="learned")
    t.add_argument("--data-dir", default=data_dir_default, help="HADIS data folder (default: %(default)s)")
    t.add_argument("--light", default=DEFAULT_LIGHT, help="light model (default: %(default)s)")
    t.add_argument(
        "--train",
        type=_train_range,
        default=range(0, 3000),
        metavar="START:END",
        help="prompt indices (default 0:3000)",
    )
    t.add_argument("--out", required=True, help="model file to write (JSON, hadis.router-model/v1)")
    t.set_defaults(func=cmd_train)

    s = rsub.add_parser(
        "score",
        help="score prompts read one per line on stdin; one JSON line per prompt on stdout",
        description="Reads prompts one per line (UTF-8; invalid bytes are replaced and flagged) and writes "
        "one JSON object per line: score (higher = harder), mode and HADIS's 8 features.",
    )
    s.add_argument("--mode", choices=["rule", "learned"], default="rule")
    s.add_argument(
        "--model-file",
        help="router model JSON (rule: default the shipped HADIS statistics; "
        f"learned: default profiles/router/learned-{DEFAULT_LIGHT}.json)",
    )
    s.set_defaults(func=cmd_score)

    e = rsub.add_parser("eval", help="ROC-AUC per light model and mode on prompts 3000..3999")
    e.add_argument("--data-dir", default=data_dir_default, help="HADIS data folder (default: %(default)s)")
    e.add_argument("--light", action="append", help="light model (repeatable; default: all three)")
    e.add_argument(
        "--model-file", action="append", metavar="LIGHT=FILE", help="use this learned model instead of training one"
    )
    e.add_argument("--features", action="store_true", help="also report live-feature agreement with HADIS's")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    c = rsub.add_parser(
        "compare", help="simulate learned, rule and random routing at the same router shares (served P(real))"
    )
    c.add_argument("--data-dir", default=data_dir_default, help="HADIS data folder (default: %(default)s)")
    c.add_argument("--light", default=DEFAULT_LIGHT)
    c.add_argument("--heavy", default="sd3.5-large")
    c.add_argument("--share", type=float, action="append", help="router share (repeatable; default 0.1 0.2 0.3 0.5)")
    c.add_argument("--model-file", help="learned model (default: trained here on prompts 0..2999)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)
