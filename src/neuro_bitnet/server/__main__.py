"""`python -m neuro_bitnet.server`: the same as `neuro serve` (used by `neuro serve --detach`)."""

from neuro_bitnet.cli.serve_cmd import daemon_main

if __name__ == "__main__":
    daemon_main()
