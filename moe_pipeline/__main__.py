"""`python -m moe_pipeline`: the same command line as `moe-pipeline`."""
from moe_pipeline.cli.app import main

main()
