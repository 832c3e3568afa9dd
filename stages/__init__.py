"""mgmt-pipeline: DVC stages predicting MGMT promoter methylation from brain MRI."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) drowns the stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
