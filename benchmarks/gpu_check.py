"""Issue 23's GPU check, prepared to run in a few minutes on a machine with a GPU.

    python benchmarks/gpu_check.py --out=runs/gpu_check            # the whole check
    python benchmarks/gpu_check.py --dry-run                       # print + validate only
    python benchmarks/gpu_check.py --data-dir=/path/to/npz --torch # + the PyTorch rows

It runs, one after the other, each in a subprocess with a time limit:

1. the throughput table (``benchmarks/attack_throughput.py``): the CNN at both input
   shapes, IG, DIA, VBIA and CDIA at 128 victims, ``jgi-vmap`` against the one-victim
   loop (``jgi-loop``) and CVB's fused formulation (``jgi-vmap-cvbfused``), with the
   matmul peak measured in the same run and ``--profile`` (time by operation);
   ``--torch`` adds the PyTorch references (CPU PyTorch on a GPU machine compares
   devices, not libraries: off by default);
2. the full CDIA row the issue names: CNN on CIFAR-10, dropout + pruning + CVB, 128
   victims, 20,000 iterations, one seed, privacy only (``python -m experiments.ablation``
   with the paper preset), its wall and compile seconds read back from the row.

Then it prints what the issue asks: the device, per attack and shape the
victim-iterations per second vmapped and looped, their ratio and the fraction of the
matmul peak, and the CDIA row's wall time with its SSIM. ``--dry-run`` prints the
commands and checks their flags (the ablation's own parser and config, the
benchmark's names) without running anything heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("ig", "dia", "vbia", "cdia")
SHAPES = ("28x28x1", "32x32x3")
CDIA_STACK = "dropout,prune,cvb"
DEFAULT_DATA = str(ROOT / "shared" / "data") if (ROOT / "shared" / "data").is_dir() else None


def throughput_command(out: Path, torch: bool, repeats: int, iters: int) -> list[str]:
    impls = ["jgi-vmap", "jgi-loop", "jgi-vmap-cvbfused"]
    if torch:
        impls += ["torch-func-vmap", "torch-func-vmap-compile"]
    return [sys.executable, str(ROOT / "benchmarks" / "attack_throughput.py"), "--models=cnn",
            f"--shapes={','.join(SHAPES)}", f"--attacks={','.join(ATTACKS)}",
            "--victims=128", f"--impls={','.join(impls)}", "--fl-stacks=",
            f"--repeats={repeats}", f"--iters={iters}", "--profile"]


def cdia_command(out: Path, data_dir: str | None, max_iters: int) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.ablation", "--model=cnn", "--dataset=cifar10",
           f"--defenses={CDIA_STACK}", "--attack=cdia", "--preset=paper", "--victims=128",
           f"--max-iters={max_iters}", "--seeds=1", "--no-utility", "--no-progress",
           f"--out={out / 'cdia_cnn_cifar10'}"]
    if data_dir:
        cmd.append(f"--data-dir={data_dir}")
    return cmd


def check_commands(throughput: list[str], cdia: list[str]) -> None:
    """Validates both commands' flags without running them (raises SystemExit/ValueError)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import attack_throughput  # pylint: disable=g-import-not-at-top

    from experiments import ablation  # pylint: disable=g-import-not-at-top

    flags = dict(a[2:].split("=", 1) for a in throughput[2:] if "=" in a)
    for impl in flags["impls"].split(","):
        if impl not in attack_throughput.IMPLS:
            raise ValueError(f"unknown benchmark impl {impl!r}")
    for attack in flags["attacks"].split(","):
        if attack not in attack_throughput.ATTACK_STACKS:
            raise ValueError(f"unknown benchmark attack {attack!r}")
    for shape in flags["shapes"].split(","):
        if shape not in attack_throughput.SHAPES:
            raise ValueError(f"unknown benchmark shape {shape!r}")
    args = ablation.parse_args(cdia[3:])
    config = ablation.build_config(args)
    if config.victims != 128 or config.ig.max_iters != int(args.max_iters):
        raise ValueError(f"the CDIA row would run {config.victims} victims x "
                         f"{config.ig.max_iters} iterations")


def run(cmd: list[str], log: Path, timeout: float) -> tuple[int, float]:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - t


def summarize_throughput(log: Path) -> list[str]:
    """The issue's columns from the benchmark's JSON lines."""
    records = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    lines = []
    by_key = {(r["input_shape"], r["attack"], r["impl"]): r for r in records
              if r.get("victims") == 128}
    if records:
        r0 = records[0]
        lines.append(f"device {r0['device']} x{r0['num_devices']}, matmul peak "
                     f"{r0['peak_flops'] / 1e9:.0f} GFLOP/s measured in the run")
    lines.append("| input | attack | jgi-vmap | jgi-loop | vmap / loop | cvb fused | "
                 "% of matmul peak |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        for attack in ATTACKS:
            v = by_key.get((shape, attack, "jgi-vmap"))
            if v is None:
                continue
            loop = by_key.get((shape, attack, "jgi-loop"))
            fused = by_key.get((shape, attack, "jgi-vmap-cvbfused"))
            ratio = f"{v['victim_iters_per_s'] / loop['victim_iters_per_s']:.2f}x" if loop \
                else "-"
            pf = "-" if v["peak_fraction"] is None else f"{100 * v['peak_fraction']:.1f}%"
            lines.append(f"| {shape} | {attack} | {v['victim_iters_per_s']:,.0f} | "
                         f"{loop['victim_iters_per_s']:,.0f} | {ratio} | "
                         f"{fused['victim_iters_per_s'] if fused else '-'} | {pf} |"
                         if loop else f"| {shape} | {attack} | {v['victim_iters_per_s']:,.0f}"
                         f" | - | - | - | {pf} |")
    return lines


def summarize_cdia(out: Path) -> list[str]:
    rows = []
    for path in sorted((out / "cdia_cnn_cifar10").rglob("results.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    attack_rows = [r for r in rows if r.get("wall_seconds") is not None]
    if not attack_rows:
        return ["CDIA row: no result row found"]
    r = attack_rows[-1]
    return [f"CDIA CNN/CIFAR-10 {CDIA_STACK}, 128 victims x 20,000 its: wall "
            f"{r['wall_seconds']:.0f} s (compile {r.get('compile_seconds', float('nan')):.0f} s),"
            f" SSIM {r.get('ssim_mean', float('nan')):.3f}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check")
    parser.add_argument("--data-dir", default=os.environ.get("JGI_DATA_DIR", DEFAULT_DATA),
                        help="folder with cifar10.npz (default $JGI_DATA_DIR, else "
                             "shared/data when the checkout has it; a GPU machine without "
                             "internet needs one)")
    parser.add_argument("--torch", action="store_true", help="add the PyTorch rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=100,
                        help="attack steps per timed call (100: a GPU step is short)")
    parser.add_argument("--max-iters", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed to each of the two runs")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-cdia", action="store_true")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands and check their flags; run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    throughput = throughput_command(out, args.torch, args.repeats, args.iters)
    cdia = cdia_command(out, args.data_dir, args.max_iters)
    check_commands(throughput, cdia)
    if args.dry_run:
        for cmd in (throughput, cdia):
            print("$ " + " ".join(shlex.quote(c) for c in cmd))
        print("dry run: flags checked, nothing run")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    report = []
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        gpus = "nvidia-smi not found"
    report.append(f"GPUs: {gpus or 'none listed'}")
    if not args.skip_throughput:
        rc, seconds = run(throughput, out / "throughput.log", args.timeout)
        report.append(f"throughput table: rc {rc}, {seconds:.0f} s "
                      f"(log {out / 'throughput.log'})")
        report += summarize_throughput(out / "throughput.log")
    if not args.skip_cdia:
        rc, seconds = run(cdia, out / "cdia.log", args.timeout)
        report.append(f"CDIA row: rc {rc}, {seconds:.0f} s (log {out / 'cdia.log'})")
        report += summarize_cdia(out)
    print("\n".join(report))
    (out / "report.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
