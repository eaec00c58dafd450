import os

# Tests run on the CPU in float32; keep XLA from grabbing every core per worker. The suite's
# time is mostly compilation of small programs: LLVM's optimisation level 0 cuts it by about a
# third (measured on test_edited_cells and notebook 02), and XLA's older elemental emitters
# (fusion emitters off) compile another third faster (35 -> 24 CPU s on the edited-step
# test, two interleaved runs each); neither changes the program's semantics. (The hangs
# once blamed on these flags were JAX 0.10's batched LAPACK deadlock, issue 26: they
# changed its odds, not its cause.) tests/test_no_hang.py runs jitted inits under XLA's
# default flags, as users run them. Child processes (notebook kernels, multi-device checks)
# inherit these flags.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0"
    " --xla_cpu_use_fusion_emitters=false",
)

from hypothesis import settings

settings.register_profile("rnnjax", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("rnnjax")
