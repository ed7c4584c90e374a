"""The dinogeo demo from Python: every stage is a function you can call from a notebook.

    python examples/demo_from_python.py [OUT_DIR]
"""

import sys

from dinogeo.demo import run_demo

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "demo_output"
    result = run_demo(out, pretrain_steps=400, fit_steps=150, seed=0)  # a shorter run, same seed
    print(result.summary())
    print("metrics of the head:", {k: round(v, 3) for k, v in result.metrics.items() if "/" not in k})
