"""python -m var_core {sample,train,train-many,convert,demo} ...  (python -m var_core <command> -h for the flags)."""
import sys

from var_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
