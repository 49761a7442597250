"""Run a command and sample its resident memory (and its children's) every 0.5 s with psutil:
prints the command's output with elapsed seconds, then the ten highest samples; the samples go to
--samples FILE (JSON: [seconds, RSS MB, children RSS MB]). Used for the optimize row of
results/data_scale.md that follows the inference-batch change.

Run:  python benchmarks/peak_memory.py --samples s.json -- edgekd optimize ...
"""

import argparse
import json
import subprocess
import threading
import time

import psutil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", default="samples.json")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    samples: list[tuple[float, int, int]] = []
    t0 = time.time()

    def sample() -> None:
        proc = psutil.Process(p.pid)
        while p.poll() is None:
            try:
                kids = sum(c.memory_info().rss for c in proc.children(recursive=True))
                samples.append((round(time.time() - t0, 1), proc.memory_info().rss // 2**20, kids // 2**20))
            except psutil.Error:
                pass
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    assert p.stdout is not None
    for line in p.stdout:
        print(f"[{time.time() - t0:7.1f}] {line}", end="", flush=True)
    p.wait()
    print("TOP", sorted(samples, key=lambda s: -s[1])[:10])
    with open(args.samples, "w") as fh:
        json.dump(samples, fh)


if __name__ == "__main__":
    main()
