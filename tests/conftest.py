import os

# Tests run on the CPU in float32; keep XLA from grabbing every core per worker. The suite's
# time is mostly compilation of small programs: LLVM's optimisation level 0 cuts it by about a
# third (measured on test_edited_cells and notebook 02), and XLA's older elemental emitters
# (fusion emitters off) compile another third faster (35 -> 24 CPU s on the edited-step
# test, two interleaved runs each); neither changes the program's semantics, but with them
# XLA:CPU now and then hangs running jit(vmap(init)) of a bidirectional GRU, so
# tests/test_cells.py checks that program under the default flags, as users run it. Child
# processes (notebook kernels, multi-device checks) inherit these flags.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0"
    " --xla_cpu_use_fusion_emitters=false",
)

from hypothesis import settings

settings.register_profile("rnnjax", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("rnnjax")
