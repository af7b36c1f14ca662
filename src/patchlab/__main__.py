"""`python -m patchlab` runs the command line (same as the `patchlab` script)."""
from .cli import main

if __name__ == "__main__":
    main()
