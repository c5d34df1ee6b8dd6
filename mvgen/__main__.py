"""`python -m mvgen` runs the CLI."""

from mvgen.cli import main

main()
