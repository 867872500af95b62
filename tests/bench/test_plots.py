#!/usr/bin/python3
"""The benchmark plot scripts draw from the results committed in bench/results/ (Debian's
python3-matplotlib, so run with /usr/bin/python3): each writes a non-empty PNG."""
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def main():
    failures = []
    with tempfile.TemporaryDirectory(prefix="mambaserve-plots-") as tmp:
        out = pathlib.Path(tmp) / "flat.png"
        flat = sorted(str(p) for p in RESULTS.glob("flat_over_length_*.json"))
        subprocess.run([sys.executable, str(ROOT / "bench" / "plot_flat_over_length.py"), *flat, "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        if not flat or out.stat().st_size < 10000:
            failures.append(f"flat-over-length plot of {flat}")
    for f in failures:
        print("FAIL:", f)
    print("plots:", "ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
