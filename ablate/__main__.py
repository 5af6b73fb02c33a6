"""`python -m ablate` is the `ablate` command (for machines where the script is not installed).

``main`` is also the console script's entry point. It imports the CLI only when called:
multiprocessing's *spawn* re-runs the console script in every worker it starts, and the
script's one import then costs a worker nothing (importing ablate.cli there cost
~0.1 s of each worker's start-up, on the way to its first run).
"""


def main() -> None:
    from ablate.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
