import sys

from trainer.errors import cli_main
from trainer.search.cli import main

sys.exit(cli_main(main))
