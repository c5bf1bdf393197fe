"""`make bench` (docs/BENCHMARKS.md): the runner (runner.py), the
per-primitive scripts and the memory step (scripts.py, running the plain
scripts in host_tools/benchmarks/), and the system-level sections, one module
each (sections.py lists them; `python -m host_tools.bench.sections NAME` runs
one alone).

    python -m host_tools.bench [--out build/bench.json] [--only a,b] [--quick]

Nothing is imported here, so that the helper processes the sections start
(`python -m host_tools.bench.relay|sim_child`) load only what they use.
"""


def main(argv=None):
    """The `make bench` command line (console script `atls-bench`)."""
    from host_tools.bench.runner import main as run

    return run(argv)
