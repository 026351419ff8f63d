"""Write a tiny random-weight Hugging Face llama folder to try
`make prune` end to end in a minute: the 6-block model of the committed fixture
(tools/export/make_fixture.py: hidden 64, byte-level BPE tokenizer), saved as a transformers
folder instead of being exported.

Usage (the exporter's environment):
  build/venv-export/bin/python tools/prune/tiny_hf.py --out build/tiny-llama-hf
  make prune MODEL=build/tiny-llama-hf K=2
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
import make_fixture  # noqa: E402
from outputs import refuse_unwritable, replace_folder  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        sys.exit(f"tiny_hf: error: {args.out} exists; pass --force to replace it")
    # A file where the folder goes (with --force, rmtree failed on it once the model was built).
    refuse_unwritable("tiny_hf", args.out, folder=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.tmp-", dir=args.out.parent))
    try:
        staging.chmod(0o755)
        make_fixture.build_hf_folder(staging, args.seed)
        # The tools' one folder replace: a kill between removing the old folder and renaming
        # the new one in leaves the old one whole beside it, not no folder.
        replace_folder(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
