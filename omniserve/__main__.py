import sys

from omniserve.checkout_path import without_checkout_root

sys.path[:] = without_checkout_root(sys.path)  # before anything imports transformers

from omniserve.cli import main  # noqa: E402

sys.exit(main())
