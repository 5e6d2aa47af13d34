"""After `make install-test`: says, with the command that repairs it, when the installed torchvision
cannot be imported beside the installed torch.

PyPI's Linux torchvision wheels are CUDA builds; beside a CPU torch (or a torch of another release)
`import torchvision` fails ("operator torchvision::nms does not exist"), and with it `import open_clip`
and transformers' CLIPModel, the test suite's reference implementations. cliplab itself never imports
torchvision, so this warns and does not stop the install.

    python scripts/check_torch_pair.py      # prints nothing when the pair imports
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints" / "cpu.txt"


def pair_error(python: str = sys.executable) -> str | None:
    """None when torchvision is absent or imports beside torch; else the last line of the failure."""
    probe = ("import importlib.util, sys\n"
             "if importlib.util.find_spec('torchvision') is None: sys.exit(0)\n"
             "import torchvision\n")
    run = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if run.returncode == 0:
        return None
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {run.returncode}"


def main() -> int:
    error = pair_error()
    if error is None:
        return 0
    import torch

    cuda = torch.version.cuda is not None
    repair = (f"{sys.executable} -m pip install --force-reinstall --no-deps -c {CONSTRAINTS} "
              f"--index-url {CPU_INDEX} torchvision" if not cuda else
              f"{sys.executable} -m pip install --force-reinstall --no-deps torchvision  # the release built for "
              f"torch {torch.__version__}")
    print(f"WARNING: torchvision cannot be imported beside torch {torch.__version__} ({error}), so neither can "
          f"open_clip nor transformers' CLIPModel, which the tests compare against. Install the matching build:\n"
          f"  {repair}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
