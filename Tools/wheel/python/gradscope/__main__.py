"""`python -m gradscope ARGS`: the same as the `gradscope` command."""

from ._cli import main

main()
