"""Neural benchmark: orchflow's engine beside libfann, measured in the same run.

libfann is timed by a small C program compiled here (gcc, libfann-dev), so its
figures carry no Python or ctypes overhead.  Both sides run the same network
files and data.

    python bench/neural.py [--datasets ../shared/fann-datasets] [--epochs 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from neural import Activation, Network, TrainingData  # noqa: E402

C_HELPER = r"""
#include <doublefann.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    struct fann *ann = fann_create_from_file(argv[2]);
    if (!ann) return 2;
    if (!strcmp(argv[1], "run")) {            /* run NET ROWS REPEAT: rows of random input */
        int rows = atoi(argv[3]), repeat = atoi(argv[4]), n = fann_get_num_input(ann);
        double *x = malloc(sizeof(double) * rows * n), sink = 0;
        srand(1);
        for (int i = 0; i < rows * n; i++) x[i] = rand() / (double)RAND_MAX * 2 - 1;
        double t = now();
        for (int r = 0; r < repeat; r++)
            for (int i = 0; i < rows; i++) sink += fann_run(ann, x + i * n)[0];
        printf("%.9f %f\n", (now() - t) / ((double)rows * repeat), sink);
    } else if (!strcmp(argv[1], "quality")) { /* quality NET TRAIN TEST EPOCHS: test MSE after training */
        struct fann_train_data *d = fann_read_train_from_file(argv[3]), *t = fann_read_train_from_file(argv[4]);
        int epochs = atoi(argv[5]);
        double t0 = now();
        for (int e = 0; e < epochs; e++) fann_train_epoch(ann, d);
        double secs = now() - t0;
        printf("%.9f %.9f\n", secs, fann_test_data(ann, t));
    } else if (!strcmp(argv[1], "cascade")) { /* cascade NET TRAIN TEST MAX_NEURONS SEED */
        struct fann_train_data *d = fann_read_train_from_file(argv[3]), *t = fann_read_train_from_file(argv[4]);
        srand(atoi(argv[6]));
        double t0 = now();
        fann_cascadetrain_on_data(ann, d, atoi(argv[5]), 0, 0.0f);
        double secs = now() - t0;
        printf("%.9f %.9f\n", secs, fann_test_data(ann, t));
    } else {                                  /* train NET DATA EPOCHS */
        struct fann_train_data *d = fann_read_train_from_file(argv[3]);
        int epochs = atoi(argv[4]);
        float mse = 0;
        double t = now();
        for (int e = 0; e < epochs; e++) mse = fann_train_epoch(ann, d);
        printf("%.9f %.9f\n", (now() - t) / epochs, mse);
    }
    return 0;
}
"""


def build_helper(tmp: str) -> str | None:
    src, exe = os.path.join(tmp, "fannbench.c"), os.path.join(tmp, "fannbench")
    with open(src, "w") as f:
        f.write(C_HELPER)
    try:
        subprocess.run(["gcc", "-O2", "-std=c99", "-D_POSIX_C_SOURCE=199309L", src, "-o", exe, "-ldoublefann",
                        "-lm"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(libfann helper not built: {exc}; install gcc and libfann-dev for the baseline)")
        return None
    return exe


def libfann(exe: str | None, *args: str) -> tuple[float, float] | None:
    if exe is None:
        return None
    out = subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def bench_single(tmp: str, exe: str | None) -> None:
    net = Network.create_standard(2, 3, 3, 1, seed=1)
    path = os.path.join(tmp, "small.net")
    net.save(path)
    xs = np.random.default_rng(1).uniform(-1, 1, (1000, 2))
    rows = list(xs)
    t = time.perf_counter()
    for _ in range(50):
        for x in rows:
            net.run(x)
    ours = (time.perf_counter() - t) / (50 * len(rows))
    ref = libfann(exe, "run", path, "1000", "500")
    base = f"libfann {1 / ref[0]:12,.0f}/s" if ref else "libfann n/a"
    print(f"single-sample run, 2-3-3-1:            ours {1 / ours:12,.0f}/s   {base}")


def bench_batch(tmp: str, exe: str | None, activation: Activation) -> None:
    """Median of 7 timing blocks for us and of 5 helper runs for libfann: a 2-vCPU VM
    has noisy neighbours, and a median compares typical speeds, not lucky ones."""
    net = Network.create_standard(64, 128, 128, 16, seed=1)
    net.set_activation(activation)
    path = os.path.join(tmp, f"big-{activation.name}.net")
    net.save(path)
    X = np.random.default_rng(2).uniform(-1, 1, (1024, 64))
    net.run(X)  # compiles (or loads) the fused kernels
    reps, blocks = 30, []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps):
            net.run(X)
        blocks.append((time.perf_counter() - t) / (reps * 1024))
    ours = float(np.median(blocks))
    refs = [libfann(exe, "run", path, "1024", "5") for _ in range(5)] if exe else []
    ref = float(np.median([r[0] for r in refs])) if refs else None
    ratio = f"  = {ref / ours:5.1f}x libfann" if ref else ""
    base = f"libfann {1 / ref:10,.0f}/s" if ref else "libfann n/a"
    print(f"batched run, 64-128-128-16 {activation.name:18} batch 1024: ours {1 / ours:10,.0f} samples/s"
          f"   {base}{ratio}")

def bench_rprop(tmp: str, exe: str | None, datasets: str, name: str, hidden: int, epochs: int) -> None:
    train = os.path.join(datasets, f"{name}.train")
    if not os.path.exists(train):
        print(f"RPROP on {name}: skipped, {train} not found (pass --datasets)")
        return
    data = TrainingData.load(train)
    net = Network.create_standard(data.num_input, hidden, data.num_output, seed=3)
    path = os.path.join(tmp, f"{name}.net")
    net.save(path)
    net.train_epoch(data)  # warm-up, then start again from the same file
    net = Network.load(path)
    t = time.perf_counter()
    for _ in range(epochs):
        mse = net.train_epoch(data)
    ours = (time.perf_counter() - t) / epochs
    ref = libfann(exe, "train", path, train, str(epochs))
    if ref:
        same = "same MSE" if abs(ref[1] - mse) <= 1e-6 * max(abs(ref[1]), 1e-12) else f"MSE {mse:.6g} vs {ref[1]:.6g}"
        print(f"RPROP epochs/s, {name:8} ({data.num_data} x {data.num_input}-{hidden}-{data.num_output}): "
              f"ours {1 / ours:8.1f}   libfann {1 / ref[0]:8.1f}   = {ref[0] / ours:4.2f}x   ({same} after {epochs})")
    else:
        print(f"RPROP epochs/s, {name}: ours {1 / ours:.1f} (libfann n/a)")


QUALITY_SETS = ["building", "diabetes", "gene", "mushroom", "robot", "soybean", "thyroid"]


def quality_table(title: str, datasets: str, run_ours, libfann_args) -> None:
    """One row per benchmark set: test MSE after training, ours beside libfann's, and the times.

    ``run_ours(name, data) -> (network file it started from, trained Network)``;
    ``libfann_args(name, path, train, test)`` -> the C helper's arguments for the same run.
    """
    print(f"\nquality: {title}, test MSE on the .test file")
    print(f"  {'set':10} {'ours':>12} {'libfann':>12} {'diff':>8} {'ours s':>8} {'libfann s':>10}")
    for name in QUALITY_SETS:
        train, test = (os.path.join(datasets, f"{name}.{ext}") for ext in ("train", "test"))
        if not (os.path.exists(train) and os.path.exists(test)):
            print(f"  {name:10} skipped: data not found under {datasets}")
            continue
        data = TrainingData.load(train)
        t = time.perf_counter()
        path, net = run_ours(name, data)
        ours_s = time.perf_counter() - t
        ours = net.test(TrainingData.load(test))
        ref = libfann_args(name, path, train, test)
        if ref:
            diff = (ours - ref[1]) / ref[1] * 100 if ref[1] else 0.0
            print(f"  {name:10} {ours:12.6g} {ref[1]:12.6g} {diff:7.2f}% {ours_s:8.2f} {ref[0]:10.2f}")
        else:
            print(f"  {name:10} {ours:12.6g} {'n/a':>12}")


def bench_quality(tmp: str, exe: str | None, datasets: str, epochs: int) -> None:
    """RPROP from the same 16-hidden network file on both sides."""
    def ours(name: str, data: TrainingData) -> tuple[str, Network]:
        net = Network.create_standard(data.num_input, 16, data.num_output, seed=5)
        path = os.path.join(tmp, f"q-{name}.net")
        net.save(path)
        for _ in range(epochs):
            net.train_epoch(data)
        return path, net

    quality_table(f"RPROP, {epochs} epochs, hidden layer of 16", datasets, ours,
                  lambda name, path, train, test: libfann(exe, "quality", path, train, test, str(epochs)))


def bench_cascade(tmp: str, exe: str | None, datasets: str, max_neurons: int) -> None:
    """Cascade2 from a 2-layer shortcut net, same rand() seed on both sides."""
    def ours(name: str, data: TrainingData) -> tuple[str, Network]:
        net = Network.create_shortcut(data.num_input, data.num_output, seed=9)
        path = os.path.join(tmp, f"c-{name}.net")
        net.save(path)
        net.seed_rand(17)
        net.cascade_train(data, max_neurons, 0.0)
        return path, net

    quality_table(f"Cascade2, up to {max_neurons} hidden neurons", datasets, ours,
                  lambda name, path, train, test: libfann(exe, "cascade", path, train, test, str(max_neurons), "17"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default=os.path.join(os.path.dirname(ROOT), "shared", "fann-datasets"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--quality-epochs", type=int, default=200)
    ap.add_argument("--cascade-neurons", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchflow-neural-bench-") as tmp:
        exe = build_helper(tmp)
        print(f"neural benchmark ({os.cpu_count()} cores); libfann timed natively by a C helper\n")
        bench_single(tmp, exe)
        bench_batch(tmp, exe, Activation.SIGMOID_STEPWISE)  # FANN's default
        bench_batch(tmp, exe, Activation.SIGMOID_SYMMETRIC)
        bench_rprop(tmp, exe, args.datasets, "mushroom", 32, args.epochs)
        bench_rprop(tmp, exe, args.datasets, "gene", 32, args.epochs)
        bench_quality(tmp, exe, args.datasets, args.quality_epochs)
        bench_cascade(tmp, exe, args.datasets, args.cascade_neurons)


if __name__ == "__main__":
    main()
