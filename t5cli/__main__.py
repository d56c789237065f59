"""`python -m t5cli` runs the `t5` command."""

from t5cli.cli import main

if __name__ == "__main__":
    main()
