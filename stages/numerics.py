"""The numerical environment that gives the same bits on every x86-64 CPU with AVX2.

Floating-point results depend on the machine through the kernels libraries choose at run time,
not through the code: TensorFlow turns oneDNN on only for some CPUs, oneDNN and NumPy pick kernels
by instruction set (SSE4, AVX2, AVX-512), OpenBLAS by CPU model, and a reduction's order follows
the number of threads. :data:`PORTABLE` fixes each of those choices to one every current x86-64 server
supports, in environment variables the libraries read when they load; importing the ``stages``
package applies it, before NumPy or TensorFlow load. (Batch normalisation avoids the processor's
approximate reciprocal square root, the one instruction whose result differs between Intel and
AMD: ``stages.layers.BatchNorm``.) ``benchmarks/cross_cpu.py`` measures the effect and the cost.

``MGMT_NUMERICS=native`` leaves the environment alone: the fastest kernels for this CPU, with
results that differ in the last bits from other machines (and from the committed ``dvc.lock``).
"""

from __future__ import annotations

import os

SWITCH = "MGMT_NUMERICS"
THREADS = 2  # TensorFlow's thread pools: a reduction's order depends on their size, not on the cores
PORTABLE = {
    "TF_ENABLE_ONEDNN_OPTS": "1",  # TensorFlow's default depends on the CPU (on with AVX-512, off without)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's kernels: AVX2 + FMA (Intel since 2013, AMD since 2015)
    "TF_NUM_INTRAOP_THREADS": str(THREADS),
    "TF_NUM_INTEROP_THREADS": str(THREADS),
    # NumPy's own loops at its baseline (x86-64-v2): its AVX2 and AVX-512 loops of exp, log, power and
    # tanh round differently from it and from each other
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy's and SciPy's OpenBLAS: the AVX2 kernels
    "OPENBLAS_NUM_THREADS": "1",  # a threaded dot product splits its sum by the thread count
}


def portable() -> bool:
    """Whether this process pins the numerical environment (anything but ``MGMT_NUMERICS=native``)."""
    return os.environ.get(SWITCH, "portable") != "native"


def pin_environment(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Set :data:`PORTABLE` in ``environ`` (overriding other values) unless ``MGMT_NUMERICS=native``."""
    if environ.get(SWITCH, "portable") != "native":
        environ.update(PORTABLE)
