"""`python -m ablate` is the `ablate` command (for machines where the script is not installed)."""

from ablate.cli import main

if __name__ == "__main__":
    main()
