import os

# Tests run on the CPU in float32; keep XLA from grabbing every core per worker.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

from hypothesis import settings  # noqa: E402

settings.register_profile("rnnjax", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("rnnjax")

