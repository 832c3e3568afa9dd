"""mgmt-pipeline: DVC stages predicting MGMT promoter methylation from brain MRI.

Importing the package pins the numerical environment first (``stages/numerics.py``), so every
stage, test and script computes the same bits on any x86-64 CPU.
"""

from stages.numerics import pin_environment

pin_environment()
