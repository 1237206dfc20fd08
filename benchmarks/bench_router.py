"""Router scoring speed and memory on the DiffusionDB prompts (long, messy, real).

Targets on one core: rule mode >= 10,000 prompts/s, learned >= 5,000 prompts/s, under 50 MB
resident for the loaded scorer. Prints, per mode, prompts/s and p50/p99 latency of one
prompt on a cold pass (empty word caches) and on warm passes (the router's steady state), the
ratio against tokenising alone (the floor any scorer pays), and the resident memory of a
fresh process that loads the scorer and scores every prompt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "data" / "hadis" / "prompts" / "diffusiondb_5k.txt"
LEARNED = ROOT / "profiles" / "router" / "learned-sdxl-lightning-2step.json"

# ru_maxrss survives fork and exec (it would report the parent's peak), so read VmHWM/VmRSS.
MEMORY_PROBE = """
import sys, json
def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
import numpy
after_numpy = kib("VmRSS")
from hadis.scoring.model import default_rule_model, load_model
mode, path, prompts_file = sys.argv[1], sys.argv[2], sys.argv[3]
model = default_rule_model() if mode == "rule" else load_model(path)
prompts = open(prompts_file, encoding="utf-8").read().splitlines()
for p in prompts:
    model.score(p)
print(json.dumps({"numpy_kib": after_numpy, "peak_kib": kib("VmHWM"), "rss_kib": kib("VmRSS")}))
"""


def per_prompt_ns(fn, prompts: list[str]) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for p in prompts:
        t = clock()
        fn(p)
        out.append(clock() - t)
    return out


def summary(ns: list[int]) -> tuple[float, float, float]:
    """prompts/s, p50 and p99 in microseconds."""
    s = sorted(ns)
    return 1e9 * len(ns) / sum(ns), s[len(s) // 2] / 1000, s[int(len(s) * 0.99)] / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", default=str(PROMPTS))
    ap.add_argument("--model-file", default=str(LEARNED))
    ap.add_argument("--passes", type=int, default=3, help="warm passes (default: %(default)s)")
    args = ap.parse_args()

    from hadis.scoring.features import normalise, tokenize
    from hadis.scoring.model import default_rule_model, load_model

    prompts = Path(args.prompts).read_text(encoding="utf-8").splitlines()
    chars = statistics.mean(len(p) for p in prompts)
    print(f"{len(prompts)} prompts from {Path(args.prompts).name}, mean {chars:.0f} characters, one core")

    floor = summary(per_prompt_ns(lambda p: tokenize(normalise(p)[0]), prompts))
    print(f"tokenise only (floor): {floor[0]:9,.0f} prompts/s  p50 {floor[1]:6.1f} us  p99 {floor[2]:6.1f} us")

    targets = {"rule": 10_000, "learned": 5_000}
    rule = default_rule_model()
    learned = load_model(args.model_file)
    for mode, model in (("rule", rule), ("learned", learned)):
        cold = summary(per_prompt_ns(model.score, prompts))
        warm_ns: list[int] = []
        for _ in range(args.passes):
            warm_ns += per_prompt_ns(model.score, prompts)
        warm = summary(warm_ns)
        ok = "meets" if warm[0] >= targets[mode] else "MISSES"
        print(
            f"{mode:7s} cold: {cold[0]:9,.0f} prompts/s  p50 {cold[1]:6.1f} us  p99 {cold[2]:6.1f} us\n"
            f"{mode:7s} warm: {warm[0]:9,.0f} prompts/s  p50 {warm[1]:6.1f} us  p99 {warm[2]:6.1f} us  "
            f"({warm[0] / targets[mode]:.2f}x the {targets[mode]:,} target: {ok}; "
            f"{floor[0] / warm[0]:.1f}x the tokenise-only time)"
        )

    for mode in ("rule", "learned"):
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, mode, args.model_file, args.prompts],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(out.stdout)
        peak, numpy_mib = m["peak_kib"] / 1024, m["numpy_kib"] / 1024
        ok = "meets" if peak * 1.048576 < 50 else "MISSES"
        print(
            f"{mode:7s} memory: peak resident {peak:5.1f} MiB for a process that loads the scorer and scores every "
            f"prompt (python + numpy alone: {numpy_mib:.1f} MiB, so the scorer and its caches: "
            f"{peak - numpy_mib:.1f} MiB); 50 MB target: {ok}"
        )


if __name__ == "__main__":
    main()
