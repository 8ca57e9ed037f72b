"""``rsam test --benchmark`` arguments run as a script (Lightning's DDP launcher re-runs this file once per rank)."""

import argparse
import logging
import sys

from rsam.cli._benchmark_args import add_benchmark_arguments, run_from_args

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_from_args(add_benchmark_arguments(argparse.ArgumentParser()).parse_args(sys.argv[1:])))
