"""`python -m cnnzoo ...` (the form torchrun uses: `torchrun --nproc_per_node=N -m cnnzoo train ...`)."""

from .cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
