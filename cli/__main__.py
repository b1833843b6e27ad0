import sys

from prefect_hpcviz.cli.main import main

sys.exit(main())
