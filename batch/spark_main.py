"""Entry file for ``spark-submit``, which needs a file where ``python -m batch.score`` names a module.

    spark-submit --py-files build/batch/cctv_batch.zip --archives build/batch/env.tar.gz#env \\
        batch/spark_main.py --bucket my-bucket ...

The flags are those of ``python -m batch.score``; ``--master`` is spark-submit's own.
"""

import sys

from batch.score import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], submitted=True))
