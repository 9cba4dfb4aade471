"""python -m var_core {sample,train,train-many,convert,demo} ...  (python -m var_core <command> -h for the flags)."""
import sys

try:
    import torch  # noqa: F401  (checked first: without it nothing below can import)
except ModuleNotFoundError:
    sys.exit("var_core needs PyTorch: pip install -r requirements-cpu.txt (a clone, CPU), or the torch build for your "
             "GPU from https://pytorch.org and then pip install -r requirements.txt")

from var_core.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
